"""dustpred.fits.table: binary-table rows written and read back; one test per damaged file."""

import gzip

import numpy as np
import pytest
from astropy.io import fits

from dustpred.errors import InputError
from dustpred.fits import table as fits_table

COLUMNS = [("ID", "J", 1, None), ("SPEC", "E", 3, "K")]


def write_small_table(path, nrows=5):
    ids = np.arange(nrows, dtype=np.int32)
    spec = np.arange(3 * nrows, dtype=np.float32).reshape(nrows, 3)
    fits_table.write_table_stream(
        path,
        COLUMNS,
        nrows,
        [{"ID": ids[:2], "SPEC": spec[:2]}, {"ID": ids[2:], "SPEC": spec[2:]}],
        [("NSIDE", 8, "a table keyword")],
        primary_cards=[("ORIGIN", "test", "a primary keyword")],
    )
    return ids, spec


def test_streamed_rows_read_back_through_astropy_and_the_memory_map(tmp_path):
    ids, spec = write_small_table(tmp_path / "t.fits")
    with fits.open(tmp_path / "t.fits") as hdul:
        np.testing.assert_array_equal(hdul[1].data["SPEC"], spec)
        assert hdul[1].header["TUNIT2"] == "K"
    table = fits_table.open_bintable(tmp_path / "t.fits")
    assert (table.nrows, table.names) == (5, ("ID", "SPEC"))
    rows = table.memmap()
    np.testing.assert_array_equal(rows["ID"], ids)
    np.testing.assert_array_equal(rows["SPEC"], spec)


def test_keywords_fall_back_to_the_primary_header(tmp_path):
    write_small_table(tmp_path / "t.fits")
    table = fits_table.open_bintable(tmp_path / "t.fits")
    assert fits_table.keyword(table, "NSIDE") == 8
    assert fits_table.keyword(table, "ORIGIN") == "test"
    assert fits_table.keyword(table, "ABSENT", "default") == "default"


def test_error_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        fits_table.open_bintable(tmp_path / "nope.fits")


def test_error_not_a_fits_file(tmp_path):
    path = tmp_path / "junk.fits"
    path.write_bytes(b"this is not FITS" * 200)
    with pytest.raises(InputError, match="junk.fits.*not a readable FITS file"):
        fits_table.open_bintable(path)


def test_error_no_binary_table(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((3, 3), np.float32)).writeto(path)
    with pytest.raises(InputError, match="image.fits: no BINTABLE extension found"):
        fits_table.open_bintable(path)


def test_error_truncated_table(tmp_path):
    path = tmp_path / "t.fits"
    write_small_table(path, nrows=1000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"t.fits.*truncated.*found \d+ bytes, expected"):
        fits_table.open_bintable(path)


def test_error_missing_column(tmp_path):
    write_small_table(tmp_path / "t.fits")
    table = fits_table.open_bintable(tmp_path / "t.fits")
    with pytest.raises(InputError, match=r"no column 'TB'.*found columns \['ID', 'SPEC'\]"):
        table.column_index("TB")


# --- stored values to physical values (TSCAL/TZERO, TNULL, logicals) -----------------


def write_astropy_table(path, columns, cards=None):
    """A one-BINTABLE file from astropy ``fits.Column``s, with extra table header cards."""
    hdu = fits.BinTableHDU.from_columns(columns)
    for key, value in (cards or {}).items():
        hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def test_scaled_integer_column_is_read_as_tscal_times_value_plus_tzero(tmp_path):
    raw = np.array([[0, 1, -2], [300, -32000, 7]], dtype=np.int16)
    fits_table.write_table_stream(
        tmp_path / "s.fits",
        [("TB", "I", 3, "K")],
        2,
        [{"TB": raw}],
        [("TSCAL1", 0.01, ""), ("TZERO1", 5.0, "")],
    )
    table = fits_table.open_bintable(tmp_path / "s.fits")
    values = fits_table.read_column(table, "TB", np.float64)
    np.testing.assert_allclose(values, raw.reshape(-1) * 0.01 + 5.0, rtol=0, atol=1e-12)


def test_tnull_integers_become_unseen(tmp_path):
    raw = np.array([1, -99, 3], dtype=np.int32)
    path = write_astropy_table(
        tmp_path / "n.fits", [fits.Column(name="X", format="J", array=raw, null=-99)]
    )
    values = fits_table.read_column(fits_table.open_bintable(path), "X", np.float64)
    np.testing.assert_array_equal(values, [1.0, fits_table.UNSEEN, 3.0])


def test_logical_column_reads_t_as_1_and_f_as_0(tmp_path):
    flags = np.array([True, False, False, True])
    path = write_astropy_table(
        tmp_path / "l.fits", [fits.Column(name="FLAG", format="L", array=flags)]
    )
    values = fits_table.read_column(fits_table.open_bintable(path), "FLAG", np.float64)
    np.testing.assert_array_equal(values, [1.0, 0.0, 0.0, 1.0])


def test_explicit_pixels_are_scattered_and_missing_ones_unseen(tmp_path):
    path = write_astropy_table(
        tmp_path / "e.fits",
        [
            fits.Column(name="PIXEL", format="J", array=np.array([4, 0, 2], np.int32)),
            fits.Column(name="X", format="E", array=np.array([40.0, 0.5, 20.0], np.float32)),
        ],
    )
    table = fits_table.open_bintable(path)
    out = fits_table.scatter_explicit(table, fits_table.read_column(table, "X", np.float64), 6)
    U = fits_table.UNSEEN
    np.testing.assert_array_equal(out, [0.5, U, 20.0, U, 40.0, U])


# --- one test per bad header or structure ----------------------------------------


def test_error_gzip_compressed_file(tmp_path):
    write_small_table(tmp_path / "t.fits")
    (tmp_path / "t.fits.gz").write_bytes(gzip.compress((tmp_path / "t.fits").read_bytes()))
    with pytest.raises(InputError, match=r"t.fits.gz: file is gzip-compressed.*run `gunzip "):
        fits_table.open_bintable(tmp_path / "t.fits.gz")


def test_error_only_a_primary_hdu(tmp_path):
    fits.PrimaryHDU().writeto(tmp_path / "p.fits")
    with pytest.raises(
        InputError,
        match=r"p.fits: no BINTABLE extension found; found 1 HDU\(s\): primary \(no data\); "
        "expected a HEALPix binary table",
    ):
        fits_table.open_bintable(tmp_path / "p.fits")


def test_error_file_cut_inside_the_table_header(tmp_path):
    write_small_table(tmp_path / "t.fits")
    data = (tmp_path / "t.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(data[: 2880 + 1000])  # primary + part of the table header
    with pytest.raises(
        InputError, match=r"t.fits: not a readable FITS file: it ends inside the header of HDU 1"
    ):
        fits_table.open_bintable(tmp_path / "t.fits")


def test_error_tscal_not_a_number(tmp_path):
    path = write_astropy_table(
        tmp_path / "s.fits",
        [fits.Column(name="X", format="I", array=np.zeros(3, np.int16))],
        {"TSCAL1": "tiny"},
    )
    with pytest.raises(InputError, match="s.fits: TSCAL1 is 'tiny'; expected a number"):
        fits_table.open_bintable(path)


def test_error_explicit_pixel_listed_twice(tmp_path):
    path = write_astropy_table(
        tmp_path / "e.fits",
        [
            fits.Column(name="PIXEL", format="J", array=np.array([1, 1], np.int32)),
            fits.Column(name="X", format="E", array=np.zeros(2, np.float32)),
        ],
    )
    table = fits_table.open_bintable(path)
    with pytest.raises(InputError, match="e.fits: PIXEL column lists 1 pixels more than once"):
        fits_table.scatter_explicit(table, np.zeros(2), 12)


def test_error_explicit_pixel_outside_the_sky(tmp_path):
    path = write_astropy_table(
        tmp_path / "e.fits",
        [
            fits.Column(name="PIXEL", format="J", array=np.array([0, 12], np.int32)),
            fits.Column(name="X", format="E", array=np.zeros(2, np.float32)),
        ],
    )
    table = fits_table.open_bintable(path)
    with pytest.raises(InputError, match=r"PIXEL column spans 0..12; expected .* in 0..11"):
        fits_table.scatter_explicit(table, np.zeros(2), 12)
