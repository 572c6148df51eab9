"""Low-level FITS binary tables: find a file's first BINTABLE, map its rows, stream new ones.

This is the one place that knows the byte layout of a FITS binary table; the HEALPix map
reader (:mod:`dustpred.inputs.healpix_maps`) and the HI cube (:mod:`dustpred.inputs.hi_cube`) build
on it.

Reading: :func:`open_bintable` parses the headers of the first ``BINTABLE`` extension and
checks that the file holds all of its rows; :class:`BinTable` then gives the rows as a
structured memory map (numeric columns only: TFORM codes ``L B I J K E D``, big-endian, with
an optional repeat count such as ``1024E``). Header keywords are looked up in the table
header, then in the primary header (:func:`keyword`); :func:`velocity_axis` reads a
spectral axis from WCS keywords (``CTYPEn = 'VRAD'``, ``CRVALn``, ``CDELTn``, ``CRPIXn``,
``CUNITn``).

Stored values become physical values through :func:`decode` (or :func:`read_column`, which
reads a whole column): ``TSCALn``/``TZEROn`` are applied, integer values equal to ``TNULLn``
and undefined logicals become :data:`UNSEEN` (so that the readers' UNSEEN check reports
them), and logical columns (``L``, stored as the ASCII bytes ``T``/``F``) become 1/0. In an
explicit-index HEALPix table (``INDXSCHM = 'EXPLICIT'``) each row carries its pixel number
in a ``PIXEL`` column; :func:`scatter_explicit` puts the values in a full-sky array.

Writing: :func:`write_table_stream` writes a primary header and one BINTABLE whose rows
arrive block by block, so a table larger than memory can be written; the output is atomic
and its bytes depend only on the inputs (no date keyword).

Damaged, truncated or gzip-compressed files, a missing BINTABLE and bad keyword values
(:func:`integer`, :func:`number`) raise :class:`dustpred.errors.InputError` naming the file,
what was found and what was expected.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from dustpred.atomic import atomic_path
from dustpred.errors import InputError
from dustpred.fits import check as fitscheck

#: ``(name, code, repeat, unit)`` of one table column; ``unit`` None writes no ``TUNITn``.
Column = tuple[str, str, int, str | None]
#: ``(key, value, comment)`` of one header card.
Card = tuple[str, object, str]

_TFORM = re.compile(r"^\s*(\d*)\s*([LBIJKED])")
TFORM_DTYPES = {"L": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
VELOCITY_CTYPES = ("VRAD", "VELO-LSR", "VELO", "VOPT", "VELO-LSRK")
# Extensions searched for the first BINTABLE (and, in dustpred.inputs.hi_cube, for an image cube).
MAX_HDUS = 64
#: HEALPix's UNSEEN sentinel (``healpy.UNSEEN``): what blank (TNULL/BLANK) values become.
UNSEEN = -1.6375e30
_INTEGER_CODES = ("B", "I", "J", "K")


@dataclass(frozen=True)
class ColumnFormat:
    """How column values are stored: TFORM code and repeat, TSCAL/TZERO, TNULL (or None)."""

    name: str
    code: str
    repeat: int
    scale: float = 1.0
    zero: float = 0.0
    null: int | None = None


@dataclass(frozen=True)
class BinTable:
    """Where a binary table's rows live in a file, and its header."""

    path: str
    header: fits.Header
    primary: fits.Header
    offset: int
    nrows: int
    row_dtype: np.dtype
    names: tuple[str, ...]
    formats: tuple[ColumnFormat, ...] = ()

    def memmap(self) -> np.memmap:
        """The rows as a read-only ``(nrows,)`` structured memory map."""
        return np.memmap(
            self.path, dtype=self.row_dtype, mode="r", offset=self.offset, shape=(self.nrows,)
        )

    def column_index(self, name: str) -> int:
        """0-based index of column ``name`` (case-insensitive); InputError if absent."""
        upper = [n.upper() for n in self.names]
        if name.upper() not in upper:
            raise InputError(
                f"{self.path}: no column {name!r} in the HEALPix table; "
                f"found columns {list(self.names)}, expected one named {name!r}"
            )
        return upper.index(name.upper())


@contextlib.contextmanager
def quiet_truncation():
    """Silence astropy's truncation warning: a truncated file is reported as an InputError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        yield


def integer(path: str, key: str, value, expected: str = "an integer") -> int:
    """``value`` of header keyword ``key`` as an int; InputError naming the file otherwise.

    Integers and floats with an integral value (``8.0``) are accepted; strings, booleans,
    fractions and a missing keyword (None) are refused.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    found = "missing" if value is None else repr(value)
    raise InputError(f"{path}: {key} is {found}; expected {expected}")


def number(path: str, key: str, value, expected: str = "a number") -> float:
    """``value`` of header keyword ``key`` as a finite float; InputError naming the file."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not ok or not np.isfinite(value):
        found = "missing" if value is None else repr(value)
        raise InputError(f"{path}: {key} is {found}; expected {expected}")
    return float(value)


def refuse_compressed(path: str) -> None:
    """InputError if ``path`` is gzip-compressed: its offsets would be those of the
    decompressed stream, and the readers map the file's bytes directly."""
    with open(path, "rb") as fh:
        start = fh.read(2)
    if start == b"\x1f\x8b":
        raise InputError(
            f"{path}: file is gzip-compressed (starts with the gzip magic bytes 1f 8b); "
            f"expected an uncompressed FITS file: run `gunzip {path}` and give the "
            "uncompressed file"
        )


def _no_bintable(path: str, found: list[str]) -> InputError:
    problem = fitscheck.structure_problem(path)
    if problem is not None and "no data" not in problem:
        return InputError(
            f"{path}: not a readable FITS file: it {problem}; expected a FITS file with a "
            "HEALPix binary table (truncated download?)"
        )
    return InputError(
        f"{path}: no BINTABLE extension found; found {len(found)} HDU(s): {', '.join(found)}; "
        "expected a HEALPix binary table in the first extension"
    )


def _describe_hdu(index: int, header: fits.Header) -> str:
    kind = "primary" if index == 0 else str(header.get("XTENSION", "?")).strip()
    naxis = header.get("NAXIS", 0)
    shape = " x ".join(str(header.get(f"NAXIS{i}", "?")) for i in range(1, int(naxis) + 1))
    return f"{kind} ({shape} data)" if naxis else f"{kind} (no data)"


def _first_bintable(path: str) -> tuple[fits.Header, fits.Header, int]:
    """Primary header, table header and data offset (bytes) of the first BINTABLE."""
    refuse_compressed(path)
    found = []
    try:
        with quiet_truncation(), fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            primary = hdul[0].header.copy()
            found.append(_describe_hdu(0, primary))
            for index in range(1, MAX_HDUS):
                try:
                    hdu = hdul[index]
                except IndexError:
                    break
                if hdu.header.get("XTENSION", "").strip() == "BINTABLE":
                    return primary, hdu.header.copy(), hdul.fileinfo(index)["datLoc"]
                found.append(_describe_hdu(index, hdu.header))
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError on damaged files
        problem = fitscheck.structure_problem(path)
        detail = f"it {problem}" if problem else f"{type(exc).__name__}: {exc}"
        raise InputError(
            f"{path}: not a readable FITS file ({detail}); "
            "expected a FITS file with a HEALPix binary table (truncated download?)"
        ) from exc
    raise _no_bintable(path, found)


def _column_formats(path: str, header: fits.Header) -> list[ColumnFormat]:
    """The columns that the TTYPEn/TFORMn (and TSCALn/TZEROn/TNULLn) keywords declare."""
    formats = []
    for n in range(1, integer(path, "TFIELDS", header.get("TFIELDS")) + 1):
        name = str(header.get(f"TTYPE{n}", f"COL{n}")).strip()
        tform = str(header.get(f"TFORM{n}", "missing"))
        match = _TFORM.match(tform)
        if match is None:
            raise InputError(
                f"{path}: column {name!r} has TFORM {tform!r}; expected a numeric column "
                "(L, B, I, J, K, E or D)"
            )
        code = match.group(2)
        scale = number(path, f"TSCAL{n}", header.get(f"TSCAL{n}", 1.0))
        zero = number(path, f"TZERO{n}", header.get(f"TZERO{n}", 0.0))
        null = header.get(f"TNULL{n}")
        if null is not None:
            null = integer(path, f"TNULL{n}", null, "an integer blank value")
        if code == "L" and (scale, zero) != (1.0, 0.0):
            raise InputError(
                f"{path}: logical column {name!r} has TSCAL{n}={scale}, TZERO{n}={zero}; "
                "expected no scaling on a logical (L) column"
            )
        null = null if code in _INTEGER_CODES else None  # TNULL means nothing for floats
        formats.append(ColumnFormat(name, code, int(match.group(1) or 1), scale, zero, null))
    return formats


def open_bintable(path: str | os.PathLike) -> BinTable:
    """Parse the headers of the first BINTABLE in ``path`` and check the file is complete.

    Raises
    ------
    dustpred.errors.InputError
        Missing, unreadable, gzip-compressed or truncated file; no BINTABLE; a non-numeric
        column; a bad NAXISn/TFIELDS/TSCALn/TZEROn/TNULLn value; a row width (``NAXIS1``)
        that disagrees with the columns.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found; expected a FITS file")
    size = os.path.getsize(path)
    primary, header, offset = _first_bintable(path)
    nrows = integer(path, "NAXIS2", header.get("NAXIS2"), "the number of table rows")
    rowbytes = integer(path, "NAXIS1", header.get("NAXIS1"), "the row width in bytes")
    formats = _column_formats(path, header)
    names = [f.name for f in formats]
    dtype = row_dtype((f.name, f.code, f.repeat, None) for f in formats)
    if dtype.itemsize != rowbytes:
        raise InputError(
            f"{path}: binary table rows are {rowbytes} bytes (NAXIS1) but the columns "
            f"{names} add up to {dtype.itemsize}; expected them to agree"
        )
    needed = offset + nrows * rowbytes
    if size < needed:
        raise InputError(
            f"{path}: file is truncated: found {size} bytes, expected at least {needed} "
            f"({nrows} rows of {rowbytes} bytes after the header)"
        )
    return BinTable(path, header, primary, offset, nrows, dtype, tuple(names), tuple(formats))


def keyword(table: BinTable, key: str, default=None):
    """A keyword from the table header, else the primary header, else ``default``."""
    for header in (table.header, table.primary):
        if key in header:
            return header[key]
    return default


def apply_scale(table: BinTable, n: int, values: np.ndarray) -> np.ndarray:
    """Apply TSCALn/TZEROn of column ``n`` (1-based) when present (integer columns carry them)."""
    scal = table.formats[n - 1].scale if table.formats else table.header.get(f"TSCAL{n}", 1.0)
    zero = table.formats[n - 1].zero if table.formats else table.header.get(f"TZERO{n}", 0.0)
    if scal != 1.0 or zero != 0.0:
        return values * scal + zero
    return values


def decode(table: BinTable, name: str, raw: np.ndarray, dtype: type) -> np.ndarray:
    """Physical values of column ``name`` from its stored values ``raw`` (any shape).

    Logical bytes ``T``/``F`` give 1/0; TSCAL/TZERO are applied; TNULL integers and
    undefined logicals (byte 0) give :data:`UNSEEN`. Returns a new array of ``dtype``.
    """
    n = table.column_index(name) + 1
    fmt = table.formats[n - 1]
    if fmt.code == "L":
        raw = np.asarray(raw)
        unknown = ~np.isin(raw, (ord("T"), ord("F"), 0))
        if unknown.any():
            raise InputError(
                f"{table.path}: logical column {fmt.name!r} has {int(unknown.sum())} bytes "
                f"other than 'T', 'F' or 0 (e.g. {int(raw[unknown][0])}); expected FITS "
                "logical values"
            )
        values = (raw == ord("T")).astype(dtype)
        values[raw == 0] = UNSEEN
        return values
    values = apply_scale(table, n, np.asarray(raw).astype(dtype))
    if fmt.null is not None:
        values[np.asarray(raw) == fmt.null] = UNSEEN
    return values


def read_column(table: BinTable, name: str, dtype: type) -> np.ndarray:
    """All values of column ``name``, flattened row by row and decoded (:func:`decode`)."""
    rows = table.memmap()
    values = decode(table, name, np.asarray(rows[name]).reshape(-1), dtype)
    del rows
    return values


def scatter_explicit(table: BinTable, values: np.ndarray, npix: int) -> np.ndarray:
    """``(npix,)`` array of ``values`` placed at the pixels of the ``PIXEL`` column.

    For an explicit-index table (``INDXSCHM = 'EXPLICIT'``); pixels that no row lists are
    :data:`UNSEEN`. Pixel numbers are in the table's ordering.
    """
    upper = [name.upper() for name in table.names]
    if "PIXEL" not in upper:
        raise InputError(
            f"{table.path}: INDXSCHM is 'EXPLICIT' but there is no PIXEL column; found "
            f"columns {list(table.names)}, expected a PIXEL column giving each row's pixel"
        )
    fmt = table.formats[upper.index("PIXEL")]
    if fmt.code not in ("I", "J", "K") or (fmt.scale, fmt.zero) != (1.0, 0.0):
        raise InputError(
            f"{table.path}: PIXEL column has TFORM {fmt.code!r} (TSCAL {fmt.scale}, TZERO "
            f"{fmt.zero}); expected unscaled integers (I, J or K)"
        )
    rows = table.memmap()
    pixels = np.asarray(rows[fmt.name]).reshape(-1).astype(np.int64)
    del rows
    if pixels.size != values.size:
        raise InputError(
            f"{table.path}: PIXEL column holds {pixels.size} pixel numbers for {values.size} "
            "values; expected one pixel number per value"
        )
    if pixels.size and (pixels.min() < 0 or pixels.max() >= npix):
        raise InputError(
            f"{table.path}: PIXEL column spans {pixels.min()}..{pixels.max()}; expected "
            f"pixel numbers in 0..{npix - 1}"
        )
    if np.unique(pixels).size != pixels.size:
        raise InputError(
            f"{table.path}: PIXEL column lists {pixels.size - np.unique(pixels).size} pixels "
            "more than once; expected each pixel at most once"
        )
    out = np.full(npix, UNSEEN, dtype=values.dtype)
    out[pixels] = values
    return out


def velocity_axis(path: str, get: Callable, axis: int, nchan: int) -> np.ndarray:
    """Channel-centre velocities (km/s) from the WCS keywords of FITS axis ``axis``.

    ``get(key, default)`` reads a header keyword; ``nchan`` is the length of the axis.
    ``v[i] = CRVAL + (i + 1 - CRPIX) * CDELT`` in ``CUNIT`` (m/s when absent), i = 0..nchan-1.
    """
    keys = [f"{k}{axis}" for k in ("CTYPE", "CRVAL", "CDELT", "CRPIX")]
    missing = [k for k in keys if get(k, None) is None]
    if missing:
        raise InputError(
            f"{path}: velocity axis keywords {missing} missing; expected CTYPE{axis} (VRAD), "
            f"CRVAL{axis}, CDELT{axis}, CRPIX{axis} (and CUNIT{axis}) describing the spectral "
            "axis"
        )
    ctype = str(get(keys[0], None)).strip().upper()
    if ctype not in VELOCITY_CTYPES:
        raise InputError(
            f"{path}: CTYPE{axis} is {ctype!r}; expected a velocity axis, one of {VELOCITY_CTYPES}"
        )
    cunit = str(get(f"CUNIT{axis}", "m/s")).strip().lower()
    scale = {"m/s": 1e-3, "m s-1": 1e-3, "km/s": 1.0, "km s-1": 1.0}.get(cunit)
    if scale is None:
        raise InputError(f"{path}: CUNIT{axis} is {cunit!r}; expected 'm/s' or 'km/s'")
    crval, cdelt, crpix = (number(path, k, get(k, None)) for k in keys[1:])
    if cdelt == 0.0 or not np.isfinite([crval, cdelt, crpix]).all():
        raise InputError(
            f"{path}: velocity axis CRVAL{axis}={crval}, CDELT{axis}={cdelt}, "
            f"CRPIX{axis}={crpix}; expected finite values and CDELT{axis} != 0"
        )
    return (crval + (np.arange(nchan) + 1.0 - crpix) * cdelt) * scale


def row_dtype(columns: Iterable[Column]) -> np.dtype:
    """Structured dtype of one table row (big-endian, FITS byte order)."""
    fields = []
    for name, code, repeat, _ in columns:
        dtype = TFORM_DTYPES[code]
        fields.append((name, dtype, (repeat,)) if repeat != 1 else (name, dtype))
    return np.dtype(fields)


def _table_header(columns: list[Column], nrows: int, cards: list[Card]) -> fits.Header:
    header = fits.Header()
    header["XTENSION"] = ("BINTABLE", "binary table extension")
    header["BITPIX"] = 8
    header["NAXIS"] = 2
    rowbytes = sum(np.dtype(TFORM_DTYPES[code]).itemsize * repeat for _, code, repeat, _ in columns)
    header["NAXIS1"] = (rowbytes, "width of table in bytes")
    header["NAXIS2"] = (nrows, "number of rows in table")
    header["PCOUNT"] = 0
    header["GCOUNT"] = 1
    header["TFIELDS"] = len(columns)
    for n, (name, code, repeat, unit) in enumerate(columns, start=1):
        header[f"TTYPE{n}"] = name
        header[f"TFORM{n}"] = f"{repeat}{code}" if repeat != 1 else code
        if unit is not None:
            header[f"TUNIT{n}"] = unit
    for key, value, comment in cards:
        header[key] = (value, comment)
    return header


def write_table_stream(
    path: str | os.PathLike,
    columns: list[Column],
    nrows: int,
    blocks: Iterable[dict[str, np.ndarray]],
    cards: list[Card],
    primary_cards: list[Card] | None = None,
) -> None:
    """Write a FITS file with one BINTABLE, streaming its rows block by block, atomically.

    Parameters
    ----------
    columns
        ``(name, code, repeat, unit)`` per column; code one of B, I, J, K, E, D.
    nrows
        Total number of rows; the blocks must add up to it.
    blocks
        Iterable of ``{name: (m,) or (m, repeat) array}`` consecutive row blocks.
    cards
        Extra ``(key, value, comment)`` header cards for the table (e.g.
        :func:`dustpred.inputs.healpix_maps.healpix_header`).
    primary_cards
        Extra cards for the primary header.

    Notes
    -----
    The file is written to a temporary file in the destination directory and moved into
    place only when complete, so an interrupted job leaves no valid-looking file. Output
    bytes depend only on the inputs (no date keyword), so the same data give the same bytes.
    """
    path = os.fspath(path)
    primary = fits.Header()
    primary["SIMPLE"] = True
    primary["BITPIX"] = 8
    primary["NAXIS"] = 0
    primary["EXTEND"] = True
    for key, value, comment in primary_cards or []:
        primary[key] = (value, comment)
    header = _table_header(columns, nrows, cards)
    dtype = row_dtype(columns)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(primary.tostring().encode("ascii"))
        fh.write(header.tostring().encode("ascii"))
        written = 0
        for block in blocks:
            m = len(next(iter(block.values())))
            rec = np.empty(m, dtype=dtype)
            for name, *_ in columns:
                rec[name] = block[name]
            fh.write(rec.tobytes())
            written += m
        if written != nrows:
            raise ValueError(f"{path}: wrote {written} rows, expected {nrows}")
        pad = (-written * dtype.itemsize) % 2880
        fh.write(b"\0" * pad)
