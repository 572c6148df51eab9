"""Validated FITS readers and writers for HEALPix maps and HEALPix velocity cubes.

All readers return RING-ordered arrays in galactic coordinates and raise
:class:`dustpred.errors.InputError` naming the file, what was found and what was expected.

HEALPix map tables (Planck layout)
----------------------------------
A HEALPix map is a FITS binary table (the first BINTABLE extension) with header keywords
``PIXTYPE = 'HEALPIX'``, ``ORDERING`` (``RING`` or ``NESTED``), ``NSIDE`` and a coordinate
system ``COORDSYS`` (``G``/``GALACTIC``; ``SKYCOORD`` is accepted as a synonym). A column
holds the map either one pixel per row (``TFORM = 'E'``, as in the Planck Commander dust
map) or ``r`` pixels per row (``TFORM = '1024E'``, the HEALPix-package convention); in both
cases the flattened column has ``12 NSIDE**2`` values. Units come from ``TUNITn``.

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

Rows are spectra, so extracting a set of channels reads the table once, in blocks of rows:
the whole cube (47 GB for HI4PI at Nside 1024 with 933 channels) is never held in memory,
only the requested ``(npix, k)`` output.

HI velocity cube as an all-sky image (HI4PI's ``ALLSKY/GAL/CAR.fits``)
-------------------------------------------------------------------
A FITS file whose first HDU with data is a 3-D image ``(velocity, latitude, longitude)``
(NAXIS1 = longitude) with ``CTYPE1/2 = 'GLON-xxx'/'GLAT-xxx'`` covering all 360° of
longitude and all latitudes, a velocity axis ``CTYPE3/CRVAL3/CDELT3/CRPIX3/CUNIT3`` and
``BUNIT = 'K'``. Each requested channel plane (contiguous in the file, so only those bytes
are read) is interpolated bilinearly (periodic in longitude, the edge row beyond the last
latitude row) at the centres of the coarsest HEALPix grid whose pixels are no larger than
the image's (5' pixels -> Nside 1024), using the file's WCS. Equatorial axes are refused.

Bad values
----------
Non-finite values and HEALPix ``UNSEEN`` (-1.6375e30) pixels are refused (InputError giving
their count): every product this project reads is a full-sky map without gaps, so a gap
means a damaged or wrong file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import healpy as hp
import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from dustpred.atomic import atomic_path
from dustpred.errors import InputError

log = logging.getLogger(__name__)

UNSEEN = hp.UNSEEN
GALACTIC_NAMES = ("G", "GAL", "GALACTIC")
VELOCITY_CTYPES = ("VRAD", "VELO-LSR", "VELO", "VOPT", "VELO-LSRK")
HI_COLUMN = "TB"

# Unit spellings found in Planck/HEALPix headers -> factor to the canonical unit.
DUST_UNITS = {"uk_rj": 1.0, "muk_rj": 1.0, "µk_rj": 1.0, "mk_rj": 1e3, "k_rj": 1e6}
HI_UNITS = {"k": 1.0, "kelvin": 1.0, "k (tb)": 1.0, "mk": 1e-3}

_TFORM = re.compile(r"^\s*(\d*)\s*([LBIJKED])")
_TFORM_DTYPES = {"L": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
# Rows per block when streaming tables: bounds memory to a few hundred MB for any file.
_BLOCK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------
# Low-level table access
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """Where a binary table's rows live in a file, and its header."""

    path: str
    header: fits.Header
    primary: fits.Header
    offset: int
    nrows: int
    row_dtype: np.dtype
    names: tuple[str, ...]

    def memmap(self) -> np.memmap:
        return np.memmap(
            self.path, dtype=self.row_dtype, mode="r", offset=self.offset, shape=(self.nrows,)
        )

    def column_index(self, name: str) -> int:
        upper = [n.upper() for n in self.names]
        if name.upper() not in upper:
            raise InputError(
                f"{self.path}: no column {name!r} in the HEALPix table; "
                f"found columns {list(self.names)}, expected one named {name!r}"
            )
        return upper.index(name.upper())


@contextlib.contextmanager
def _quiet_truncation():
    """Silence astropy's truncation warning: a truncated file is reported as an InputError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        yield


def _open_table(path: str | os.PathLike) -> _Table:
    """Parse the headers of the first BINTABLE in ``path`` and check the file is complete."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found; expected a FITS file")
    size = os.path.getsize(path)
    try:
        with _quiet_truncation(), fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            primary = hdul[0].header.copy()
            for index in range(1, 64):
                try:
                    hdu = hdul[index]
                except IndexError:
                    break
                if hdu.header.get("XTENSION", "").strip() == "BINTABLE":
                    header = hdu.header.copy()
                    offset = hdul.fileinfo(index)["datLoc"]
                    break
            else:
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

    nrows = int(header["NAXIS2"])
    rowbytes = int(header["NAXIS1"])
    fields = []
    names = []
    for n in range(1, int(header["TFIELDS"]) + 1):
        name = str(header.get(f"TTYPE{n}", f"COL{n}")).strip()
        tform = str(header[f"TFORM{n}"])
        match = _TFORM.match(tform)
        if match is None:
            raise InputError(
                f"{path}: column {name!r} has TFORM {tform!r}; expected a numeric column "
                "(L, B, I, J, K, E or D)"
            )
        repeat = int(match.group(1) or 1)
        dtype = _TFORM_DTYPES[match.group(2)]
        fields.append((name, dtype, (repeat,)) if repeat != 1 else (name, dtype))
        names.append(name)
    row_dtype = np.dtype(fields)
    if row_dtype.itemsize != rowbytes:
        raise InputError(
            f"{path}: binary table rows are {rowbytes} bytes (NAXIS1) but the columns "
            f"{names} add up to {row_dtype.itemsize}; expected them to agree"
        )
    needed = offset + nrows * rowbytes
    if size < needed:
        raise InputError(
            f"{path}: file is truncated: found {size} bytes, expected at least {needed} "
            f"({nrows} rows of {rowbytes} bytes after the header)"
        )
    return _Table(path, header, primary, offset, nrows, row_dtype, tuple(names))


def _keyword(table: _Table, key: str, default=None):
    """A keyword from the table header, else the primary header, else ``default``."""
    for header in (table.header, table.primary):
        if key in header:
            return header[key]
    return default


@dataclass(frozen=True)
class HealpixInfo:
    """Pixelisation of a HEALPix table: Nside, ordering and the pixel range it holds."""

    nside: int
    nested: bool
    firstpix: int
    lastpix: int

    @property
    def npix(self) -> int:
        return 12 * self.nside**2


def _healpix_info(table: _Table, coordsys_if_missing: str | None) -> HealpixInfo:
    path = table.path
    pixtype = str(_keyword(table, "PIXTYPE", "")).strip().upper()
    if pixtype != "HEALPIX":
        raise InputError(f"{path}: PIXTYPE is {pixtype or 'missing'!r}; expected 'HEALPIX'")
    nside = _keyword(table, "NSIDE")
    if nside is None or not hp.isnsideok(int(nside), nest=True):
        raise InputError(f"{path}: NSIDE is {nside!r}; expected a power of 2")
    nside = int(nside)
    ordering = str(_keyword(table, "ORDERING", "")).strip().upper()
    if ordering not in ("RING", "NESTED", "NEST"):
        raise InputError(f"{path}: ORDERING is {ordering or 'missing'!r}; expected RING or NESTED")
    coordsys = _keyword(table, "COORDSYS", _keyword(table, "SKYCOORD"))
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
    firstpix = int(_keyword(table, "FIRSTPIX", 0))
    lastpix = int(_keyword(table, "LASTPIX", npix - 1))
    if not 0 <= firstpix <= lastpix < npix:
        raise InputError(
            f"{path}: FIRSTPIX..LASTPIX is {firstpix}..{lastpix}; expected a range inside "
            f"0..{npix - 1} (Nside {nside})"
        )
    return HealpixInfo(nside, ordering != "RING", firstpix, lastpix)


def _check_values(path: str, what: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"{path}: {what} has {int(bad.sum())} non-finite (NaN/inf) values; "
            "expected finite values everywhere"
        )
    unseen = np.isclose(values, UNSEEN, rtol=1e-5, atol=0.0)
    if unseen.any():
        raise InputError(
            f"{path}: {what} has {int(unseen.sum())} UNSEEN pixels (-1.6375e30); "
            "expected a full-sky map without gaps"
        )


def _unit_factor(path: str, column: str, found: str | None, units: dict[str, float]) -> float:
    key = (found or "").strip().lower().replace(" ", "")
    table = {k.replace(" ", ""): v for k, v in units.items()}
    if key not in table:
        raise InputError(
            f"{path}: column {column!r} has unit {found!r}; expected one of {sorted(units)}"
        )
    return table[key]


def _scale(table: _Table, n: int, values: np.ndarray) -> np.ndarray:
    """Apply TSCALn/TZEROn when present (FITS integer columns may carry them)."""
    scal = table.header.get(f"TSCAL{n}", 1.0)
    zero = table.header.get(f"TZERO{n}", 0.0)
    if scal != 1.0 or zero != 0.0:
        return values * scal + zero
    return values


# --------------------------------------------------------------------------------------
# HEALPix maps (dust, mask)
# --------------------------------------------------------------------------------------


def read_healpix_map(
    path: str | os.PathLike,
    column: str,
    *,
    units: dict[str, float] | None = None,
    coordsys_if_missing: str | None = None,
    dtype: type = np.float64,
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

    Returns
    -------
    numpy.ndarray
        ``(12 Nside**2,)`` map in RING order, in the canonical unit.
    """
    table = _open_table(path)
    info = _healpix_info(table, coordsys_if_missing)
    n = table.column_index(column) + 1
    name = table.names[n - 1]
    if info.firstpix != 0 or info.lastpix != info.npix - 1:
        raise InputError(
            f"{table.path}: map covers pixels {info.firstpix}..{info.lastpix}; expected a "
            f"full-sky map 0..{info.npix - 1} (Nside {info.nside})"
        )
    factor = 1.0
    if units is not None:
        factor = _unit_factor(table.path, name, table.header.get(f"TUNIT{n}"), units)
    rows = table.memmap()
    values = np.asarray(rows[name]).reshape(-1)
    if values.size != info.npix:
        raise InputError(
            f"{table.path}: column {name!r} holds {values.size} values; expected "
            f"npix = 12 * {info.nside}**2 = {info.npix}"
        )
    values = _scale(table, n, values.astype(dtype))
    del rows
    _check_values(table.path, f"column {name!r}", values)
    if factor != 1.0:
        values *= factor
    if info.nested:
        values = hp.reorder(values, n2r=True)
    return values


# --------------------------------------------------------------------------------------
# HI velocity cube
# --------------------------------------------------------------------------------------


def _cube_files(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).iterdir() if p.name.lower().endswith(".fits"))
        if not files:
            raise InputError(f"{path}: directory has no *.fits files; expected the HI cube")
        return files
    return [path]


def _spectral_axis(path: str, get: Callable, axis: int, nchan: int) -> np.ndarray:
    """Channel-centre velocities (km/s) from the WCS keywords of FITS axis ``axis``;
    ``get(key, default)`` reads a header keyword."""
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


@dataclass(frozen=True)
class _CubePart:
    table: _Table
    info: HealpixInfo
    column: str
    nchan: int
    velocities: np.ndarray
    factor: float  # column unit -> K


def _cube_parts(
    path: str | os.PathLike, column: str | None, coordsys_if_missing
) -> list[_CubePart]:
    parts = []
    for file in _cube_files(path):
        table = _open_table(file)
        info = _healpix_info(table, coordsys_if_missing)
        name = column or HI_COLUMN
        n = table.column_index(name) + 1
        name = table.names[n - 1]
        shape = table.row_dtype[name].shape
        nchan = shape[0] if shape else 1
        if nchan < 2:
            raise InputError(
                f"{file}: column {name!r} holds {nchan} value per row; expected one spectrum "
                "(nchan > 1 values) per HEALPix pixel"
            )
        expected_rows = info.lastpix - info.firstpix + 1
        if table.nrows != expected_rows:
            raise InputError(
                f"{file}: table has {table.nrows} rows; expected one per pixel, "
                f"{expected_rows} for FIRSTPIX..LASTPIX = {info.firstpix}..{info.lastpix} "
                f"(npix = 12 * {info.nside}**2 = {info.npix} for a full-sky file)"
            )
        parts.append(
            _CubePart(
                table,
                info,
                name,
                nchan,
                _spectral_axis(table.path, partial(_keyword, table), 1, nchan),
                _unit_factor(file, name, table.header.get(f"TUNIT{n}"), HI_UNITS),
            )
        )
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


# --- HI cube as a 3-D image (HI4PI's all-sky plate-carree product) ------------------------


@dataclass(frozen=True)
class _ImageCube:
    """A (velocity, latitude, longitude) FITS image cube in galactic coordinates."""

    path: str
    hdu: int
    header: fits.Header
    nchan: int
    ny: int
    nx: int
    velocities: np.ndarray
    factor: float
    nside: int


def _find_image_cube(path: str | os.PathLike) -> _ImageCube | None:
    """The 3-D image cube in ``path``, or None when the file holds a HEALPix table instead."""
    path = os.fspath(path)
    if os.path.isdir(path) or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    try:
        with _quiet_truncation(), fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            found = None
            for index in range(0, 64):
                try:
                    hdu = hdul[index]
                except IndexError:
                    break
                header = hdu.header
                if header.get("XTENSION", "IMAGE").strip() == "BINTABLE":
                    return None
                if header.get("NAXIS", 0) == 3:
                    found = (index, header.copy(), hdul.fileinfo(index)["datLoc"])
                    break
    except Exception:  # not FITS at all: let the table reader report it
        return None
    if found is None:
        return None
    index, header, offset = found
    nx, ny, nchan = (int(header[f"NAXIS{i}"]) for i in (1, 2, 3))
    needed = offset + nx * ny * nchan * abs(int(header["BITPIX"])) // 8
    if size < needed:
        raise InputError(
            f"{path}: file is truncated: found {size} bytes, expected at least {needed} "
            f"(a {nx} x {ny} x {nchan} image cube)"
        )
    lon, lat = (str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2))
    if not (lon.startswith("GLON") and lat.startswith("GLAT")):
        raise InputError(
            f"{path}: image axes are {lon!r}, {lat!r}; expected galactic GLON/GLAT axes "
            "(an equatorial cube must be regridded to galactic first)"
        )
    velocities = _spectral_axis(path, header.get, 3, nchan)
    factor = _unit_factor(path, "BUNIT", header.get("BUNIT"), HI_UNITS)
    step_lon, step_lat = abs(float(header["CDELT1"])), abs(float(header["CDELT2"]))
    if abs(nx * step_lon - 360.0) > step_lon:
        raise InputError(
            f"{path}: longitude axis spans {nx * step_lon:.3f} deg; expected the full 360 deg "
            "(an all-sky cube)"
        )
    # The coarsest HEALPix grid whose pixels are no larger than the image's pixels.
    nside = 1
    while hp.nside2resol(nside, arcmin=True) > 60.0 * min(step_lon, step_lat) and nside < 8192:
        nside *= 2
    return _ImageCube(path, index, header, nchan, ny, nx, velocities, factor, nside)


def _bilinear_weights(cube: _ImageCube, pixels_ring: np.ndarray):
    """Image indices and weights interpolating the cube at HEALPix pixel centres."""
    from astropy.wcs import WCS

    theta, phi = hp.pix2ang(cube.nside, pixels_ring)
    lon, lat = np.degrees(phi), 90.0 - np.degrees(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(cube.header).celestial
    x, y = wcs.all_world2pix(lon, lat, 0)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError(f"{cube.path}: the WCS does not map every sky position to the image")
    if y.min() < -0.5 - 1e-6 or y.max() > cube.ny - 0.5 + 1e-6:
        raise InputError(
            f"{cube.path}: latitudes span pixel rows {y.min():.1f}..{y.max():.1f}; expected "
            f"the whole sky inside rows -0.5..{cube.ny - 0.5} (an all-sky cube)"
        )
    x0 = np.floor(x)
    fx = (x - x0).astype(np.float32)
    x0 = np.mod(x0, cube.nx).astype(np.int64)
    x1 = np.mod(x0 + 1, cube.nx)
    y = np.clip(y, 0.0, cube.ny - 1.0)
    y0 = np.minimum(np.floor(y), cube.ny - 2).astype(np.int64)
    fy = (y - y0).astype(np.float32)
    return y0, x0, x1, fx, fy


def _interpolate_plane(plane, weights) -> np.ndarray:
    y0, x0, x1, fx, fy = weights
    top = plane[y0, x0] * (1 - fx) + plane[y0, x1] * fx
    bottom = plane[y0 + 1, x0] * (1 - fx) + plane[y0 + 1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _read_image_channels(cube: _ImageCube, idx: np.ndarray, pixels_ring: np.ndarray, out):
    weights = _bilinear_weights(cube, pixels_ring)
    with fits.open(cube.path, memmap=True) as hdul:
        section = hdul[cube.hdu].section
        for j, chan in enumerate(idx):
            # Channel planes are contiguous in the file: only these bytes are read.
            plane = np.asarray(section[int(chan), :, :], dtype=np.float32)
            _check_values(cube.path, f"channel {int(chan)}", plane)
            out[:, j] = _interpolate_plane(plane, weights) * np.float32(cube.factor)
            if j % 16 == 0:
                log.info("%s: channel %d interpolated to Nside %d", cube.path, chan, cube.nside)
    return out


def hi_velocity_axis(
    path: str | os.PathLike, *, column: str | None = None, coordsys_if_missing: str | None = None
) -> np.ndarray:
    """Velocities of the HI cube's channels.

    Parameters
    ----------
    path
        HI cube: a FITS file or a directory of FITS files (see module docstring).

    Returns
    -------
    numpy.ndarray
        ``(nchan,)`` float64 channel-centre velocities in km/s, in file order.
    """
    image = _find_image_cube(path)
    if image is not None:
        return image.velocities.copy()
    return _cube_parts(path, column, coordsys_if_missing)[0].velocities.copy()


def hi_nside(
    path: str | os.PathLike, *, column: str | None = None, coordsys_if_missing: str | None = None
) -> int:
    """Nside of the HI cube (header only); for an image cube, the Nside it is sampled at."""
    image = _find_image_cube(path)
    if image is not None:
        return image.nside
    return _cube_parts(path, column, coordsys_if_missing)[0].info.nside


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


def read_hi_channels(
    path: str | os.PathLike,
    channel_indices: Sequence[int] | np.ndarray,
    *,
    column: str | None = None,
    coordsys_if_missing: str | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read selected channels of the HI cube as RING-ordered maps.

    Parameters
    ----------
    path
        HI cube: a FITS file or a directory of FITS files (see module docstring).
    channel_indices
        ``(k,)`` 0-based channel indices (see :func:`hi_velocity_axis`), in the order wanted.
    column
        Spectrum column name (default ``'TB'``).
    out
        Optional preallocated ``(npix, k)`` float32 array (e.g. a memory map) to fill.

    Returns
    -------
    numpy.ndarray
        ``(12 Nside**2, k)`` float32 brightness temperatures in K, RING order.
        The cube is streamed in blocks of rows; memory beyond ``out`` stays ~100 MB.
    """
    image = _find_image_cube(path)
    parts = [] if image is not None else _cube_parts(path, column, coordsys_if_missing)
    nchan = image.nchan if image is not None else parts[0].nchan
    nside = image.nside if image is not None else parts[0].info.nside
    idx = np.asarray(channel_indices, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= nchan:
        raise InputError(
            f"{os.fspath(path)}: channel indices {idx.min() if idx.size else None}.."
            f"{idx.max() if idx.size else None} requested; expected indices in "
            f"0..{nchan - 1} ({nchan} channels)"
        )
    npix = 12 * nside**2
    if out is None:
        out = np.empty((npix, idx.size), dtype=np.float32)
    elif out.shape != (npix, idx.size):
        raise ValueError(f"out has shape {out.shape}; expected {(npix, idx.size)}")
    if image is not None:
        return _read_image_channels(image, idx, np.arange(npix), out)
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
                values = np.asarray(rows[part.column][:, idx], dtype=np.float32)
                del rows
                _check_values(
                    part.table.path, f"rows {start}..{stop - 1} of column {part.column!r}", values
                )
                if factor != 1.0:
                    values *= np.float32(factor)
                pix = np.arange(part.info.firstpix + start, part.info.firstpix + stop)
                if part.info.nested:
                    pix = hp.nest2ring(part.info.nside, pix)
                out[pix] = values
    return out


def read_hi_spectra(
    path: str | os.PathLike,
    pixels_ring: Sequence[int] | np.ndarray,
    *,
    column: str | None = None,
    coordsys_if_missing: str | None = None,
) -> np.ndarray:
    """Full spectra of selected pixels of the HI cube.

    Parameters
    ----------
    pixels_ring
        ``(n,)`` RING pixel indices at the cube's Nside.

    Returns
    -------
    numpy.ndarray
        ``(n, nchan)`` float32 brightness temperatures in K (channels as in
        :func:`hi_velocity_axis`).
    """
    image = _find_image_cube(path)
    if image is not None:
        pix = np.asarray(pixels_ring, dtype=np.int64).reshape(-1)
        out = np.empty((pix.size, image.nchan), dtype=np.float32)
        return _read_image_channels(image, np.arange(image.nchan), pix, out)
    parts = _cube_parts(path, column, coordsys_if_missing)
    first = parts[0]
    pix = np.asarray(pixels_ring, dtype=np.int64).reshape(-1)
    if pix.size and (pix.min() < 0 or pix.max() >= first.info.npix):
        raise InputError(
            f"{os.fspath(path)}: pixel indices outside 0..{first.info.npix - 1} requested"
        )
    file_pix = hp.ring2nest(first.info.nside, pix) if first.info.nested else pix
    out = np.empty((pix.size, first.nchan), dtype=np.float32)
    for part in parts:
        sel = np.flatnonzero((file_pix >= part.info.firstpix) & (file_pix <= part.info.lastpix))
        if sel.size == 0:
            continue
        rows = part.table.memmap()
        values = np.asarray(rows[part.column][file_pix[sel] - part.info.firstpix], np.float32)
        _check_values(part.table.path, f"column {part.column!r}", values)
        out[sel] = values * np.float32(part.factor)
        del rows
    return out


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


def healpix_header(
    nside: int,
    *,
    nested: bool,
    coordsys: str = "G",
    firstpix: int = 0,
    lastpix: int | None = None,
    extra: dict | None = None,
) -> list[tuple[str, object, str]]:
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


def _table_header(
    columns: list[tuple[str, str, int, str | None]], nrows: int, cards
) -> fits.Header:
    header = fits.Header()
    header["XTENSION"] = ("BINTABLE", "binary table extension")
    header["BITPIX"] = 8
    header["NAXIS"] = 2
    rowbytes = sum(
        np.dtype(_TFORM_DTYPES[code]).itemsize * repeat for _, code, repeat, _ in columns
    )
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


def _row_dtype(columns) -> np.dtype:
    fields = []
    for name, code, repeat, _ in columns:
        dtype = _TFORM_DTYPES[code]
        fields.append((name, dtype, (repeat,)) if repeat != 1 else (name, dtype))
    return np.dtype(fields)


def write_table_stream(
    path: str | os.PathLike,
    columns: list[tuple[str, str, int, str | None]],
    nrows: int,
    blocks: Iterable[dict[str, np.ndarray]],
    cards: list[tuple[str, object, str]],
    primary_cards: list[tuple[str, object, str]] | None = None,
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
        Extra ``(key, value, comment)`` header cards for the table (e.g. :func:`healpix_header`).

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
    dtype = _row_dtype(columns)
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


def hi_axis_cards(velocities_kms: np.ndarray) -> list[tuple[str, object, str]]:
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
