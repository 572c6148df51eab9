"""Low-level FITS binary tables: find a file's first BINTABLE, map its rows, stream new ones.

This is the one place that knows the byte layout of a FITS binary table; the HEALPix map
reader (:mod:`dustpred.healpix_maps`) and the HI cube (:mod:`dustpred.hi_cube`) build on it.

Reading: :func:`open_bintable` parses the headers of the first ``BINTABLE`` extension and
checks that the file holds all of its rows; :class:`BinTable` then gives the rows as a
structured memory map (numeric columns only: TFORM codes ``L B I J K E D``, big-endian, with
an optional repeat count such as ``1024E``). Header keywords are looked up in the table
header, then in the primary header (:func:`keyword`); :func:`velocity_axis` reads a
spectral axis from WCS keywords (``CTYPEn = 'VRAD'``, ``CRVALn``, ``CDELTn``, ``CRPIXn``,
``CUNITn``).

Writing: :func:`write_table_stream` writes a primary header and one BINTABLE whose rows
arrive block by block, so a table larger than memory can be written; the output is atomic
and its bytes depend only on the inputs (no date keyword).

Damaged or truncated files raise :class:`dustpred.errors.InputError` naming the file, what
was found and what was expected.
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

#: ``(name, code, repeat, unit)`` of one table column; ``unit`` None writes no ``TUNITn``.
Column = tuple[str, str, int, str | None]
#: ``(key, value, comment)`` of one header card.
Card = tuple[str, object, str]

_TFORM = re.compile(r"^\s*(\d*)\s*([LBIJKED])")
TFORM_DTYPES = {"L": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
VELOCITY_CTYPES = ("VRAD", "VELO-LSR", "VELO", "VOPT", "VELO-LSRK")
# Extensions searched for the first BINTABLE (and, in dustpred.hi_cube, for an image cube).
MAX_HDUS = 64


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


def _first_bintable(path: str) -> tuple[fits.Header, fits.Header, int]:
    """Primary header, table header and data offset (bytes) of the first BINTABLE."""
    try:
        with quiet_truncation(), fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            primary = hdul[0].header.copy()
            for index in range(1, MAX_HDUS):
                try:
                    hdu = hdul[index]
                except IndexError:
                    break
                if hdu.header.get("XTENSION", "").strip() == "BINTABLE":
                    return primary, hdu.header.copy(), hdul.fileinfo(index)["datLoc"]
            raise InputError(
                f"{path}: no BINTABLE extension found; expected a HEALPix binary table "
                "in the first extension"
            )
    except InputError:
        raise
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError on damaged files
        raise InputError(
            f"{path}: not a readable FITS file ({type(exc).__name__}: {exc}); "
            "expected a FITS file with a HEALPix binary table (truncated download?)"
        ) from exc


def _header_columns(path: str, header: fits.Header) -> list[Column]:
    """The ``(name, code, repeat, None)`` columns that the TTYPEn/TFORMn keywords declare."""
    columns = []
    for n in range(1, int(header["TFIELDS"]) + 1):
        name = str(header.get(f"TTYPE{n}", f"COL{n}")).strip()
        tform = str(header[f"TFORM{n}"])
        match = _TFORM.match(tform)
        if match is None:
            raise InputError(
                f"{path}: column {name!r} has TFORM {tform!r}; expected a numeric column "
                "(L, B, I, J, K, E or D)"
            )
        columns.append((name, match.group(2), int(match.group(1) or 1), None))
    return columns


def open_bintable(path: str | os.PathLike) -> BinTable:
    """Parse the headers of the first BINTABLE in ``path`` and check the file is complete.

    Raises
    ------
    dustpred.errors.InputError
        Missing, unreadable or truncated file; no BINTABLE; a non-numeric column; a row
        width (``NAXIS1``) that disagrees with the columns.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found; expected a FITS file")
    size = os.path.getsize(path)
    primary, header, offset = _first_bintable(path)
    nrows = int(header["NAXIS2"])
    rowbytes = int(header["NAXIS1"])
    columns = _header_columns(path, header)
    names = [name for name, *_ in columns]
    dtype = row_dtype(columns)
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
    return BinTable(path, header, primary, offset, nrows, dtype, tuple(names))


def keyword(table: BinTable, key: str, default=None):
    """A keyword from the table header, else the primary header, else ``default``."""
    for header in (table.header, table.primary):
        if key in header:
            return header[key]
    return default


def apply_scale(table: BinTable, n: int, values: np.ndarray) -> np.ndarray:
    """Apply TSCALn/TZEROn of column ``n`` (1-based) when present (integer columns carry them)."""
    scal = table.header.get(f"TSCAL{n}", 1.0)
    zero = table.header.get(f"TZERO{n}", 0.0)
    if scal != 1.0 or zero != 0.0:
        return values * scal + zero
    return values


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
    crval, cdelt, crpix = (float(get(k, None)) for k in keys[1:])
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
        :func:`dustpred.healpix_maps.healpix_header`).
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
