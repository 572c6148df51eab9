"""dustpred.inputs.healpix_maps.read_column_density_map (data.hi_kind: column_density): N_HI maps in
cm^-2 or 1e20 cm^-2, validated like every HEALPix map; a cube where an N_HI map is expected,
and the reverse, are refused with the config key to change."""

import healpy as hp
import numpy as np
import pytest
from map_tables import write_map_column

from dustpred.errors import InputError
from dustpred.inputs import hi_cube
from dustpred.inputs.healpix_maps import read_column_density_map
from dustpred.sky import preprocess

NSIDE = 4
NPIX = 12 * NSIDE**2
NHI = np.linspace(1e20, 5e21, NPIX)  # cm^-2


@pytest.mark.parametrize(
    ("unit", "scale"),
    [("cm^-2", 1.0), ("cm-2", 1.0), ("1e20 cm^-2", 1e-20), ("10^20 cm^-2", 1e-20)],
)
def test_nhi_map_is_read_in_units_of_1e20_per_cm2(tmp_path, unit, scale):
    path = write_map_column(tmp_path / "nhi.fits", NHI * scale, unit=unit)
    np.testing.assert_allclose(read_column_density_map(path, "I"), NHI * 1e-20, rtol=1e-6)


def test_nhi_map_without_unit_needs_hi_unit_if_missing(tmp_path):
    path = write_map_column(tmp_path / "nhi.fits", NHI)
    with pytest.raises(InputError, match="no TUNIT.*data.hi_unit_if_missing"):
        read_column_density_map(path, "I")
    out = read_column_density_map(path, "I", unit_if_missing="cm^-2")
    np.testing.assert_allclose(out, NHI * 1e-20, rtol=1e-6)


def test_nhi_map_with_a_wrong_unit_is_refused(tmp_path):
    path = write_map_column(tmp_path / "nhi.fits", NHI, unit="K km/s")
    with pytest.raises(InputError, match=r"nhi\.fits.*'K km/s'.*cm\^-2 or 1e20 cm\^-2"):
        read_column_density_map(path, "I")


def test_nhi_map_with_an_nside_not_a_power_of_two_is_refused(tmp_path):
    path = write_map_column(tmp_path / "nhi.fits", NHI, unit="cm^-2", cards={"NSIDE": 3})
    with pytest.raises(InputError, match="NSIDE is 3; expected a power of 2"):
        read_column_density_map(path, "I")


def test_nhi_map_with_an_nside_not_matching_its_pixels_is_refused(tmp_path):
    path = write_map_column(tmp_path / "nhi.fits", NHI, unit="cm^-2", cards={"NSIDE": 8})
    with pytest.raises(InputError, match=r"nhi\.fits.*expected"):
        read_column_density_map(path, "I")


def test_cube_where_a_column_density_map_is_configured_is_refused(tmp_path):
    path = tmp_path / "cube.fits"
    velocities = np.array([-1.0, 0.0, 1.0])
    hi_cube.write_hi_cube(path, NSIDE, velocities, [np.ones((NPIX, 3), np.float32)])
    with pytest.raises(InputError, match="3 values per row.*data.hi_kind: cube"):
        read_column_density_map(path, "TB", unit_if_missing="cm^-2")


def test_column_density_map_where_a_cube_is_configured_is_refused(tmp_path):
    path = write_map_column(tmp_path / "nhi.fits", NHI, name="TB", unit="cm^-2")
    with pytest.raises(InputError, match="1 value per row.*data.hi_kind: column_density"):
        hi_cube.open_hi_cube(path)


def test_preprocess_of_an_nhi_map_with_a_dust_threshold_mask(tmp_path):
    nside = 8
    npix = 12 * nside**2
    # a dipole (l = 1) sky: the harmonic round trip of the smoothing reproduces it closely
    x, y, z = hp.pix2vec(nside, np.arange(npix))
    nhi = (4.0 + x + 0.5 * y + 0.3 * z) * 1e20
    nhi_path = write_map_column(tmp_path / "nhi.fits", nhi, unit="cm^-2")
    dust_path = write_map_column(tmp_path / "ebv.fits", nhi * 1.1e-22)
    meta = preprocess.preprocess(
        nhi_path,
        dust_path,
        None,
        tmp_path / "stack.npy",
        tmp_path / "mask.npy",
        tmp_path / "meta.json",
        velocity_kms=(-64.5, 17.0),
        nside=nside,
        ell_cutoff=16,
        butterworth_order=4,
        hi_column="I",
        dust_column="I",
        hi_kind="column_density",
        dust_unit_if_missing="mag",
        mask_from_dust={"keep_fraction": 0.7, "fwhm_deg": 0.0},
    )
    stack = np.load(tmp_path / "stack.npy")
    masked = np.load(tmp_path / "mask.npy").astype(bool)
    assert stack.shape == (npix, 2)  # N_HI (1e20 cm^-2), then dust (mag)
    assert meta["units"] == {"hi": "1e20 cm^-2", "dust": "mag"}
    assert meta["velocities_kms"] == [0.0]
    # FWHM 0: the threshold is the 0.7 quantile of the dust itself, 30 % of pixels above it
    assert masked.mean() == pytest.approx(0.3, abs=1.0 / npix)
    # the brightest are masked, up to the round trip's error (< 1 % of the dust's range)
    spread = np.ptp(nhi)
    assert nhi[masked].min() > nhi[~masked].max() - 0.01 * spread
