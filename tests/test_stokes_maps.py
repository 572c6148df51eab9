"""dustpred.inputs.stokes_maps: Q, U read in the COSMO convention from files healpy writes in
the Planck layout; one test per bad input."""

import healpy as hp
import numpy as np
import pytest

from dustpred.errors import InputError
from dustpred.inputs.stokes_maps import read_qu_maps

NSIDE = 8
NPIX = 12 * NSIDE**2
COLUMNS = ["I_STOKES", "Q_STOKES", "U_STOKES"]


@pytest.fixture
def iqu():
    rng = np.random.default_rng(3)
    return rng.normal(size=(3, NPIX))


def write(path, maps, *, polcconv="COSMO", units="K_CMB", nest=False):
    extra = [] if polcconv is None else [("POLCCONV", polcconv)]
    hp.write_map(
        str(path),
        hp.reorder(maps, r2n=True) if nest else maps,
        nest=nest,
        coord="G",
        column_names=COLUMNS,
        column_units=units,
        extra_header=extra,
        dtype=np.float64,
        overwrite=True,
    )
    return str(path)


def test_cosmo_file_reads_as_healpy_reads_it(tmp_path, iqu):
    path = write(tmp_path / "qu.fits", iqu, nest=True)
    qu, unit, convention, _ = read_qu_maps(path)
    reference = hp.read_map(path, field=(1, 2))
    assert convention == "COSMO" and unit == "uK_CMB"
    np.testing.assert_allclose(qu, reference * 1e6, rtol=1e-12)


def test_iau_file_has_u_negated(tmp_path, iqu):
    qu, _, convention, _ = read_qu_maps(write(tmp_path / "qu.fits", iqu, polcconv="IAU"))
    assert convention == "IAU"
    np.testing.assert_allclose(qu[0], iqu[1] * 1e6, rtol=1e-12)
    np.testing.assert_allclose(qu[1], -iqu[2] * 1e6, rtol=1e-12)


def test_missing_convention_is_refused_naming_the_config_key(tmp_path, iqu):
    with pytest.raises(InputError, match=r"no POLCCONV.*polarisation\.convention_if_missing"):
        read_qu_maps(write(tmp_path / "qu.fits", iqu, polcconv=None))


def test_missing_convention_is_taken_from_config(tmp_path, iqu):
    path = write(tmp_path / "qu.fits", iqu, polcconv=None)
    qu, _, convention, _ = read_qu_maps(path, convention_if_missing="IAU")
    assert convention == "IAU"
    np.testing.assert_allclose(qu[1], -iqu[2] * 1e6, rtol=1e-12)


def test_unknown_convention_is_refused(tmp_path, iqu):
    with pytest.raises(InputError, match=r"POLCCONV is 'GALACTIC'.*\['COSMO', 'IAU'\]"):
        read_qu_maps(write(tmp_path / "qu.fits", iqu, polcconv="GALACTIC"))


def test_q_and_u_in_different_unit_families_are_refused(tmp_path, iqu):
    path = write(tmp_path / "qu.fits", iqu, units=["K_CMB", "K_CMB", "MJy/sr"])
    with pytest.raises(InputError, match=r"units \['K_CMB', 'MJy/sr'\]"):
        read_qu_maps(path)


def test_missing_column_names_the_columns_found(tmp_path, iqu):
    with pytest.raises(InputError, match=r"no column 'Q_ML_FULL'.*I_STOKES"):
        read_qu_maps(write(tmp_path / "qu.fits", iqu), q_column="Q_ML_FULL")
