"""The HI cube as an all-sky image (HI4PI's ``ALLSKY/GAL/CAR.fits``), read as HEALPix maps.

One layout of :class:`dustpred.inputs.hi_cube.HICube` (see :mod:`dustpred.inputs.hi_cube` for the
layout's description): :func:`find_image_cube` recognises and validates the 3-D
``(velocity, latitude, longitude)`` galactic image, :func:`read_image_channels` interpolates
channel planes bilinearly at the pixel centres of the coarsest HEALPix grid whose pixels are
no larger than the image's, using the file's WCS.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import healpy as hp
import numpy as np
from astropy.io import fits

from dustpred.errors import InputError
from dustpred.fits.table import (
    MAX_HDUS,
    UNSEEN,
    integer,
    number,
    quiet_truncation,
    refuse_compressed,
    velocity_axis,
)
from dustpred.inputs.healpix_maps import check_values, unit_factor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageCube:
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
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None  # BLANK of integer data: these values are refused like UNSEEN


def find_image_cube(path: str | os.PathLike, units: dict[str, float]) -> ImageCube | None:
    """The 3-D image cube in ``path``, or None when the file holds a HEALPix table instead.

    ``units`` maps accepted ``BUNIT`` spellings to the factor converting to K.
    """
    path = os.fspath(path)
    if os.path.isdir(path) or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    refuse_compressed(path)
    try:
        with quiet_truncation(), fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            found = other = None
            for index in range(0, MAX_HDUS):
                try:
                    hdu = hdul[index]
                except IndexError:
                    break
                header = hdu.header
                if header.get("XTENSION", "IMAGE").strip() == "BINTABLE":
                    return None
                naxis = header.get("NAXIS", 0)
                # A 4th axis of length 1 (a Stokes I axis) leaves the bytes of a 3-D cube.
                if naxis == 3 or (naxis == 4 and header.get("NAXIS4") == 1):
                    found = (index, header.copy(), hdul.fileinfo(index)["datLoc"])
                    break
                if naxis and other is None:
                    shape = [header.get(f"NAXIS{i}") for i in range(1, naxis + 1)]
                    axes = [str(header.get(f"CTYPE{i}", "?")).strip() for i in range(1, naxis + 1)]
                    other = (index, naxis, shape, axes)
    except Exception:  # not FITS at all: let the table reader report it
        return None
    if found is None and other is not None:
        index, naxis, shape, axes = other
        raise InputError(
            f"{path}: HDU {index} is a {naxis}-D image of shape (NAXIS1..) {shape}, axes "
            f"{axes}; expected a 3-D (longitude, latitude, velocity) cube, a 4th axis of "
            "length 1 at most, or a HEALPix BINTABLE"
        )
    if found is None:
        return None
    index, header, offset = found
    nx, ny, nchan = (integer(path, f"NAXIS{i}", header.get(f"NAXIS{i}")) for i in (1, 2, 3))
    bitpix = integer(path, "BITPIX", header.get("BITPIX"), "8, 16, 32, 64, -32 or -64")
    needed = offset + nx * ny * nchan * abs(bitpix) // 8
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
    velocities = velocity_axis(path, header.get, 3, nchan)
    factor = unit_factor(path, "BUNIT", header.get("BUNIT"), units)
    step_lon, step_lat = (abs(number(path, k, header.get(k))) for k in ("CDELT1", "CDELT2"))
    if abs(nx * step_lon - 360.0) > step_lon:
        raise InputError(
            f"{path}: longitude axis spans {nx * step_lon:.3f} deg; expected the full 360 deg "
            "(an all-sky cube)"
        )
    # The coarsest HEALPix grid whose pixels are no larger than the image's pixels.
    nside = 1
    while hp.nside2resol(nside, arcmin=True) > 60.0 * min(step_lon, step_lat) and nside < 8192:
        nside *= 2
    bscale, bzero, blank = _scaling(path, header, bitpix)
    return ImageCube(
        path, index, header, nchan, ny, nx, velocities, factor, nside, bscale, bzero, blank
    )


def _scaling(path: str, header: fits.Header, bitpix: int) -> tuple[float, float, int | None]:
    """BSCALE, BZERO and (for integer data) BLANK of the image, validated."""
    bscale = number(path, "BSCALE", header.get("BSCALE", 1.0))
    bzero = number(path, "BZERO", header.get("BZERO", 0.0))
    blank = header.get("BLANK")
    if blank is not None and bitpix > 0:
        blank = integer(path, "BLANK", blank, "an integer blank value")
    return bscale, bzero, (blank if bitpix > 0 else None)


def _physical_plane(cube: ImageCube, raw: np.ndarray) -> np.ndarray:
    """Stored channel plane -> float32 values: BSCALE/BZERO applied, BLANK -> UNSEEN."""
    plane = np.asarray(raw, dtype=np.float32)
    if cube.bscale != 1.0 or cube.bzero != 0.0:
        plane = plane * np.float32(cube.bscale) + np.float32(cube.bzero)
    if cube.blank is not None:
        plane[raw == cube.blank] = UNSEEN
    return plane


def _bilinear_weights(cube: ImageCube, pixels_ring: np.ndarray):
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


def read_image_channels(cube: ImageCube, idx: np.ndarray, pixels_ring: np.ndarray, out):
    weights = _bilinear_weights(cube, pixels_ring)
    # Unscaled access: astropy refuses to memory-map scaled data; _physical_plane scales.
    with fits.open(cube.path, memmap=True, do_not_scale_image_data=True) as hdul:
        section = hdul[cube.hdu].section
        stokes = (0,) if cube.header["NAXIS"] == 4 else ()  # the one plane of a 4th axis
        for j, chan in enumerate(idx):
            # Channel planes are contiguous in the file: only these bytes are read.
            plane = _physical_plane(cube, section[(*stokes, int(chan), slice(None), slice(None))])
            check_values(cube.path, f"channel {int(chan)}", plane)
            out[:, j] = _interpolate_plane(plane, weights) * np.float32(cube.factor)
            if j % 16 == 0:
                log.info("%s: channel %d interpolated to Nside %d", cube.path, chan, cube.nside)
    return out
