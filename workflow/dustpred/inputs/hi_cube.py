"""The HI velocity cube in its two layouts, opened once: :func:`open_hi_cube` -> :class:`HICube`.

:func:`open_hi_cube` decides the layout, validates every header and returns an
:class:`HICube` that knows its layout, channel velocities (km/s) and Nside, and reads
channels (:meth:`HICube.read_channels`, RING maps) or spectra
(:meth:`HICube.read_spectra`). Bad files raise :class:`dustpred.errors.InputError` naming
the file, what was found and what was expected; values are checked as in
:mod:`dustpred.inputs.healpix_maps` (no NaN/inf, no UNSEEN).

HEALPix velocity cube (the layout this project reads and writes for HI)
-----------------------------------------------------------------------
One or several FITS files; each holds, in its first BINTABLE extension, one row per
HEALPix pixel and one vector column (default ``TB``) with the brightness temperature
spectrum of that pixel (``TFORM = '<nchan>E'``, ``TUNIT = 'K'``). Header keywords:

- ``PIXTYPE = 'HEALPIX'``, ``ORDERING``, ``NSIDE``, ``COORDSYS = 'G'``,
  ``FIRSTPIX``/``LASTPIX`` (0-based, inclusive; default the full sky): the rows are pixels
  FIRSTPIX..LASTPIX in the file's ordering, so a large cube may be split into several
  files of consecutive pixel ranges (give the directory; all ``*.fits`` in it are read and
  must tile 0..12 NSIDE**2 - 1 exactly once);
- the spectral axis: ``CTYPE1 = 'VRAD'`` (or ``VELO-LSR``/``VOPT``/``VELO``),
  ``CUNIT1`` (``m/s`` or ``km/s``; ``m/s`` if absent, the FITS default), ``CRVAL1``,
  ``CDELT1``, ``CRPIX1`` (1-based reference channel):
  ``v[i] = CRVAL1 + (i + 1 - CRPIX1) * CDELT1`` for channel ``i = 0 .. nchan-1``.

The column may be stored as scaled integers (``TFORM = '<nchan>I'`` with ``TSCAL1``/
``TZERO1``, applied on reading; ``TNULL1`` values are blanks, refused like UNSEEN).
Explicit-index tables (``INDXSCHM = 'EXPLICIT'``) and gzip-compressed files are refused.

Rows are spectra, so extracting a set of channels reads the table once, in blocks of rows:
the whole cube (47 GB for HI4PI at Nside 1024 with 933 channels) is never held in memory,
only the requested ``(npix, k)`` output. :func:`write_hi_cube` writes this layout.

HI velocity cube as an all-sky image (HI4PI's ``ALLSKY/GAL/CAR.fits``)
-------------------------------------------------------------------
A FITS file whose first HDU with data is a 3-D image ``(velocity, latitude, longitude)``
(NAXIS1 = longitude) with ``CTYPE1/2 = 'GLON-xxx'/'GLAT-xxx'`` covering all 360° of
longitude and all latitudes, a velocity axis ``CTYPE3/CRVAL3/CDELT3/CRPIX3/CUNIT3`` and
``BUNIT = 'K'``; integer data are scaled by ``BSCALE``/``BZERO`` and ``BLANK`` values are
refused like UNSEEN. Each requested channel plane (contiguous in the file, so only those bytes
are read) is interpolated bilinearly (periodic in longitude, the edge row beyond the last
latitude row) at the centres of the coarsest HEALPix grid whose pixels are no larger than
the image's (5' pixels -> Nside 1024), using the file's WCS. Equatorial axes are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import healpy as hp
import numpy as np

from dustpred.errors import InputError
from dustpred.fits.table import (
    BinTable,
    Card,
    decode,
    keyword,
    open_bintable,
    velocity_axis,
    write_table_stream,
)
from dustpred.inputs.healpix_maps import (
    HealpixInfo,
    check_values,
    healpix_header,
    healpix_info,
    unit_factor,
)
from dustpred.inputs.hi_car import ImageCube, find_image_cube, read_image_channels

HI_COLUMN = "TB"
# Unit spellings of HI brightness temperature -> factor to K.
HI_UNITS = {"k": 1.0, "kelvin": 1.0, "k (tb)": 1.0, "mk": 1e-3}
# Rows per block when streaming tables: bounds memory to a few hundred MB for any file.
_BLOCK_BYTES = 64 * 2**20


# --- the HEALPix table layout (the image layout is in dustpred.inputs.hi_car) ------------------


def _cube_files(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        names = [p for p in Path(path).iterdir() if p.is_file()]
        files = sorted(str(p) for p in names if p.name.lower().endswith(".fits"))
        gzipped = [p.name for p in names if p.name.lower().endswith((".fits.gz", ".fit.gz"))]
        if not files and gzipped:
            raise InputError(
                f"{path}: directory holds {len(gzipped)} gzip-compressed file(s) "
                f"({gzipped[0]}, ...) and no *.fits; expected uncompressed *.fits files: "
                f"run `gunzip {path}/*.gz`"
            )
        if not files:
            raise InputError(f"{path}: directory has no *.fits files; expected the HI cube")
        return files
    return [path]


@dataclass(frozen=True)
class _CubePart:
    table: BinTable
    info: HealpixInfo
    column: str
    nchan: int
    velocities: np.ndarray
    factor: float  # column unit -> K


def _open_part(file: str, column: str | None, coordsys_if_missing: str | None) -> _CubePart:
    """One file of a HEALPix table cube: its pixel range, spectrum column and axis."""
    table = open_bintable(file)
    info = healpix_info(table, coordsys_if_missing)
    if info.explicit:
        raise InputError(
            f"{file}: INDXSCHM is 'EXPLICIT' (each row's pixel given by a PIXEL column); "
            "expected an implicit HEALPix table for the HI cube (rows are the pixels "
            "FIRSTPIX..LASTPIX in order): write the cube in pixel order"
        )
    name = column or HI_COLUMN
    n = table.column_index(name) + 1
    name = table.names[n - 1]
    shape = table.row_dtype[name].shape
    nchan = shape[0] if shape else 1
    if nchan < 2:
        raise InputError(
            f"{file}: column {name!r} holds {nchan} value per row; expected one spectrum "
            "(nchan > 1 values) per HEALPix pixel (for an N_HI map set data.hi_kind: "
            "column_density)"
        )
    expected_rows = info.lastpix - info.firstpix + 1
    if table.nrows != expected_rows:
        raise InputError(
            f"{file}: table has {table.nrows} rows; expected one per pixel, "
            f"{expected_rows} for FIRSTPIX..LASTPIX = {info.firstpix}..{info.lastpix} "
            f"(npix = 12 * {info.nside}**2 = {info.npix} for a full-sky file)"
        )
    return _CubePart(
        table,
        info,
        name,
        nchan,
        velocity_axis(table.path, partial(keyword, table), 1, nchan),
        unit_factor(file, name, table.header.get(f"TUNIT{n}"), HI_UNITS),
    )


def _cube_parts(
    path: str | os.PathLike, column: str | None, coordsys_if_missing: str | None
) -> list[_CubePart]:
    """The files of a HEALPix table cube, sorted by first pixel, checked to share Nside,
    ordering and axis and to tile the sky exactly once."""
    parts = [_open_part(file, column, coordsys_if_missing) for file in _cube_files(path)]
    first = parts[0]
    for part in parts[1:]:
        if (part.info.nside, part.info.nested) != (first.info.nside, first.info.nested):
            raise InputError(
                f"{part.table.path}: Nside {part.info.nside}, nested={part.info.nested}; "
                f"expected the same as {first.table.path} (Nside {first.info.nside}, "
                f"nested={first.info.nested})"
            )
        if part.nchan != first.nchan or not np.allclose(part.velocities, first.velocities):
            raise InputError(
                f"{part.table.path}: velocity axis differs from {first.table.path}; expected "
                "all files of the cube to share one spectral axis"
            )
    parts.sort(key=lambda p: p.info.firstpix)
    expected = 0
    for part in parts:
        if part.info.firstpix != expected:
            raise InputError(
                f"{part.table.path}: starts at pixel {part.info.firstpix}; expected pixel "
                f"{expected} (the files of a cube must tile 0..npix-1 without gaps or overlaps)"
            )
        expected = part.info.lastpix + 1
    if expected != first.info.npix:
        raise InputError(
            f"{os.fspath(path)}: cube covers pixels 0..{expected - 1}; expected "
            f"0..{first.info.npix - 1} (npix = 12 * {first.info.nside}**2)"
        )
    return parts


# --- the opened cube ----------------------------------------------------------------------


@dataclass(frozen=True)
class HICube:
    """An HI cube whose headers have been read and validated; see :func:`open_hi_cube`.

    Attributes
    ----------
    path
        The file or directory it was opened from.
    layout
        ``'healpix'`` (HEALPix table file or directory of files) or ``'image'`` (all-sky
        CAR image, interpolated to HEALPix on reading).
    nside
        Nside of the cube; for an image cube, the Nside it is sampled at.
    velocities
        ``(nchan,)`` float64 channel-centre velocities in km/s, in file order (read-only).
    """

    path: str
    layout: Literal["healpix", "image"]
    nside: int
    velocities: np.ndarray
    _parts: tuple[_CubePart, ...] = field(default=(), repr=False)
    _image: ImageCube | None = field(default=None, repr=False)

    @property
    def nchan(self) -> int:
        return int(self.velocities.size)

    @property
    def npix(self) -> int:
        return 12 * self.nside**2

    def channels_in_range(self, vmin: float, vmax: float) -> np.ndarray:
        """:func:`channels_in_range` of this cube's axis (errors name the cube)."""
        return channels_in_range(self.velocities, vmin, vmax, source=self.path)

    def read_channels(
        self, channel_indices: Sequence[int] | np.ndarray, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Read selected channels as RING-ordered maps.

        Parameters
        ----------
        channel_indices
            ``(k,)`` 0-based channel indices (into :attr:`velocities`), in the order wanted.
        out
            Optional preallocated ``(npix, k)`` float32 array (e.g. a memory map) to fill.

        Returns
        -------
        numpy.ndarray
            ``(12 Nside**2, k)`` float32 brightness temperatures in K, RING order.
            The cube is streamed in blocks of rows; memory beyond ``out`` stays ~100 MB.
        """
        idx = np.asarray(channel_indices, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.nchan:
            raise InputError(
                f"{self.path}: channel indices {idx.min() if idx.size else None}.."
                f"{idx.max() if idx.size else None} requested; expected indices in "
                f"0..{self.nchan - 1} ({self.nchan} channels)"
            )
        if out is None:
            out = np.empty((self.npix, idx.size), dtype=np.float32)
        elif out.shape != (self.npix, idx.size):
            raise ValueError(f"out has shape {out.shape}; expected {(self.npix, idx.size)}")
        if self._image is not None:
            return read_image_channels(self._image, idx, np.arange(self.npix), out)
        return _read_table_channels(self._parts, idx, out)

    def read_spectra(self, pixels_ring: Sequence[int] | np.ndarray) -> np.ndarray:
        """Full spectra of selected pixels.

        Parameters
        ----------
        pixels_ring
            ``(n,)`` RING pixel indices at the cube's Nside.

        Returns
        -------
        numpy.ndarray
            ``(n, nchan)`` float32 brightness temperatures in K (channels as in
            :attr:`velocities`).
        """
        pix = np.asarray(pixels_ring, dtype=np.int64).reshape(-1)
        if self._image is not None:
            out = np.empty((pix.size, self.nchan), dtype=np.float32)
            return read_image_channels(self._image, np.arange(self.nchan), pix, out)
        return _read_table_spectra(self.path, self._parts, pix)


def open_hi_cube(
    path: str | os.PathLike, *, column: str | None = None, coordsys_if_missing: str | None = None
) -> HICube:
    """Open the HI cube at ``path``: find its layout and validate its headers, once.

    Parameters
    ----------
    path
        A FITS file (HEALPix table or all-sky image) or a directory of HEALPix table files
        (see module docstring).
    column
        Spectrum column of a HEALPix table (default ``'TB'``); unused for an image.
    coordsys_if_missing
        Coordinate system to assume for tables without ``COORDSYS``; ``None`` refuses.

    Returns
    -------
    HICube
        Its layout, Nside and velocities; reads channels and spectra.
    """
    image = find_image_cube(path, HI_UNITS)
    if image is not None:
        return HICube(
            os.fspath(path), "image", image.nside, _read_only(image.velocities), _image=image
        )
    parts = tuple(_cube_parts(path, column, coordsys_if_missing))
    first = parts[0]
    velocities = _read_only(first.velocities)
    return HICube(os.fspath(path), "healpix", first.info.nside, velocities, _parts=parts)


def _read_only(values: np.ndarray) -> np.ndarray:
    values = np.array(values, dtype=np.float64)
    values.flags.writeable = False
    return values


def channels_in_range(
    velocities_kms: np.ndarray, vmin: float, vmax: float, *, source: str = "HI cube"
) -> np.ndarray:
    """Indices of the channels whose centre lies in ``[vmin, vmax]`` km/s, in increasing velocity.

    Raises InputError if the range is not inside the cube's velocity axis or holds no channel.
    """
    v = np.asarray(velocities_kms, dtype=float)
    tol = 1e-6 * max(1.0, float(np.abs(np.diff(v)).min()) if v.size > 1 else 1.0)
    lo, hi = float(v.min()), float(v.max())
    if vmin < lo - tol or vmax > hi + tol or vmin > vmax:
        raise InputError(
            f"{source}: velocity range [{vmin}, {vmax}] km/s requested; expected a range "
            f"inside the cube's axis [{lo:.3f}, {hi:.3f}] km/s"
        )
    idx = np.flatnonzero((v >= vmin - tol) & (v <= vmax + tol))
    if idx.size == 0:
        raise InputError(
            f"{source}: no channel centre in [{vmin}, {vmax}] km/s; expected at least one "
            f"(channel spacing {float(np.abs(np.diff(v)).min()):.3f} km/s)"
        )
    return idx[np.argsort(v[idx], kind="stable")]


def _read_table_channels(parts: Sequence[_CubePart], idx: np.ndarray, out: np.ndarray):
    """Fill ``out`` ``(npix, k)`` with channels ``idx`` of a HEALPix table cube."""
    for part in parts:
        factor = part.factor
        # Plain reads rather than a memory map: mapped pages of a 47 GB file would count
        # as resident memory of the job and hide its real footprint.
        rowbytes = part.table.row_dtype.itemsize
        block = max(1, _BLOCK_BYTES // rowbytes)
        with open(part.table.path, "rb") as fh:
            for start in range(0, part.table.nrows, block):
                stop = min(start + block, part.table.nrows)
                fh.seek(part.table.offset + start * rowbytes)
                rows = np.fromfile(fh, dtype=part.table.row_dtype, count=stop - start)
                if rows.size != stop - start:
                    raise InputError(
                        f"{part.table.path}: read {rows.size} rows at row {start}; expected "
                        f"{stop - start} (file truncated while reading?)"
                    )
                # TSCAL/TZERO applied, logicals 1/0, TNULL blanks UNSEEN (refused below).
                values = decode(part.table, part.column, rows[part.column][:, idx], np.float32)
                del rows
                check_values(
                    part.table.path, f"rows {start}..{stop - 1} of column {part.column!r}", values
                )
                if factor != 1.0:
                    values *= np.float32(factor)
                pix = np.arange(part.info.firstpix + start, part.info.firstpix + stop)
                if part.info.nested:
                    pix = hp.nest2ring(part.info.nside, pix)
                out[pix] = values
    return out


def _read_table_spectra(path: str, parts: Sequence[_CubePart], pix: np.ndarray) -> np.ndarray:
    """``(n, nchan)`` spectra of RING pixels ``pix`` of a HEALPix table cube."""
    first = parts[0]
    if pix.size and (pix.min() < 0 or pix.max() >= first.info.npix):
        raise InputError(f"{path}: pixel indices outside 0..{first.info.npix - 1} requested")
    file_pix = hp.ring2nest(first.info.nside, pix) if first.info.nested else pix
    out = np.empty((pix.size, first.nchan), dtype=np.float32)
    for part in parts:
        sel = np.flatnonzero((file_pix >= part.info.firstpix) & (file_pix <= part.info.lastpix))
        if sel.size == 0:
            continue
        rows = part.table.memmap()
        raw = rows[part.column][file_pix[sel] - part.info.firstpix]
        values = decode(part.table, part.column, raw, np.float32)
        check_values(part.table.path, f"column {part.column!r}", values)
        out[sel] = values * np.float32(part.factor)
        del rows
    return out


# --- writer of the HEALPix table layout ---------------------------------------------------


def hi_axis_cards(velocities_kms: np.ndarray) -> list[Card]:
    """Spectral-axis cards (CTYPE1='VRAD', m/s) for a uniformly spaced velocity axis."""
    v = np.asarray(velocities_kms, dtype=float)
    dv = float(v[1] - v[0])
    if not np.allclose(np.diff(v), dv, rtol=0, atol=1e-9 * max(1.0, abs(dv))):
        raise ValueError("velocity axis must be uniformly spaced")
    return [
        ("CTYPE1", "VRAD", "radio velocity (LSR)"),
        ("CUNIT1", "m/s", "unit of the spectral axis"),
        ("CRVAL1", float(v[0]) * 1e3, "velocity of the reference channel"),
        ("CDELT1", dv * 1e3, "channel spacing"),
        ("CRPIX1", 1.0, "reference channel (1-based)"),
        ("SPECSYS", "LSRK", "spectral reference frame"),
        ("NCHAN", int(v.size), "number of channels"),
    ]


def write_hi_cube(
    path: str | os.PathLike,
    nside: int,
    velocities_kms: np.ndarray,
    blocks: Iterable[np.ndarray],
    *,
    nested: bool = False,
    column: str = HI_COLUMN,
    extra: dict | None = None,
) -> None:
    """Write an HI cube in this module's layout, streaming pixel blocks.

    Parameters
    ----------
    nside
        HEALPix resolution.
    velocities_kms
        ``(nchan,)`` uniformly spaced channel centres in km/s.
    blocks
        Iterable of ``(m, nchan)`` float32 arrays (K), consecutive pixels in the given
        ordering, adding up to ``12 nside**2`` rows.
    """
    v = np.asarray(velocities_kms, dtype=float)
    cards = healpix_header(nside, nested=nested, extra=extra) + hi_axis_cards(v)
    columns = [(column, "E", int(v.size), "K")]
    write_table_stream(path, columns, 12 * nside**2, ({column: b} for b in blocks), cards)
