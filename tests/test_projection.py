"""dustpred.cutouts.projection against healpy: gnomview values, projector directions,
get_interp_val.

Reference: healpy itself (gnomview, GnomonicProj, Rotator, get_interp_val) on random maps at
small Nside. Nearest-pixel cutouts must equal gnomview exactly; directions and rotation
matrices bit for bit; bilinear to float32 rounding.
"""

import matplotlib

matplotlib.use("Agg")

import healpy as hp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dustpred.cutouts.projection import (  # noqa: E402
    cutout_pixels,
    cutout_vectors,
    gnomonic_cutouts,
    half_diagonal_deg,
    plane_vectors,
    rotation_matrices,
)
from dustpred.errors import InputError  # noqa: E402

NSIDE = 32
# healpy's gnomview uses colormap calls that matplotlib schedules for deprecation.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def random_stack(nside, nchan, seed=0):
    return np.random.default_rng(seed).standard_normal((12 * nside**2, nchan)).astype(np.float32)


def gnomview(m, lon, lat, psi, npix, reso):
    img = hp.gnomview(
        m, rot=(lon, lat, psi), xsize=npix, reso=reso, return_projected_map=True, no_plot=True
    )
    return np.asarray(img.data)


# Centres: random, the poles and near them, and both sides of l = 0/360.
SPECIAL = [
    (10.0, 90.0, 0.0),
    (200.0, -90.0, 45.0),
    (33.0, 89.9, 300.0),
    (0.0, -89.5, 10.0),
    (0.0, 30.0, 0.0),
    (360.0, 30.0, 0.0),
    (359.999, -20.0, 90.0),
    (0.001, 5.0, 180.0),
    (-0.5, 45.0, 270.0),
    (180.0, 0.0, 359.9),
]


def centres(n_random, seed=1):
    rng = np.random.default_rng(seed)
    lon = list(rng.uniform(0, 360, n_random))
    lat = list(np.degrees(np.arcsin(rng.uniform(-1, 1, n_random))))
    psi = list(rng.uniform(0, 360, n_random))
    for a, b, c in SPECIAL:
        lon.append(a)
        lat.append(b)
        psi.append(c)
    return np.array(lon), np.array(lat), np.array(psi)


def test_nearest_single_map_equals_gnomview():
    m = random_stack(NSIDE, 1)[:, 0]
    lon, lat, psi = centres(14)
    out = gnomonic_cutouts(m, lon, lat, psi, npix=24, reso_arcmin=90.0)
    assert out.shape == (lon.size, 24, 24) and out.dtype == np.float32
    for k in range(lon.size):
        np.testing.assert_array_equal(out[k], gnomview(m, lon[k], lat[k], psi[k], 24, 90.0))


def test_nearest_stack_equals_gnomview_per_channel():
    stack = random_stack(16, 3, seed=2)
    lon, lat, psi = centres(4, seed=3)
    out = gnomonic_cutouts(stack, lon, lat, psi, npix=16, reso_arcmin=200.0)
    assert out.shape == (lon.size, 3, 16, 16)
    for k in range(lon.size):
        for c in range(3):
            ref = gnomview(stack[:, c].copy(), lon[k], lat[k], psi[k], 16, 200.0)
            np.testing.assert_array_equal(out[k, c], ref)


def test_paper_geometry_equals_gnomview():
    # 64 x 64 pixels of 23.4' (side 24.96 deg) on an Nside-128 map.
    m = random_stack(128, 1, seed=4)[:, 0]
    lon, lat, psi = centres(2, seed=5)
    out = gnomonic_cutouts(m, lon[:4], lat[:4], psi[:4])
    for k in range(4):
        np.testing.assert_array_equal(out[k], gnomview(m, lon[k], lat[k], psi[k], 64, 23.4))


def test_odd_size_equals_gnomview():
    # Odd npix puts a pixel exactly on the centre direction.
    m = random_stack(NSIDE, 1, seed=6)[:, 0]
    lon, lat, psi = np.array([15.0, 250.0]), np.array([40.0, -70.0]), np.array([0.0, 33.0])
    out = gnomonic_cutouts(m, lon, lat, psi, npix=15, reso_arcmin=75.0)
    for k in range(2):
        np.testing.assert_array_equal(out[k], gnomview(m, lon[k], lat[k], psi[k], 15, 75.0))


def test_rotation_matrices_bit_identical_to_healpy_rotator():
    lon, lat, psi = centres(300, seed=7)
    ref = np.array(
        [hp.Rotator(rot=r, eulertype="ZYX").mat for r in zip(lon, lat, psi, strict=True)]
    )
    np.testing.assert_array_equal(rotation_matrices(lon, lat, psi), ref)


def test_plane_vectors_bit_identical_to_projector():
    proj = hp.projector.GnomonicProj(xsize=20, reso=50.0)
    ref = np.asarray(proj.xy2vec(*proj.ij2xy(), direct=True)).reshape(3, -1)
    np.testing.assert_array_equal(plane_vectors(20, 50.0), ref)


def test_cutout_vectors_bit_identical_to_projector():
    lon, lat, psi = centres(20, seed=8)
    got = cutout_vectors(lon, lat, psi, npix=20, reso_arcmin=50.0)
    for k in range(lon.size):
        proj = hp.projector.GnomonicProj(rot=(lon[k], lat[k], psi[k]), xsize=20, reso=50.0)
        ref = np.asarray(proj.xy2vec(*proj.ij2xy())).reshape(3, -1)
        np.testing.assert_array_equal(got[k], ref)


@settings(max_examples=60, deadline=None)
@given(
    lon=st.one_of(st.floats(0, 360), st.floats(-1e-3, 1e-3), st.floats(359.999, 360.001)),
    lat=st.one_of(st.floats(-90, 90), st.floats(89.0, 90.0), st.floats(-90.0, -89.0)),
    psi=st.floats(-360, 360),
)
def test_pixels_equal_healpy_projector(lon, lat, psi):
    pix = cutout_pixels(64, [lon], [lat], [psi], npix=12, reso_arcmin=60.0)[0]
    proj = hp.projector.GnomonicProj(rot=(lon, lat, psi), xsize=12, reso=60.0)
    ref = proj.projmap(np.arange(12 * 64**2, dtype=float), lambda x, y, z: hp.vec2pix(64, x, y, z))
    np.testing.assert_array_equal(pix, ref.astype(np.int64))


def test_bilinear_equals_get_interp_val_to_float32_rounding():
    stack = random_stack(NSIDE, 2, seed=9)
    lon, lat, psi = centres(6, seed=10)
    out = gnomonic_cutouts(
        stack, lon, lat, psi, npix=16, reso_arcmin=100.0, interpolation="bilinear"
    )
    for k in range(lon.size):
        proj = hp.projector.GnomonicProj(rot=(lon[k], lat[k], psi[k]), xsize=16, reso=100.0)
        vec = np.asarray(proj.xy2vec(*proj.ij2xy())).reshape(3, -1)
        theta, phi = hp.vec2ang(vec.T)
        for c in range(2):
            ref = hp.get_interp_val(stack[:, c], theta, phi).reshape(16, 16)
            # float64 interpolation rounded once to float32: within one float32 ulp.
            np.testing.assert_allclose(out[k, c], ref, rtol=1.2e-7, atol=1e-7)


def test_threads_and_chunks_do_not_change_values():
    stack = random_stack(NSIDE, 4, seed=11)
    lon, lat, psi = centres(30, seed=12)
    a = gnomonic_cutouts(stack, lon, lat, psi, npix=16, reso_arcmin=60.0)
    b = gnomonic_cutouts(stack, lon, lat, psi, npix=16, reso_arcmin=60.0, chunk=7, threads=2)
    np.testing.assert_array_equal(a, b)


def test_memory_mapped_stack(tmp_path):
    stack = random_stack(NSIDE, 3, seed=13)
    np.save(tmp_path / "stack.npy", stack)
    mapped = np.load(tmp_path / "stack.npy", mmap_mode="r")
    lon, lat, psi = centres(3, seed=14)
    np.testing.assert_array_equal(
        gnomonic_cutouts(mapped, lon, lat, psi, npix=8, reso_arcmin=60.0),
        gnomonic_cutouts(stack, lon, lat, psi, npix=8, reso_arcmin=60.0),
    )


def test_float16_output_array():
    stack = random_stack(NSIDE, 2, seed=15)
    lon, lat, psi = centres(2, seed=16)
    out = np.empty((lon.size, 2, 8, 8), dtype=np.float16)
    gnomonic_cutouts(stack, lon, lat, psi, npix=8, reso_arcmin=60.0, out=out)
    ref = gnomonic_cutouts(stack, lon, lat, psi, npix=8, reso_arcmin=60.0)
    np.testing.assert_array_equal(out, ref.astype(np.float16))


def test_half_diagonal_is_the_papers_and_bounds_the_cutout():
    assert half_diagonal_deg(64, 23.4) == pytest.approx(17.65, abs=0.005)
    lon, lat, psi = centres(5, seed=17)
    vec = cutout_vectors(lon, lat, psi)
    centre = hp.ang2vec(lon, lat, lonlat=True)
    angle = np.degrees(np.arccos(np.clip(np.einsum("nip,ni->np", vec, centre), -1, 1)))
    assert angle.max() <= half_diagonal_deg(64, 23.4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stack": np.zeros(100)}, "12 \\* Nside"),
        ({"stack": np.zeros((2, 12 * 4, 3))}, "expected \\(npix,\\)"),
        ({"lat": [95.0]}, "lat"),
        ({"lon": [0.0, 1.0]}, "same length"),
        ({"interpolation": "cubic"}, "interpolation"),
    ],
)
def test_bad_input_raises_input_error(kwargs, match):
    args = {"stack": np.zeros(12 * 4), "lon": [0.0], "lat": [0.0], "psi": [0.0]}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        gnomonic_cutouts(
            args["stack"],
            args["lon"],
            args["lat"],
            args["psi"],
            npix=4,
            interpolation=args.get("interpolation", "nearest"),
        )
