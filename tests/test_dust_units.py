"""dustpred.inputs.healpix_maps.read_dust_map: the usual FITS spellings of the dust units, converted
only within a family (never K_CMB <-> K_RJ <-> MJy/sr <-> mag), and the unit reported."""

import numpy as np
import pytest
from map_tables import write_map_column

from dustpred.errors import InputError
from dustpred.inputs.healpix_maps import read_dust_map

NPIX = 12 * 4**2
VALUES = np.linspace(1.0, 2.0, NPIX)

# (TUNIT as found in Planck / HEALPix / SFD-style headers, canonical unit, factor to it);
# FITS headers are ASCII, so micro is spelled u or mu (the reader also takes µ).
SPELLINGS = [
    ("uK_RJ", "uK_RJ", 1.0),
    ("muK_RJ", "uK_RJ", 1.0),
    ("uK RJ", "uK_RJ", 1.0),
    ("mK_RJ", "uK_RJ", 1e3),
    ("K_RJ", "uK_RJ", 1e6),
    ("Krj", "uK_RJ", 1e6),
    ("K_CMB", "uK_CMB", 1e6),
    ("Kcmb", "uK_CMB", 1e6),
    ("mK_CMB", "uK_CMB", 1e3),
    ("uK_CMB", "uK_CMB", 1.0),
    ("MJy/sr", "MJy/sr", 1.0),
    ("MJy sr-1", "MJy/sr", 1.0),
    ("mag", "mag", 1.0),
    ("E(B-V)", "mag", 1.0),
]


@pytest.mark.parametrize(("found", "unit", "factor"), SPELLINGS)
def test_dust_unit_spelling_is_read_in_its_family_canonical_unit(tmp_path, found, unit, factor):
    path = write_map_column(tmp_path / "dust.fits", VALUES, unit=found)
    values, got, _ = read_dust_map(path, "I")
    assert got == unit
    np.testing.assert_allclose(values, VALUES * factor, rtol=1e-6)


def test_dust_unknown_unit_is_refused_naming_file_and_unit(tmp_path):
    path = write_map_column(tmp_path / "dust.fits", VALUES, unit="Jy/beam")
    with pytest.raises(InputError, match=r"dust\.fits.*'Jy/beam'.*expected a dust unit"):
        read_dust_map(path, "I")


def test_dust_missing_unit_is_refused_naming_the_config_key(tmp_path):
    path = write_map_column(tmp_path / "dust.fits", VALUES)
    with pytest.raises(InputError, match="no TUNIT.*data.dust_unit_if_missing"):
        read_dust_map(path, "I")


def test_dust_missing_unit_is_taken_from_unit_if_missing(tmp_path):
    path = write_map_column(tmp_path / "dust.fits", VALUES)
    values, unit, _ = read_dust_map(path, "I", unit_if_missing="mag")
    assert unit == "mag"
    np.testing.assert_allclose(values, VALUES, rtol=1e-6)


def test_dust_unit_in_the_file_wins_over_unit_if_missing(tmp_path):
    path = write_map_column(tmp_path / "dust.fits", VALUES, unit="K_CMB")
    _, unit, _ = read_dust_map(path, "I", unit_if_missing="mag")
    assert unit == "uK_CMB"


def test_the_header_unit_and_reference_frequency_are_reported_as_found(tmp_path):
    path = write_map_column(
        tmp_path / "dust.fits", VALUES, unit="K_RJ", cards={"NU_REF": ("545 GHz", "ref freq")}
    )
    _, unit, header = read_dust_map(path, "I")
    assert unit == "uK_RJ"  # canonical, converted
    assert header == {"unit": "K_RJ", "reference_frequency": "NU_REF = 545 GHz (ref freq)"}


def test_a_dust_header_without_a_frequency_says_so(tmp_path):
    path = write_map_column(tmp_path / "dust.fits", VALUES, unit="uK_RJ")
    assert read_dust_map(path, "I")[2] == {"unit": "uK_RJ", "reference_frequency": None}
