"""Output of the full-sky template: provenance cards and the FITS table.

:func:`write_template` writes the HEALPix table as the HEALPix FITS specification and the
Planck Legacy Archive lay it out: RING, ``NSIDE``, ``COORDSYS = 'G'``, one row per pixel,
``EXTNAME``, ``POLAR = F``, ``BAD_DATA`` = UNSEEN (-1.6375e30) in every map column where
``WEIGHT = 0`` (no tile reaches the pixel), so that ``healpy.read_map`` returns UNSEEN there
and ``healpy.mask_bad`` finds it. It goes through :func:`dustpred.fits.table.write_table_stream`
(atomic, no date card: same inputs, same bytes). :func:`provenance_cards` says what the map
is: the low-pass filter (``ELLCUT``, ``BWORDER``), the dust input's unit and reference
frequency as its header gave them, the git commit, the files read with their sha256, the
model files' sha256 and the config slice.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata

import healpy as hp
import numpy as np

from dustpred.errors import InputError
from dustpred.fits import table as fits_table
from dustpred.inputs import healpix_maps

log = logging.getLogger(__name__)

#: Columns of the template table, in file order.
TEMPLATE_COLUMNS = (
    "I",
    "I_ERR",
    "I_ERR_1DEG",
    "I_STD",
    "I_TILE_STD",
    "I_INTEGRATED",
    "I_LINEAR",
    "WEIGHT",
    "FOLD",
)
#: Columns carrying the target's unit (the others are dimensionless); UNSEEN where WEIGHT = 0.
_UNIT_COLUMNS = TEMPLATE_COLUMNS[:-2]
EXTNAME = "DUST_TEMPLATE"


def git_commit(directory: str | os.PathLike) -> str:
    """The commit of the checkout holding ``directory`` (``-dirty`` with local changes), or
    ``'unknown'`` outside a git checkout or without git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", os.fspath(directory), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def filter_and_input_cards(
    meta: Mapping, inputs: Mapping[str, tuple[str, str]], commit: str
) -> dict[str, tuple[object, str]]:
    """Cards of what the template is made from: the preprocess ``meta`` (``ELLCUT``,
    ``BWORDER``, ``DUSTUNIT``, ``DUSTFREQ``, the raw sources ``SRCHI``, ``SRCDUST``,
    ``SRCMASK``), ``inputs`` ``{name: (path, sha256)}`` of the files the job read (``INPUTk``
    and ``INSHAk``), and the git ``commit`` (``GITCOMMT``)."""
    header = meta.get("dust_header") or {}
    cards: dict[str, tuple[object, str]] = {
        "ELLCUT": (float(meta["ell_cutoff"]), "Butterworth low-pass cutoff multipole"),
        "BWORDER": (int(meta["butterworth_order"]), "Butterworth order n: 1/sqrt(1+(l/lc)^2n)"),
        "DUSTUNIT": (str(header.get("unit") or "not given"), "unit of the dust input (TUNIT)"),
        # Long values (paths, free text) go without a comment: astropy would cut it.
        "DUSTFREQ": (str(header.get("reference_frequency") or "not in the dust header"), ""),
        "GITCOMMT": (commit, "dustpred commit"),
    }
    for key, kind in (("SRCHI", "hi"), ("SRCDUST", "dust"), ("SRCMASK", "mask")):
        cards[key] = (str(meta.get("sources", {}).get(kind)), "")
    for k, (name, (path, sha)) in enumerate(sorted(inputs.items())):
        cards[f"INPUT{k}"] = (f"{name}: {path}", "")
        cards[f"INSHA{k}"] = (sha, "")
    return cards


def provenance_cards(
    *,
    model_sha256: list[str] | tuple[str, ...] = (),
    scales: list[float] | tuple[float, ...] = (),
    offsets: list[float] | tuple[float, ...] = (),
    split: str | None = None,
    config_json: str | None = None,
) -> dict[str, tuple[object, str]]:
    """Provenance header cards for :func:`write_template` (keys of at most 8 characters).

    ``model_sha256[k]`` (the model files' checksums), ``scales[k]``, ``offsets[k]`` (the
    amplitude applied to model k's pixels) per fold k, as ``MODSHAk``, ``AMPSCLk``,
    ``AMPOFFk``; ``config_json``: the config slice as JSON
    (long values continue over CONTINUE cards); software versions are added.
    """
    cards: dict[str, tuple[object, str]] = {}
    for key, package in (
        ("DPVER", "dustpred"),
        ("HPVER", "healpy"),
        ("NPVER", "numpy"),
        ("TORCHVER", "torch"),
    ):
        try:
            cards[key] = (metadata.version(package), f"{package} version")
        except metadata.PackageNotFoundError:
            continue
    if split is not None:
        cards["SPLIT"] = (split, "FOLD k: model trained on region k of this split")
    for k, sha in enumerate(model_sha256):
        # 64 hex digits fill the card: no room for a comment (astropy would truncate it).
        cards[f"MODSHA{k}"] = (str(sha), "")
    for k, (scale, offset) in enumerate(zip(scales, offsets, strict=True)):
        cards[f"AMPSCL{k}"] = (float(scale), f"fitted scale applied to fold {k}")
        cards[f"AMPOFF{k}"] = (float(offset), f"fitted offset applied to fold {k} (TUNIT)")
    if config_json is not None:
        cards["CONFIG"] = (config_json, "config slice of the template step (JSON)")
    return cards


def write_template(
    path: str | os.PathLike,
    maps: dict[str, np.ndarray],
    *,
    unit: str,
    cards: dict[str, tuple[object, str]] | None = None,
) -> None:
    """Write the template as a HEALPix BINTABLE, Planck layout, atomically.

    Parameters
    ----------
    path
        Output FITS file (written under a temporary name, then renamed).
    maps
        ``{column: (12 Nside**2,) RING map}`` with exactly :data:`TEMPLATE_COLUMNS`. ``FOLD`` is
        stored as unsigned bytes, ``WEIGHT`` and the maps as float32, one pixel per row.
    unit
        ``TUNIT`` of the map columns (the target's unit, e.g. ``'uK_RJ'``).
    cards
        Extra header cards (:func:`provenance_cards`), ``{key: (value, comment)}``.
    """
    if sorted(maps) != sorted(TEMPLATE_COLUMNS):
        raise InputError(
            f"write_template: columns {sorted(maps)}; expected {sorted(TEMPLATE_COLUMNS)}"
        )
    npix = len(maps["I"])
    if not hp.isnpixok(npix) or any(np.shape(maps[c]) != (npix,) for c in TEMPLATE_COLUMNS):
        raise InputError(
            f"write_template: map shapes {[np.shape(maps[c]) for c in TEMPLATE_COLUMNS]}; "
            "expected one (12 Nside**2,) shape for all columns"
        )
    bad = [key for key in cards or {} if len(key) > 8]  # before the standard cards join
    if bad:
        raise InputError(f"write_template: header keys {bad}; expected at most 8 characters")
    nside = hp.npix2nside(npix)
    uncovered = np.asarray(maps["WEIGHT"]) <= 0
    maps = {
        name: np.where(uncovered, np.float32(hp.UNSEEN), values)
        if name in _UNIT_COLUMNS
        else values
        for name, values in maps.items()
    }
    cards = {
        "EXTNAME": (EXTNAME, "the dustpred full-sky dust template"),
        "POLAR": (False, "intensity only"),
        "BAD_DATA": (float(hp.UNSEEN), "value of pixels no tile reaches (WEIGHT = 0)"),
        **(cards or {}),
    }
    columns = [
        (name, "B" if name == "FOLD" else "E", 1, unit if name in _UNIT_COLUMNS else None)
        for name in TEMPLATE_COLUMNS
    ]
    header = healpix_maps.healpix_header(nside, nested=False, coordsys="G", extra=cards)
    block = 1 << 20
    blocks = (
        {name: maps[name][lo : lo + block] for name in TEMPLATE_COLUMNS}
        for lo in range(0, npix, block)
    )
    fits_table.write_table_stream(path, columns, npix, blocks, header)
    log.info("wrote %s (Nside %d, %s)", path, nside, ", ".join(TEMPLATE_COLUMNS))


def read_template(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a template file through the project's HEALPix reader (RING, galactic);
    the map columns hold UNSEEN where ``WEIGHT = 0``."""
    return {c: healpix_maps.read_healpix_map(path, c, allow_unseen=True) for c in columns}
