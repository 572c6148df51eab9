"""dustpred.healpix_maps.read_column_density_map (data.hi_kind: column_density): N_HI maps in
cm^-2 or 1e20 cm^-2, validated like every HEALPix map; a cube where an N_HI map is expected,
and the reverse, are refused with the config key to change."""

import numpy as np
import pytest
from map_tables import write_map_column

from dustpred import hi_cube
from dustpred.errors import InputError
from dustpred.healpix_maps import read_column_density_map

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
