"""dustpred.healpix_maps: tables read like healpy, written byte-stably; one test per bad input."""

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits

from dustpred import fits_table
from dustpred.errors import InputError
from dustpred.healpix_maps import DUST_UNITS, healpix_header, read_healpix_map, write_healpix_maps

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
