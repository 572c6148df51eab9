"""dustpred.sky.preprocess on small hand-made inputs: layout, channel selection, filter, mask."""

import json
from pathlib import Path

import healpy as hp
import numpy as np
import pytest

from dustpred.errors import InputError
from dustpred.fits import table as fits_table
from dustpred.inputs import healpix_maps, hi_cube
from dustpred.inputs.healpix_maps import write_healpix_maps
from dustpred.inputs.hi_cube import open_hi_cube, write_hi_cube
from dustpred.sky import harmonic, preprocess

NSIDE_HI, NSIDE_DUST, NSIDE_MASK, NSIDE_OUT = 16, 32, 8, 16
DV = 1.28821496
VELOCITIES = np.arange(-60, 20) * DV  # -77.3 .. 24.5 km/s: wider than -64.5..17
SETTINGS = dict(
    velocity_kms=(-64.5, 17.0),
    nside=NSIDE_OUT,
    ell_cutoff=20,
    butterworth_order=4,
    map2alm_iters=3,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    npix = 12 * NSIDE_HI**2
    cube = (rng.normal(size=(npix, VELOCITIES.size)) + np.arange(VELOCITIES.size)).astype("f4")
    write_hi_cube(d / "hi.fits", NSIDE_HI, VELOCITIES, [cube])
    dust = rng.normal(size=12 * NSIDE_DUST**2).astype("f4")
    write_healpix_maps(
        d / "dust.fits",
        {"I_ML_FULL": hp.reorder(dust, r2n=True)},
        nested=True,
        units={"I_ML_FULL": "uK_RJ"},
    )
    keep = np.ones(12 * NSIDE_MASK**2, dtype="f4")
    keep[:100] = 0.0  # the northern cap is masked
    write_healpix_maps(
        d / "mask.fits",
        {"LR16": np.zeros_like(keep), "LR72": hp.reorder(keep, r2n=True)},
        nested=True,
    )
    return {"dir": d, "cube": cube, "dust": dust, "keep": keep}


@pytest.fixture(scope="module")
def outputs(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    d = inputs["dir"]
    meta = preprocess.preprocess(
        d / "hi.fits",
        d / "dust.fits",
        d / "mask.fits",
        out / "stack.npy",
        out / "mask.npy",
        out / "meta.json",
        **SETTINGS,
    )
    return {"dir": out, "meta": meta}


def test_stack_layout_is_pixel_major_float32_memmappable(outputs):
    stack = np.load(outputs["dir"] / "stack.npy", mmap_mode="r")
    assert isinstance(stack, np.memmap)
    assert stack.dtype == np.float32 and stack.shape == (12 * NSIDE_OUT**2, 64 + 1)


def test_selected_channels_follow_the_header_axis(outputs, inputs):
    axis = open_hi_cube(inputs["dir"] / "hi.fits").velocities
    expected = axis[(axis >= -64.5) & (axis <= 17.0)]
    meta = outputs["meta"]
    np.testing.assert_allclose(meta["velocities_kms"], expected)
    assert meta["nchan"] == 64 and meta["columns"][-1] == "dust"


def test_hi_columns_are_filtered_channels(outputs, inputs):
    stack = np.load(outputs["dir"] / "stack.npy")
    for j, chan in ((0, 10), (63, 73)):  # channels -50 and +13 (x 1.288 km/s)
        expected = harmonic.lowpass_to_nside(inputs["cube"][:, chan], NSIDE_OUT, 20, 4)
        np.testing.assert_allclose(stack[:, j], expected, rtol=1e-5, atol=1e-4)


def test_dust_column_is_filtered_and_regraded(outputs, inputs):
    stack = np.load(outputs["dir"] / "stack.npy")
    expected = harmonic.lowpass_to_nside(inputs["dust"], NSIDE_OUT, 20, 4)
    np.testing.assert_allclose(stack[:, -1], expected, rtol=1e-5, atol=1e-6)


def test_mask_is_one_where_masked(outputs, inputs):
    masked = np.load(outputs["dir"] / "mask.npy")
    assert masked.dtype == np.uint8 and masked.shape == (12 * NSIDE_OUT**2,)
    expected = (hp.ud_grade(inputs["keep"], NSIDE_OUT) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(masked, expected)
    assert 0 < masked.mean() < 0.2  # the masked cap, not the kept sky


def test_meta_json_describes_the_stack(outputs):
    meta = json.loads((outputs["dir"] / "meta.json").read_text())
    assert meta["nside"] == NSIDE_OUT and meta["order"] == "RING"
    assert meta["units"] == {"hi": "K", "dust": "uK_RJ"}
    assert meta["ell_cutoff"] == 20 and meta["butterworth_order"] == 4
    assert meta["mask"]["field"] == "LR72" and meta["mask"]["convention"] == "1 = masked"
    assert meta["nside_in"] == {"hi": NSIDE_HI, "dust": NSIDE_DUST, "mask": NSIDE_MASK}
    assert meta["lmax"] == {"hi": 3 * NSIDE_HI - 1, "dust": 3 * NSIDE_OUT - 1}
    assert meta["sources"]["hi"].endswith("hi.fits")


def test_no_temporary_files_left(outputs):
    assert sorted(p.name for p in outputs["dir"].iterdir()) == [
        "mask.npy",
        "meta.json",
        "stack.npy",
    ]


def test_oracle_is_filtered_like_the_dust(outputs, inputs, tmp_path):
    preprocess.write_filtered_map(
        tmp_path / "oracle.npy",
        inputs["dir"] / "dust.fits",
        "I_ML_FULL",
        nside=NSIDE_OUT,
        ell_cutoff=20,
        butterworth_order=4,
    )
    oracle = np.load(tmp_path / "oracle.npy")
    assert oracle.dtype == np.float32
    np.testing.assert_array_equal(oracle, np.load(outputs["dir"] / "stack.npy")[:, -1])


def test_bad_mask_values_are_refused_and_nothing_is_written(inputs, tmp_path):
    bad = np.full(12 * NSIDE_MASK**2, 2.0, dtype="f4")
    write_healpix_maps(tmp_path / "mask.fits", {"LR72": bad}, nested=True)
    d = inputs["dir"]
    with pytest.raises(InputError, match=r"mask.fits: field 'LR72' has values in \[2.0, 2.0\]"):
        preprocess.preprocess(
            d / "hi.fits",
            d / "dust.fits",
            tmp_path / "mask.fits",
            tmp_path / "stack.npy",
            tmp_path / "m.npy",
            tmp_path / "meta.json",
            **SETTINGS,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.fits"]


def test_velocity_range_outside_cube_is_refused(inputs, tmp_path):
    d = inputs["dir"]
    with pytest.raises(InputError, match=r"hi.fits: velocity range \[-120.0, 17.0\] km/s"):
        preprocess.preprocess(
            d / "hi.fits",
            d / "dust.fits",
            d / "mask.fits",
            tmp_path / "stack.npy",
            tmp_path / "m.npy",
            tmp_path / "meta.json",
            **{**SETTINGS, "velocity_kms": (-120.0, 17.0)},
        )
    assert list(tmp_path.iterdir()) == []


def test_each_input_table_is_opened_once(inputs, tmp_path, monkeypatch):
    opened = []

    def counting_open(path):
        opened.append(Path(path).name)
        return fits_table.open_bintable(path)

    monkeypatch.setattr(healpix_maps, "open_bintable", counting_open)
    monkeypatch.setattr(hi_cube, "open_bintable", counting_open)
    d = inputs["dir"]
    preprocess.preprocess(
        d / "hi.fits",
        d / "dust.fits",
        d / "mask.fits",
        tmp_path / "stack.npy",
        tmp_path / "mask.npy",
        tmp_path / "meta.json",
        **SETTINGS,
    )
    assert sorted(opened) == ["dust.fits", "hi.fits", "mask.fits"]


def test_stack_does_not_depend_on_how_many_channels_are_filtered_at_once(inputs, outputs, tmp_path):
    # 8 threads: two channels at a time, 4 threads each (THREADS_PER_MAP); the fixture: 1.
    d = inputs["dir"]
    paths = [tmp_path / name for name in ("stack.npy", "mask.npy", "meta.json")]
    preprocess.preprocess(
        d / "hi.fits", d / "dust.fits", d / "mask.fits", *paths, **SETTINGS, nthreads=8
    )
    one = (outputs["dir"] / "stack.npy").read_bytes()
    assert paths[0].read_bytes() == one


def _preprocess_with_dust(inputs, tmp_path, dust):
    write_healpix_maps(
        tmp_path / "dust.fits", {"I_ML_FULL": dust}, nested=False, units={"I_ML_FULL": "uK_RJ"}
    )
    d = inputs["dir"]
    preprocess.preprocess(
        d / "hi.fits",
        tmp_path / "dust.fits",
        d / "mask.fits",
        tmp_path / "stack.npy",
        tmp_path / "m.npy",
        tmp_path / "meta.json",
        **SETTINGS,
    )


@pytest.mark.parametrize("value", [0.0, 3.5])
def test_a_constant_dust_map_is_refused_and_nothing_is_written(inputs, tmp_path, value):
    dust = np.full(12 * NSIDE_DUST**2, value)
    with pytest.raises(InputError, match=r"dust.fits\[I_ML_FULL\]: every pixel is"):
        _preprocess_with_dust(inputs, tmp_path, dust)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dust.fits"]


def test_dust_that_the_filter_takes_beyond_float32_range_is_refused(inputs, tmp_path):
    # Finite in float32 (3.3e38 < 3.4e38), but a step's Gibbs overshoot (~9 %) is not.
    theta, _ = hp.pix2ang(NSIDE_DUST, np.arange(12 * NSIDE_DUST**2))
    dust = np.where(theta < np.pi / 2, 3.3e38, 0.0)
    with pytest.raises(InputError, match=r"non-finite values in dust"):
        _preprocess_with_dust(inputs, tmp_path, dust)
    assert not (tmp_path / "stack.npy").exists()


def test_a_constant_hi_cube_is_refused(inputs, tmp_path):
    cube = np.ones_like(inputs["cube"])
    write_hi_cube(tmp_path / "hi.fits", NSIDE_HI, VELOCITIES, [cube])
    d = inputs["dir"]
    with pytest.raises(
        InputError, match=r"hi.fits \(sum of the selected channels\): every pixel is 64.0"
    ):
        preprocess.preprocess(
            tmp_path / "hi.fits",
            d / "dust.fits",
            d / "mask.fits",
            tmp_path / "stack.npy",
            tmp_path / "m.npy",
            tmp_path / "meta.json",
            **SETTINGS,
        )
