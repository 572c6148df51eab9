"""HEALPix maps as FITS binary tables (Planck layout): validated reader and writer.

The reader returns RING-ordered maps in galactic coordinates and raises
:class:`dustpred.errors.InputError` naming the file, what was found and what was expected.
The pixelisation checks (:func:`healpix_info`), the value check (:func:`check_values`) and
the unit check (:func:`unit_factor`) are shared with the HI cube (:mod:`dustpred.inputs.hi_cube`).

HEALPix map tables (Planck layout)
----------------------------------
A HEALPix map is a FITS binary table (the first BINTABLE extension) with header keywords
``PIXTYPE = 'HEALPIX'``, ``ORDERING`` (``RING`` or ``NESTED``), ``NSIDE`` and a coordinate
system ``COORDSYS`` (``G``/``GALACTIC``; ``SKYCOORD`` is accepted as a synonym). A column
holds the map either one pixel per row (``TFORM = 'E'``, as in the Planck Commander dust
map) or ``r`` pixels per row (``TFORM = '1024E'``, the HEALPix-package convention); in both
cases the flattened column has ``12 NSIDE**2`` values. Units come from ``TUNITn``.

``TSCALn``/``TZEROn`` are applied and logical (``L``) columns read as 1 (T) / 0 (F). An
explicit-index table (``INDXSCHM = 'EXPLICIT'``, pixel numbers in a ``PIXEL`` column, as
partial-sky products and ``healpy.write_map(..., partial=True)`` write) is scattered into a
full-sky map, UNSEEN where no row lists a pixel.

Bad values
----------
Non-finite values and HEALPix ``UNSEEN`` (-1.6375e30) pixels are refused (InputError giving
their count), and so are blank values (``TNULLn``, undefined logicals) and pixels that an
explicit-index table leaves out: every product this project reads is a full-sky map without
gaps, so a gap means a damaged or wrong file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import healpy as hp
import numpy as np

from dustpred.errors import InputError
from dustpred.fits.table import (
    BinTable,
    Card,
    integer,
    keyword,
    open_bintable,
    read_column,
    scatter_explicit,
    write_table_stream,
)

UNSEEN = hp.UNSEEN
GALACTIC_NAMES = ("G", "GAL", "GALACTIC")

# Unit spellings found in Planck/HEALPix headers -> factor to the canonical unit (µK_RJ).
DUST_UNITS = {"uk_rj": 1.0, "muk_rj": 1.0, "µk_rj": 1.0, "mk_rj": 1e3, "k_rj": 1e6}
# Dust map units by family: spelling (lower case, no spaces) -> (canonical unit, factor).
# Values are converted only within a family (mK_RJ -> uK_RJ); never across families:
# K_CMB -> K_RJ needs the map's frequency, MJy/sr -> K its bandpass, and r(l) is invariant
# to the scale anyway. The canonical unit is recorded in every output.
DUST_UNIT_FAMILIES = {
    **{k: ("uK_RJ", v) for k, v in DUST_UNITS.items()},
    "krj": ("uK_RJ", 1e6),
    "ukrj": ("uK_RJ", 1.0),
    "uk_cmb": ("uK_CMB", 1.0),
    "µk_cmb": ("uK_CMB", 1.0),
    "muk_cmb": ("uK_CMB", 1.0),
    "ukcmb": ("uK_CMB", 1.0),
    "mk_cmb": ("uK_CMB", 1e3),
    "k_cmb": ("uK_CMB", 1e6),
    "kcmb": ("uK_CMB", 1e6),
    "mjy/sr": ("MJy/sr", 1.0),
    "mjysr-1": ("MJy/sr", 1.0),
    "mjy.sr-1": ("MJy/sr", 1.0),
    "mjy/steradian": ("MJy/sr", 1.0),
    "mag": ("mag", 1.0),
    "mag(e(b-v))": ("mag", 1.0),
    "e(b-v)": ("mag", 1.0),
    "magnitude": ("mag", 1.0),
}
# HI column density spellings -> factor to the canonical 1e20 cm^-2 (values O(1-100), so
# float16 shards and the U-Net's inputs stay in range).
NHI_UNIT = "1e20 cm^-2"
NHI_UNITS = {
    "cm^-2": 1e-20,
    "cm-2": 1e-20,
    "cm**-2": 1e-20,
    "1/cm^2": 1e-20,
    "1/cm2": 1e-20,
    "atoms/cm^2": 1e-20,
    "atoms/cm2": 1e-20,
    "1e20cm^-2": 1.0,
    "1e20cm-2": 1.0,
    "1e+20cm^-2": 1.0,
    "1e+20cm-2": 1.0,
    "10^20cm^-2": 1.0,
    "10**20cm**-2": 1.0,
}


@dataclass(frozen=True)
class HealpixInfo:
    """Pixelisation of a HEALPix table: Nside, ordering and the pixel range it holds."""

    nside: int
    nested: bool
    firstpix: int
    lastpix: int
    explicit: bool = False  # INDXSCHM = 'EXPLICIT': rows carry their pixel in a PIXEL column

    @property
    def npix(self) -> int:
        return 12 * self.nside**2


def healpix_info(table: BinTable, coordsys_if_missing: str | None) -> HealpixInfo:
    """Check the HEALPix keywords of ``table`` (PIXTYPE, NSIDE, ORDERING, galactic COORDSYS,
    FIRSTPIX/LASTPIX) and return its pixelisation.

    ``coordsys_if_missing`` is assumed when the header has no COORDSYS; None refuses.
    """
    path = table.path
    pixtype = str(keyword(table, "PIXTYPE", "")).strip().upper()
    if pixtype != "HEALPIX":
        raise InputError(f"{path}: PIXTYPE is {pixtype or 'missing'!r}; expected 'HEALPIX'")
    nside = integer(path, "NSIDE", keyword(table, "NSIDE"), "a power of 2")
    if not hp.isnsideok(nside, nest=True):
        raise InputError(f"{path}: NSIDE is {nside!r}; expected a power of 2")
    ordering = str(keyword(table, "ORDERING", "")).strip().upper()
    if ordering not in ("RING", "NESTED", "NEST"):
        raise InputError(f"{path}: ORDERING is {ordering or 'missing'!r}; expected RING or NESTED")
    coordsys = keyword(table, "COORDSYS", keyword(table, "SKYCOORD"))
    if coordsys is None:
        if coordsys_if_missing is None:
            raise InputError(
                f"{path}: no COORDSYS keyword; expected galactic ('G'). Set config key "
                "'data.coordsys_if_missing: G' if you know the product is galactic"
            )
        coordsys = coordsys_if_missing
    coordsys = str(coordsys).strip().upper()
    if coordsys not in GALACTIC_NAMES:
        raise InputError(
            f"{path}: COORDSYS is {coordsys!r}; expected galactic ('G'). dustpred does not "
            "rotate maps: rotate it to galactic first (e.g. healpy.Rotator(coord=['C','G'])"
            ".rotate_map_alms) and set COORDSYS='G'"
        )
    npix = 12 * nside**2
    firstpix = integer(path, "FIRSTPIX", keyword(table, "FIRSTPIX", 0), "a pixel number")
    lastpix = integer(path, "LASTPIX", keyword(table, "LASTPIX", npix - 1), "a pixel number")
    if not 0 <= firstpix <= lastpix < npix:
        raise InputError(
            f"{path}: FIRSTPIX..LASTPIX is {firstpix}..{lastpix}; expected a range inside "
            f"0..{npix - 1} (Nside {nside})"
        )
    scheme = str(keyword(table, "INDXSCHM", "IMPLICIT")).strip().upper()
    if scheme not in ("IMPLICIT", "EXPLICIT"):
        raise InputError(f"{path}: INDXSCHM is {scheme!r}; expected IMPLICIT or EXPLICIT")
    return HealpixInfo(nside, ordering != "RING", firstpix, lastpix, scheme == "EXPLICIT")


def check_finite(path: str, what: str, values: np.ndarray) -> None:
    """Refuse non-finite values; ``what`` names the values in the message."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"{path}: {what} has {int(bad.sum())} non-finite (NaN/inf) values; "
            "expected finite values everywhere"
        )


def check_values(path: str, what: str, values: np.ndarray) -> None:
    """Refuse non-finite and UNSEEN values; ``what`` names the values in the message."""
    check_finite(path, what, values)
    unseen = np.isclose(values, UNSEEN, rtol=1e-5, atol=0.0)
    if unseen.any():
        raise InputError(
            f"{path}: {what} has {int(unseen.sum())} UNSEEN pixels (-1.6375e30, blank "
            "values or pixels an explicit-index table leaves out); expected a full-sky map "
            "without gaps"
        )


def unit_factor(path: str, column: str, found: str | None, units: dict[str, float]) -> float:
    """Factor from unit ``found`` (a TUNIT/BUNIT value) to the canonical unit of ``units``
    (spelling -> factor; case and spaces ignored); InputError for an unknown unit."""
    key = (found or "").strip().lower().replace(" ", "")
    table = {k.replace(" ", ""): v for k, v in units.items()}
    if key not in table:
        raise InputError(
            f"{path}: column {column!r} has unit {found!r}; expected one of {sorted(units)}"
        )
    return table[key]


def read_healpix_map(
    path: str | os.PathLike | BinTable,
    column: str,
    *,
    units: dict[str, float] | None = None,
    coordsys_if_missing: str | None = None,
    dtype: type = np.float64,
    allow_unseen: bool = False,
) -> np.ndarray:
    """Read one column of a HEALPix map table as a RING-ordered galactic map.

    Parameters
    ----------
    path
        FITS file with the map in its first BINTABLE extension (Planck layout).
    column
        Column name (case-insensitive), e.g. ``'I_ML_FULL'`` or ``'LR72'``.
    units
        Accepted ``TUNIT`` spellings mapped to the factor converting to the canonical unit
        (e.g. :data:`DUST_UNITS`, canonical µK_RJ). ``None`` skips the unit check (masks).
    coordsys_if_missing
        Coordinate system to assume when the header has no ``COORDSYS``; ``None`` refuses.
    dtype
        Floating type of the result.
    allow_unseen
        Accept ``UNSEEN`` pixels (a map with bad pixels, such as the template's uncovered
        sky); non-finite values are refused either way.

    Returns
    -------
    numpy.ndarray
        ``(12 Nside**2,)`` map in RING order, in the canonical unit.
    """
    # An opened table (BinTable) is read as is, so callers that read its header open it once.
    table = path if isinstance(path, BinTable) else open_bintable(path)
    info = healpix_info(table, coordsys_if_missing)
    n = table.column_index(column) + 1
    name = table.names[n - 1]
    if not info.explicit and (info.firstpix != 0 or info.lastpix != info.npix - 1):
        raise InputError(
            f"{table.path}: map covers pixels {info.firstpix}..{info.lastpix}; expected a "
            f"full-sky map 0..{info.npix - 1} (Nside {info.nside})"
        )
    factor = 1.0
    if units is not None:
        factor = unit_factor(table.path, name, table.header.get(f"TUNIT{n}"), units)
    values = read_column(table, name, dtype)  # scaled, logicals as 1/0, blanks UNSEEN
    if info.explicit:
        values = scatter_explicit(table, values, info.npix)
    if values.size != info.npix:
        raise InputError(
            f"{table.path}: column {name!r} holds {values.size} values; expected "
            f"npix = 12 * {info.nside}**2 = {info.npix}"
        )
    if allow_unseen:
        check_finite(table.path, f"column {name!r}", values)
    else:
        check_values(table.path, f"column {name!r}", values)
    if factor != 1.0:
        values *= factor
    if info.nested:
        values = hp.reorder(values, n2r=True)
    return values


def healpix_header(
    nside: int,
    *,
    nested: bool,
    coordsys: str = "G",
    firstpix: int = 0,
    lastpix: int | None = None,
    extra: dict | None = None,
) -> list[Card]:
    """HEALPix pixelisation keywords as ``(key, value, comment)`` cards."""
    npix = 12 * nside**2
    lastpix = npix - 1 if lastpix is None else lastpix
    full = firstpix == 0 and lastpix == npix - 1
    cards = [
        ("PIXTYPE", "HEALPIX", "HEALPIX pixelisation"),
        ("ORDERING", "NESTED" if nested else "RING", "Pixel ordering scheme, RING or NESTED"),
        ("NSIDE", int(nside), "Resolution parameter of HEALPIX"),
        ("NPIX", npix, "Total number of pixels"),
        ("OBJECT", "FULLSKY" if full else "PARTIAL", "Sky coverage"),
        ("FIRSTPIX", int(firstpix), "First pixel # (0 based)"),
        ("LASTPIX", int(lastpix), "Last pixel # (0 based)"),
        ("INDXSCHM", "IMPLICIT", "Indexing: IMPLICIT or EXPLICIT"),
        ("COORDSYS", coordsys, "Pixelisation coordinate system (G = galactic)"),
    ]
    for key, value in (extra or {}).items():
        if isinstance(value, tuple):
            cards.append((key, value[0], value[1]))
        else:
            cards.append((key, value, ""))
    return cards


def write_healpix_maps(
    path: str | os.PathLike,
    maps: dict[str, np.ndarray],
    *,
    nested: bool,
    units: dict[str, str] | None = None,
    coordsys: str = "G",
    code: str = "E",
    extra: dict | None = None,
) -> None:
    """Write full-sky HEALPix maps (one pixel per row) as a Planck-style binary table.

    Parameters
    ----------
    maps
        Column name -> ``(12 Nside**2,)`` map already in the requested ordering.
    nested
        Ordering keyword to write (the maps must already be in that ordering).
    units
        Column name -> ``TUNIT`` string.
    """
    names = list(maps)
    npix = len(maps[names[0]])
    nside = hp.npix2nside(npix)
    units = units or {}
    columns = [(name, code, 1, units.get(name)) for name in names]
    block = 1 << 20
    blocks = ({n: maps[n][i : i + block] for n in names} for i in range(0, npix, block))
    write_table_stream(
        path,
        columns,
        npix,
        blocks,
        healpix_header(nside, nested=nested, coordsys=coordsys, extra=extra),
    )


def column_unit(table: BinTable, column: str, unit_if_missing: str | None, key: str) -> str:
    """``TUNITn`` of ``column``, else ``unit_if_missing``; InputError naming config ``key``."""
    found = table.header.get(f"TUNIT{table.column_index(column) + 1}")
    if found is not None and str(found).strip():
        return str(found).strip()
    if unit_if_missing is None:
        raise InputError(
            f"{table.path}: column {column!r} has no TUNIT keyword; expected its unit. "
            f"Set config key '{key}' to the unit if you know it"
        )
    return unit_if_missing


def read_dust_map(
    path: str | os.PathLike,
    column: str,
    *,
    unit_if_missing: str | None = None,
    coordsys_if_missing: str | None = None,
) -> tuple[np.ndarray, str, dict[str, str | None]]:
    """Read a dust map (:func:`read_healpix_map`) in the canonical unit of its unit family.

    Parameters
    ----------
    unit_if_missing
        Unit assumed when the column has no ``TUNIT`` (config ``data.dust_unit_if_missing``);
        None refuses such files.

    Returns
    -------
    values : numpy.ndarray
        ``(12 Nside**2,)`` float64 RING map.
    unit : str
        Canonical unit of the family read (``uK_RJ``, ``uK_CMB``, ``MJy/sr`` or ``mag``):
        within-family factors are applied, families are never converted into each other.
    header : dict
        What the header says of the map (:func:`dust_header_facts`): unit, reference frequency.
    """
    table = open_bintable(path)
    found = column_unit(table, column, unit_if_missing, "data.dust_unit_if_missing")
    key = found.strip().lower().replace(" ", "")
    if key not in DUST_UNIT_FAMILIES:
        raise InputError(
            f"{table.path}: column {column!r} has unit {found!r}; expected a dust unit "
            "(uK_RJ, mK_RJ, K_RJ, K_CMB, uK_CMB, MJy/sr or mag for E(B-V))"
        )
    unit, factor = DUST_UNIT_FAMILIES[key]
    values = read_healpix_map(table, column, coordsys_if_missing=coordsys_if_missing)
    return (values * factor if factor != 1.0 else values), unit, dust_header_facts(table, column)


#: Header keywords that state a map's reference frequency, in the order they are looked for.
FREQUENCY_KEYWORDS = ("NU_REF", "REF_FREQ", "FREQREF", "FREQ", "FREQUENCY", "NU0")


def dust_header_facts(table: BinTable, column: str) -> dict[str, str | None]:
    """What a dust table's headers say of a column: its ``unit`` (``TUNITn``, None if absent)
    and the map's ``reference_frequency`` (the first of :data:`FREQUENCY_KEYWORDS` in the
    table's, then the primary header, with its comment; None if neither gives one)."""
    unit = table.header.get(f"TUNIT{table.column_index(column) + 1}")
    found = [(h, k) for h in (table.header, table.primary) for k in FREQUENCY_KEYWORDS if k in h]
    frequency = None
    if found:
        header, key = found[0]
        value, comment = str(header[key]).strip(), str(header.comments[key]).strip()
        frequency = f"{key} = {value}" + (f" ({comment})" if comment else "")
    return {"unit": str(unit).strip() if unit else None, "reference_frequency": frequency}


def read_column_density_map(
    path: str | os.PathLike,
    column: str,
    *,
    unit_if_missing: str | None = None,
    coordsys_if_missing: str | None = None,
) -> np.ndarray:
    """Read an HI column-density map (e.g. HI4PI's ``NHI_HPX.fits``) in 1e20 cm^-2.

    The table is validated like every HEALPix map (:func:`read_healpix_map`); a vector
    column (a velocity cube) is refused.

    Parameters
    ----------
    unit_if_missing
        Unit assumed when the column has no ``TUNIT`` (config ``data.hi_unit_if_missing``),
        ``cm^-2`` or ``1e20 cm^-2``; None refuses such files.

    Returns
    -------
    numpy.ndarray
        ``(12 Nside**2,)`` float64 RING map of N_HI in units of 1e20 cm^-2 (:data:`NHI_UNIT`).
    """
    table = open_bintable(path)
    name = table.names[table.column_index(column)]
    shape = table.row_dtype[name].shape
    if shape and shape[0] > 1:
        raise InputError(
            f"{table.path}: column {name!r} holds {shape[0]} values per row (a velocity "
            "cube?); expected one N_HI value per pixel for data.hi_kind: column_density "
            "(set data.hi_kind: cube for a cube)"
        )
    found = column_unit(table, name, unit_if_missing, "data.hi_unit_if_missing")
    key = found.strip().lower().replace(" ", "")
    if key not in NHI_UNITS:
        raise InputError(
            f"{table.path}: column {name!r} has unit {found!r}; expected a column density "
            "in cm^-2 or 1e20 cm^-2"
        )
    values = read_healpix_map(table, name, coordsys_if_missing=coordsys_if_missing)
    return values * NHI_UNITS[key]
