"""dustpred.fits_table: binary-table rows written and read back; one test per damaged file."""

import numpy as np
import pytest
from astropy.io import fits

from dustpred import fits_table
from dustpred.errors import InputError

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
