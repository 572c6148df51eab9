"""dustpred.inputs.healpix_maps: tables read like healpy, written byte-stably; one test per bad
input."""

import gzip

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits

from dustpred.errors import InputError
from dustpred.fits import table as fits_table
from dustpred.inputs.healpix_maps import (
    DUST_UNITS,
    healpix_header,
    read_healpix_map,
    write_healpix_maps,
)

NSIDE = 8
NPIX = 12 * NSIDE**2


def write_map_table(path, columns, *, cards=None, nested=False, units=None, npix=NPIX):
    """Write a HEALPix-style table with astropy (headers fully controlled by the test)."""
    cols = [
        fits.Column(name=name, format="E", array=values, unit=(units or {}).get(name))
        for name, values in columns.items()
    ]
    hdu = fits.BinTableHDU.from_columns(cols)
    default = {
        "PIXTYPE": "HEALPIX",
        "ORDERING": "NESTED" if nested else "RING",
        "NSIDE": hp.npix2nside(npix) if cards is None or "NSIDE" not in cards else None,
        "COORDSYS": "G",
    }
    for key, value in {**default, **(cards or {})}.items():
        if value is None:
            hdu.header.pop(key, None)
        else:
            hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def test_map_nested_is_reordered_like_healpy(tmp_path):
    ring = np.random.default_rng(1).normal(size=NPIX).astype(np.float32)
    nest = hp.reorder(ring, r2n=True)
    path = write_map_table(
        tmp_path / "d.fits", {"I_ML_FULL": nest}, nested=True, units={"I_ML_FULL": "uK_RJ"}
    )
    out = read_healpix_map(path, "I_ML_FULL", units=DUST_UNITS)
    np.testing.assert_array_equal(out, ring)
    np.testing.assert_array_equal(out, hp.read_map(path, field=0, nest=False))


def test_map_with_1024_pixels_per_row(tmp_path):
    nside = 16
    ring = np.arange(12 * nside**2, dtype=np.float32)
    fits_table.write_table_stream(
        tmp_path / "m.fits",
        [("TEMPERATURE", "E", 1024, "uK_RJ")],
        ring.size // 1024,
        [{"TEMPERATURE": ring.reshape(-1, 1024)}],
        healpix_header(nside, nested=False),
    )
    out = read_healpix_map(tmp_path / "m.fits", "temperature", units=DUST_UNITS)
    np.testing.assert_array_equal(out, ring)


def test_dust_in_k_rj_is_converted_to_uk(tmp_path):
    values = np.full(NPIX, 2e-6, dtype=np.float32)
    path = write_map_table(tmp_path / "d.fits", {"I": values}, units={"I": "K_RJ"})
    np.testing.assert_allclose(read_healpix_map(path, "I", units=DUST_UNITS), 2.0, rtol=1e-6)


def test_missing_coordsys_accepted_only_when_configured(tmp_path):
    path = write_map_table(
        tmp_path / "m.fits", {"LR72": np.ones(NPIX, "f4")}, cards={"COORDSYS": None}
    )
    with pytest.raises(InputError, match="no COORDSYS"):
        read_healpix_map(path, "LR72")
    np.testing.assert_array_equal(read_healpix_map(path, "LR72", coordsys_if_missing="G"), 1.0)


def test_write_healpix_maps_round_trip_and_same_bytes(tmp_path):
    ring = np.random.default_rng(2).normal(size=NPIX).astype(np.float32)
    for name in ("a.fits", "b.fits"):
        write_healpix_maps(tmp_path / name, {"X": hp.reorder(ring, r2n=True)}, nested=True)
    np.testing.assert_array_equal(read_healpix_map(tmp_path / "a.fits", "X"), ring)
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()


# --- one test per bad input --------------------------------------------------------


def test_error_missing_column(tmp_path):
    path = write_map_table(tmp_path / "d.fits", {"I_STOKES": np.zeros(NPIX, "f4")})
    with pytest.raises(InputError, match=r"no column 'I_ML_FULL'.*found columns \['I_STOKES'\]"):
        read_healpix_map(path, "I_ML_FULL")


def test_error_npix_not_12_nside_squared(tmp_path):
    path = write_map_table(
        tmp_path / "d.fits", {"X": np.zeros(NPIX - 5, "f4")}, cards={"NSIDE": NSIDE}
    )
    with pytest.raises(InputError, match=rf"holds {NPIX - 5} values; expected npix = 12"):
        read_healpix_map(path, "X")


def test_error_nside_not_power_of_two(tmp_path):
    path = write_map_table(tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")}, cards={"NSIDE": 6})
    with pytest.raises(InputError, match="NSIDE is 6; expected a power of 2"):
        read_healpix_map(path, "X")


def test_error_unknown_ordering(tmp_path):
    path = write_map_table(
        tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")}, cards={"ORDERING": "SPIRAL"}
    )
    with pytest.raises(InputError, match="ORDERING is 'SPIRAL'; expected RING or NESTED"):
        read_healpix_map(path, "X")


def test_error_not_healpix(tmp_path):
    path = write_map_table(
        tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")}, cards={"PIXTYPE": None}
    )
    with pytest.raises(InputError, match="PIXTYPE.*expected 'HEALPIX'"):
        read_healpix_map(path, "X")


def test_error_equatorial_refused(tmp_path):
    path = write_map_table(
        tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")}, cards={"COORDSYS": "C"}
    )
    with pytest.raises(InputError, match="COORDSYS is 'C'; expected galactic"):
        read_healpix_map(path, "X")


def test_error_nan_values(tmp_path):
    values = np.zeros(NPIX, "f4")
    values[[3, 40]] = [np.nan, np.inf]
    path = write_map_table(tmp_path / "d.fits", {"X": values})
    with pytest.raises(InputError, match="2 non-finite"):
        read_healpix_map(path, "X")


def test_error_unseen_values(tmp_path):
    values = np.zeros(NPIX, "f4")
    values[7] = hp.UNSEEN
    path = write_map_table(tmp_path / "d.fits", {"X": values})
    with pytest.raises(InputError, match="1 UNSEEN"):
        read_healpix_map(path, "X")


def test_error_wrong_unit(tmp_path):
    path = write_map_table(tmp_path / "d.fits", {"I": np.zeros(NPIX, "f4")}, units={"I": "MJy/sr"})
    with pytest.raises(InputError, match="unit 'MJy/sr'; expected one of"):
        read_healpix_map(path, "I", units=DUST_UNITS)


# --- scaled, logical and explicit-index tables -------------------------------------


def write_columns(path, columns, cards):
    """A HEALPix table from astropy ``fits.Column``s; ``cards`` complete the header."""
    hdu = fits.BinTableHDU.from_columns(columns)
    for key, value in {"PIXTYPE": "HEALPIX", "ORDERING": "RING", "COORDSYS": "G", **cards}.items():
        hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def test_scaled_integer_map_is_read_in_physical_units(tmp_path):
    raw = (np.arange(NPIX) % 3000).astype(np.int16)
    col = fits.Column(name="I", format="I", array=raw, unit="uK_RJ")
    path = write_columns(tmp_path / "d.fits", [col], {"NSIDE": NSIDE, "TSCAL1": 0.5, "TZERO1": 2.0})
    out = read_healpix_map(path, "I", units=DUST_UNITS)
    np.testing.assert_allclose(out, raw * 0.5 + 2.0, rtol=0, atol=1e-12)


def test_logical_mask_column_reads_as_1_and_0(tmp_path):
    keep = np.arange(NPIX) % 3 == 0
    col = fits.Column(name="LR72", format="L", array=keep)
    path = write_columns(tmp_path / "m.fits", [col], {"NSIDE": NSIDE})
    np.testing.assert_array_equal(read_healpix_map(path, "LR72"), keep.astype(float))


@pytest.mark.parametrize("nested", [False, True])
def test_explicit_index_map_is_scattered_to_its_pixels(tmp_path, nested):
    ring = np.random.default_rng(3).normal(size=NPIX).astype(np.float32)
    stored = hp.reorder(ring, r2n=True) if nested else ring
    pix = np.random.default_rng(4).permutation(NPIX).astype(np.int32)  # rows in any order
    cols = [
        fits.Column(name="PIXEL", format="J", array=pix),
        fits.Column(name="I", format="E", array=stored[pix]),
    ]
    cards = {"NSIDE": NSIDE, "INDXSCHM": "EXPLICIT", "ORDERING": "NESTED" if nested else "RING"}
    path = write_columns(tmp_path / "e.fits", cols, cards)
    np.testing.assert_array_equal(read_healpix_map(path, "I"), ring)


def test_healpy_partial_map_is_read_like_healpy(tmp_path):
    ring = np.random.default_rng(5).normal(size=NPIX)
    hp.write_map(tmp_path / "p.fits", ring, partial=True, coord="G", column_names=["I"])
    assert fits.getheader(tmp_path / "p.fits", 1)["INDXSCHM"] == "EXPLICIT"
    out = read_healpix_map(tmp_path / "p.fits", "I")
    np.testing.assert_array_equal(out, hp.read_map(tmp_path / "p.fits", partial=True))


def test_error_explicit_index_map_with_missing_pixels(tmp_path):
    ring = np.ones(NPIX)
    ring[:10] = hp.UNSEEN  # a partial-sky product: healpy writes only the 758 seen pixels
    hp.write_map(tmp_path / "p.fits", ring, partial=True, coord="G", column_names=["I"])
    with pytest.raises(InputError, match="p.fits: column 'I' has 10 UNSEEN pixels"):
        read_healpix_map(tmp_path / "p.fits", "I")


def test_error_blank_integer_values_refused_like_unseen(tmp_path):
    raw = np.zeros(NPIX, np.int32)
    raw[[2, 9]] = -1
    col = fits.Column(name="I", format="J", array=raw, null=-1)
    path = write_columns(tmp_path / "d.fits", [col], {"NSIDE": NSIDE})
    with pytest.raises(InputError, match="d.fits: column 'I' has 2 UNSEEN pixels.*blank"):
        read_healpix_map(path, "I")


@pytest.mark.parametrize("nside", [8.5, "eight"])
def test_error_nside_not_an_integer(tmp_path, nside):
    path = write_map_table(tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")}, cards={"NSIDE": nside})
    with pytest.raises(InputError, match=rf"d.fits: NSIDE is {nside!r}; expected a power of 2"):
        read_healpix_map(path, "X")


def test_error_unknown_index_scheme(tmp_path):
    path = write_map_table(
        tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")}, cards={"INDXSCHM": "SPARSE"}
    )
    with pytest.raises(InputError, match="d.fits: INDXSCHM is 'SPARSE'; expected IMPLICIT"):
        read_healpix_map(path, "X")


def test_error_gzip_compressed_map(tmp_path):
    path = write_map_table(tmp_path / "d.fits", {"X": np.zeros(NPIX, "f4")})
    (tmp_path / "d.fits.gz").write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(InputError, match=r"d.fits.gz: file is gzip-compressed.*gunzip"):
        read_healpix_map(tmp_path / "d.fits.gz", "X")
