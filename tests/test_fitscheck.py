"""dustpred.fits.check: the first block and the HDU structure, against files astropy writes."""

import numpy as np
import pytest
from astropy.io import fits

from dustpred.fits.check import header_block_problem, structure_problem


@pytest.fixture(scope="module")
def three_hdus(tmp_path_factory):
    """Empty primary + binary table with a variable-length column (heap) + float32 image."""
    varcol = np.array([np.arange(5.0), np.arange(3.0)], dtype=object)
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="V", format="PE()", array=varcol), fits.Column("I", "J", array=[1, 2])]
    )
    image = fits.ImageHDU(np.zeros((3, 7), np.float32))
    path = tmp_path_factory.mktemp("fits") / "three.fits"
    fits.HDUList([fits.PrimaryHDU(), table, image]).writeto(path)
    return path.read_bytes()


def test_complete_multi_extension_file_passes(three_hdus, tmp_path):
    assert len(three_hdus) == 5 * 2880
    (tmp_path / "f.fits").write_bytes(three_hdus)
    assert structure_problem(tmp_path / "f.fits") is None


def test_primary_image_file_passes(tmp_path):
    fits.PrimaryHDU(np.ones((10, 10))).writeto(tmp_path / "p.fits")
    assert structure_problem(tmp_path / "p.fits") is None


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (100, "is only 100 bytes long (a FITS header block is 2880)"),
        (2880, "has no data (1 HDU(s), all empty)"),
        (2880 + 1000, "ends inside the header of HDU 1 (no END card before byte 3880)"),
        (2 * 2880 + 10, "ends inside the data of HDU 1: its header announces 56 bytes, 10 are"),
        (4 * 2880, "ends inside the data of HDU 2: its header announces 84 bytes, 0 are"),
        (5 * 2880 - 1, "ends inside the padding of HDU 2 (14399 bytes, not a multiple of 2880)"),
    ],
)
def test_truncated_file_is_reported_with_where_it_ends(three_hdus, tmp_path, cut, problem):
    (tmp_path / "f.fits").write_bytes(three_hdus[:cut])
    assert structure_problem(tmp_path / "f.fits").startswith(problem)


def test_bytes_after_the_last_hdu_that_are_not_an_extension(three_hdus, tmp_path):
    (tmp_path / "f.fits").write_bytes(three_hdus + b" " * 2880)
    assert structure_problem(tmp_path / "f.fits") == (
        "has 2880 bytes after HDU 2 that are not an extension"
    )


@pytest.mark.parametrize(
    ("start", "problem"),
    [
        (b"<!DOCTYPE html>\n<html>", "starts with '<!DOCTYPE html>'"),
        (b"\x1f\x8b\x08\x00", "starts with the gzip magic bytes 1f 8b (a compressed file)"),
        (b"", "is empty"),
        (b"SIMPLE  =                    T\x89", "has a non-ASCII byte 0x89 in header card 1"),
        (
            b"SIMPLE  =                    T".ljust(80) + b"bitpix  = 8",
            "invalid keyword 'bitpix  '",
        ),
    ],
)
def test_first_block_that_is_not_a_fits_header(start, problem):
    assert problem in header_block_problem(start, complete=False)


def test_first_block_of_an_astropy_file_passes(three_hdus):
    assert header_block_problem(three_hdus) is None
    assert header_block_problem(three_hdus[:100], complete=False) is None
