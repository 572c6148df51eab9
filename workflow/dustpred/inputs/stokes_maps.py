"""Polarised HEALPix maps (Stokes Q, U) read in the COSMO convention.

Planck's polarised products (the 2018 GNILC ``COM_CompMap_IQU-thermaldust-gnilc-*`` and the
Commander ``COM_CompMap_QU-thermaldust-commander-*`` maps, and every frequency map) are
HEALPix tables in the Planck layout (:mod:`dustpred.inputs.healpix_maps`) with one column
per Stokes parameter, e.g. ``I_STOKES``, ``Q_STOKES``, ``U_STOKES``, and the header keyword
``POLCCONV`` naming the polarisation convention:

- ``COSMO`` (HEALPix's and Planck's): used as is;
- ``IAU`` (angles from north through east): U changes sign;
- anything else is refused, and a missing ``POLCCONV`` too unless the config says which
  convention the file follows (``polarisation.convention_if_missing``): the two conventions
  differ only by the sign of U, which no check on the values can detect.

Q and U must share one unit of the dust unit families (``uK_RJ``, ``uK_CMB``, ``MJy/sr``),
converted within the family as the intensity map is.
"""

from __future__ import annotations

import os

import numpy as np

from dustpred.errors import InputError
from dustpred.fits.table import open_bintable
from dustpred.inputs.healpix_maps import (
    DUST_UNIT_FAMILIES,
    column_unit,
    dust_header_facts,
    read_healpix_map,
)

CONVENTIONS = ("COSMO", "IAU")
CONVENTION_KEY = "polarisation.convention_if_missing"


def polarisation_convention(
    header: dict, primary: dict, path: str, convention_if_missing: str | None
) -> str:
    """``COSMO`` or ``IAU`` from a table's ``POLCCONV`` (table header, then primary), else
    ``convention_if_missing``; InputError for an unknown or unstated convention."""
    found = next((h["POLCCONV"] for h in (header, primary) if "POLCCONV" in h), None)
    if found is None:
        if convention_if_missing is None:
            raise InputError(
                f"{path}: no POLCCONV keyword; expected 'COSMO' or 'IAU' (the two differ by "
                f"the sign of U). Set config key '{CONVENTION_KEY}' if you know it"
            )
        found = convention_if_missing
    convention = str(found).strip().upper()
    if convention not in CONVENTIONS:
        raise InputError(f"{path}: POLCCONV is {found!r}; expected one of {list(CONVENTIONS)}")
    return convention


def read_qu_maps(
    path: str | os.PathLike,
    q_column: str = "Q_STOKES",
    u_column: str = "U_STOKES",
    *,
    convention_if_missing: str | None = None,
    unit_if_missing: str | None = None,
    coordsys_if_missing: str | None = None,
) -> tuple[np.ndarray, str, str, dict[str, str | None]]:
    """Read Stokes Q and U of a polarised HEALPix table in the COSMO convention.

    Parameters
    ----------
    path
        FITS file with the maps in its first BINTABLE extension.
    q_column, u_column
        Column names (case-insensitive).
    convention_if_missing
        ``'COSMO'`` or ``'IAU'`` for a file without ``POLCCONV``; None refuses such files.
    unit_if_missing, coordsys_if_missing
        As :func:`dustpred.inputs.healpix_maps.read_dust_map`.

    Returns
    -------
    qu : numpy.ndarray
        ``(2, 12 Nside**2)`` float64 RING maps Q, U, COSMO, in ``unit``.
    unit : str
        Canonical unit of the family read.
    convention : str
        The file's convention (``COSMO`` or ``IAU``), before the conversion.
    header : dict
        :func:`dustpred.inputs.healpix_maps.dust_header_facts` of the Q column.
    """
    table = open_bintable(path)
    convention = polarisation_convention(
        table.header, table.primary, table.path, convention_if_missing
    )
    found = [
        column_unit(table, c, unit_if_missing, "data.dust_unit_if_missing")
        for c in (q_column, u_column)
    ]
    families = [DUST_UNIT_FAMILIES.get(f.strip().lower().replace(" ", "")) for f in found]
    if None in families or families[0][0] != families[1][0]:
        raise InputError(
            f"{table.path}: columns {q_column!r}, {u_column!r} have units {found}; expected "
            "one dust unit for both (uK_RJ, mK_RJ, K_RJ, K_CMB, uK_CMB or MJy/sr)"
        )
    qu = np.stack(
        [
            read_healpix_map(table, c, coordsys_if_missing=coordsys_if_missing) * fam[1]
            for c, fam in zip((q_column, u_column), families, strict=True)
        ]
    )
    if convention == "IAU":
        qu[1] *= -1.0
    return qu, families[0][0], convention, dust_header_facts(table, q_column)
