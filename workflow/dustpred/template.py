"""The template stage: tiles -> cutouts -> batched inference of every model -> reassembly -> FITS.

:func:`build_template` runs the whole step for one experiment. The models are given per
seed and fold: fold 0 is trained on region 0 of the split (the ``train`` shards: north or
east), fold 1 on region 1 (the ``test`` shards: south or west); with ``cross_fit`` false only
fold 0 exists and provides every pixel. For each model (U-Net of each seed and fold, linear
weights of each fold, integrated intensity):

1. every tile of :func:`dustpred.fullsky.tile_grid` is cut from the preprocessed stack
   (:func:`dustpred.fullsky.tile_cutouts`, chunk by chunk so the HI cube of all tiles is
   never in memory) and predicted with :func:`dustpred.predict.predict_models` (the U-Net in
   batches of ``batch_size`` on the GPU when one is available);
2. the predictions are reassembled over the whole sky (:func:`dustpred.fullsky.reassemble`);
3. scale and offset are fitted against the target dust on the model's own training region
   (unmasked, covered pixels; :func:`dustpred.fullsky_output.fit_amplitude`), and applied;
4. each pixel takes the value of the model of its FOLD (:func:`dustpred.fullsky.fold_map`,
   with the pixels the training shards read as ``seen``): a model never provides a pixel of
   its own training region.

The U-Net template ``I`` is the mean over seeds, ``I_STD`` the seed spread (sample standard
deviation, 0 with one seed), ``I_TILE_STD`` the weighted tile-to-tile spread of the
overlapping predictions (after the amplitude, rms over seeds). Baselines: ``I_INTEGRATED``
and ``I_LINEAR`` are reassembled and amplitude-fitted the same way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import healpy as hp
import numpy as np
import pandas as pd
import torch

from dustpred import fullsky, healpix_maps, sampling
from dustpred.cutouts import load_preprocessed
from dustpred.errors import ConfigError
from dustpred.evaluation import write_table
from dustpred.fullsky_output import fit_amplitude, provenance_cards, write_template
from dustpred.fullsky_validate import HEMISPHERES, sphere_r_ell
from dustpred.models.checkpoint import load_model
from dustpred.models.linear import read_weights
from dustpred.predict import predict_models, resolve_device
from dustpred.shards import ShardSet

log = logging.getLogger(__name__)

#: Tiles cut and predicted at once (64 HI channels of 64 x 64 float32: 1 MB per tile).
TILE_CHUNK = 128


@dataclass(frozen=True)
class TemplateSettings:
    """Config section ``template`` (see config/README.md)."""

    cross_fit: bool = True
    nside: int | None = None
    coverage: float = 0.75
    nside_tiles: int | None = None
    taper: float = 1.0
    batch_size: int = 64
    device: str = "auto"

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TemplateSettings:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in section.items() if k in names})


@dataclass(frozen=True)
class Geometry:
    """Tile geometry and sampling of the training cutouts (config ``cutouts``)."""

    npix: int
    reso_arcmin: float
    interpolation: str
    split: str


def file_sha256(path: str | os.PathLike) -> str:
    digest = sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def at_nside(values: np.ndarray, nside: int) -> np.ndarray:
    """A RING map at ``nside`` (``healpy.ud_grade``: block means / copies)."""
    values = np.asarray(values, dtype=np.float64)
    return values if hp.npix2nside(values.size) == nside else hp.ud_grade(values, nside)


def target_and_mask(pre, nside: int) -> tuple[np.ndarray, np.ndarray]:
    """The filtered dust (last stack column) and the mask (bool, True = masked) at ``nside``.

    A coarser pixel is masked when at least half of its working pixels are.
    """
    target = at_nside(pre.stack[:, -1], nside)
    mask = at_nside(pre.mask != 0, nside) >= 0.5
    return target, mask


def predict_tiles(
    pre,
    tiles: fullsky.Tiles,
    geometry: Geometry,
    unets: Mapping[tuple[int, int], str],
    linears: Sequence[str],
    settings: TemplateSettings,
) -> tuple[dict[Any, np.ndarray], np.ndarray]:
    """Every model's prediction of every tile.

    Returns
    -------
    predictions, masked
        ``{('unet', seed, fold) | ('linear', fold) | ('integrated',): (N, H, W) float32}`` and
        the ``(N, H, W)`` uint8 tile mask (1 = masked).
    """
    dev = resolve_device(settings.device)
    nets = {key: load_model(path, which="best", device=dev)[:2] for key, path in unets.items()}
    weights = [read_weights(path) for path in linears]
    side_deg = geometry.npix * geometry.reso_arcmin / 60.0
    n, shape = len(tiles), (len(tiles), geometry.npix, geometry.npix)
    keys = [("integrated",)] + [("linear", k) for k in range(len(weights))]
    keys += [("unet", *key) for key in nets]
    out = {key: np.empty(shape, np.float32) for key in keys}
    masked = np.empty(shape, np.uint8)
    log.info("predicting %d tiles with %d U-Nets on %s", n, len(nets), dev)
    for lo in range(0, n, TILE_CHUNK):
        sl = slice(lo, min(lo + TILE_CHUNK, n))
        chunk = fullsky.Tiles(
            tiles.lon[sl], tiles.lat[sl], tiles.psi[sl], tiles.npix, tiles.reso_arcmin, 0
        )
        cut, m = fullsky.tile_cutouts(
            pre.stack, pre.mask, chunk, interpolation=geometry.interpolation
        )
        x = np.ascontiguousarray(cut[:, :-1])
        masked[sl] = m
        for (seed, fold), (net, stats) in nets.items():
            maps = predict_models(
                x,
                m,
                weights[fold],
                net,
                stats,
                side_deg=side_deg,
                batch=settings.batch_size,
                device=dev,
            )
            out[("unet", seed, fold)][sl] = maps["unet"]
            # The baselines do not depend on the seed: any of the fold's runs gives them.
            out[("linear", fold)][sl] = maps["linear"]
            out[("integrated",)][sl] = maps["integrated"]
        log.info("predicted tiles %d..%d of %d", sl.start + 1, sl.stop, n)
    return out, masked


def training_seen(
    shard_sets: Sequence[Sequence[str]], nside: int, geometry: Geometry
) -> list[np.ndarray]:
    """Per fold, ``(12 nside**2,)`` bool: the pixels its training shards' cutouts read."""
    seen = []
    for paths in shard_sets:
        pos = ShardSet(paths).load(["lon", "lat", "psi"])
        seen.append(
            fullsky.seen_pixels(
                nside,
                pos["lon"],
                pos["lat"],
                pos["psi"],
                npix=geometry.npix,
                reso_arcmin=geometry.reso_arcmin,
                interpolation=geometry.interpolation,
            )
        )
    return seen


@dataclass
class FoldedMap:
    """One model family's map with each pixel from its fold's model, after the amplitude."""

    value: np.ndarray
    tile_std: np.ndarray
    weight: np.ndarray
    scales: list[float]
    offsets: list[float]


def fold_and_fit(
    predictions: Sequence[np.ndarray],
    masked: np.ndarray,
    tiles: fullsky.Tiles,
    fold: np.ndarray,
    fit_regions: Sequence[np.ndarray],
    target: np.ndarray,
    taper: float,
) -> FoldedMap:
    """Reassemble each fold's ``(N, H, W)`` predictions, fit it on ``fit_regions[k]``, select
    the pixels of ``fold == k``; folds beyond ``len(predictions)`` (one model) reuse model 0."""
    nside = hp.npix2nside(fold.size)
    value, tile_std, weight = (np.zeros(fold.size) for _ in range(3))
    scales, offsets = [], []
    done: dict[int, fullsky.Reassembled] = {}  # the same array for every fold: reassemble once
    for k, pred in enumerate(predictions):
        if id(pred) not in done:
            done[id(pred)] = fullsky.reassemble(pred, tiles, nside, masked=masked, taper=taper)
        rec = done[id(pred)]
        scale, offset = fit_amplitude(rec.value, target, fit_regions[k] & (rec.weight > 0))
        scales.append(scale)
        offsets.append(offset)
        mine = fold == k if len(predictions) > 1 else np.ones(fold.size, bool)
        value[mine] = scale * rec.value[mine] + offset
        tile_std[mine] = abs(scale) * rec.tile_std[mine]
        weight[mine] = rec.weight[mine]
    value[weight == 0] = 0.0
    return FoldedMap(value, tile_std, weight, scales, offsets)


def build_template(
    preprocessed: Mapping[str, str],
    unets: Mapping[tuple[int, int], str],
    linears: Sequence[str],
    train_shards: Sequence[Sequence[str]],
    out_path: str | os.PathLike,
    *,
    geometry: Geometry,
    settings: TemplateSettings,
    seed: int,
    config_slice: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """Write the full-sky template of one experiment (module docstring).

    Parameters
    ----------
    preprocessed
        ``{'stack', 'mask', 'meta'}`` paths of the preprocess stage.
    unets
        ``{(seed, fold): model file}``; folds 0 and 1 with cross-fitting, 0 only without.
    linears
        Linear weights per fold (``[fold 0]`` or ``[fold 0, fold 1]``).
    train_shards
        Per fold, the shard files its models were trained on (their pixels are ``seen``).
    out_path
        ``dust_template.fits``.
    geometry, settings
        Tile geometry (config ``cutouts``) and config ``template``.
    seed
        Master seed (tile rotations).
    config_slice
        Written to the header as JSON (``CONFIG``).
    """
    torch.set_num_threads(max(1, int(threads)))
    folds = 2 if settings.cross_fit else 1
    if sorted({k for _, k in unets}) != list(range(folds)) or len(linears) != folds:
        raise ConfigError(
            f"template: U-Net folds {sorted({k for _, k in unets})} and {len(linears)} linear "
            f"fits; expected folds {list(range(folds))} (template.cross_fit: "
            f"{settings.cross_fit})"
        )
    pre = load_preprocessed(preprocessed["stack"], preprocessed["mask"], preprocessed["meta"])
    nside = int(settings.nside or pre.nside)
    tiles = fullsky.tile_grid(
        geometry.npix,
        geometry.reso_arcmin,
        seed=seed,
        coverage=settings.coverage,
        nside_tiles=settings.nside_tiles,
    )
    preds, masked = predict_tiles(pre, tiles, geometry, unets, linears, settings)
    target, mask = target_and_mask(pre, nside)
    seen = training_seen(train_shards[:folds], nside, geometry)
    fold = fullsky.fold_map(
        nside,
        geometry.split,
        cross_fit=settings.cross_fit,
        seen=tuple(seen) if settings.cross_fit else None,
    )
    # Model k is fitted where it was trained: its region and every pixel its cutouts read.
    regions = [
        (fullsky.region_map(nside, geometry.split, subset) | s) & ~mask
        for subset, s in zip(sampling.SUBSETS, seen, strict=False)
    ]

    def folded(keys):
        return fold_and_fit(
            [preds[key] for key in keys], masked, tiles, fold, regions, target, settings.taper
        )

    seeds = sorted({s for s, _ in unets})
    per_seed = [folded([("unet", s, k) for k in range(folds)]) for s in seeds]
    linear = folded([("linear", k) for k in range(folds)])
    integrated = folded([("integrated",)] * folds)
    stack = np.stack([m.value for m in per_seed])
    maps = {
        "I": stack.mean(axis=0),
        "I_STD": stack.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(fold.size),
        "I_TILE_STD": np.sqrt(np.mean([m.tile_std**2 for m in per_seed], axis=0)),
        "I_INTEGRATED": integrated.value,
        "I_LINEAR": linear.value,
        "WEIGHT": integrated.weight,
        "FOLD": fold.astype(np.uint8),
    }
    cards = template_cards(
        unets, seeds, folds, per_seed, linear, integrated, geometry.split, config_slice
    )
    write_template(out_path, maps, unit=str(pre.meta["units"]["dust"]), cards=cards)


def template_cards(unets, seeds, folds, per_seed, linear, integrated, split, config_slice):
    """Provenance cards: model j = seed_index * folds + fold (``MODSHAj``, ``AMPSCLj``, ...)."""
    order = [(s, k) for s in seeds for k in range(folds)]
    cards = provenance_cards(
        model_sha256=[file_sha256(unets[key]) for key in order],
        scales=[m.scales[k] for m in per_seed for k in range(folds)],
        offsets=[m.offsets[k] for m in per_seed for k in range(folds)],
        split=split,
        config_json=json.dumps(config_slice, sort_keys=True, separators=(",", ":")),
    )
    cards["MODORDER"] = (
        ",".join(f"s{s}f{k}" for s, k in order),
        "U-Net j of MODSHAj/AMPSCLj: seed s, fold f",
    )
    cards["CROSSFIT"] = (folds == 2, "no pixel from a model trained on it")
    names = HEMISPHERES[split]
    for k in range(2):
        if folds == 2:
            meaning = f"trained on {names[k]}, provides {names[1 - k]}"
        else:
            meaning = "trained on " + names[0] + " (all pixels)" if k == 0 else "unused"
        cards[f"FOLD{k}"] = (meaning, f"FOLD = {k}")
    for k in range(folds):
        cards[f"LINSCL{k}"] = (linear.scales[k], f"fitted scale of I_LINEAR fold {k}")
        cards[f"LINOFF{k}"] = (linear.offsets[k], f"fitted offset of I_LINEAR fold {k}")
        cards[f"INTSCL{k}"] = (integrated.scales[k], f"fitted scale of I_INTEGRATED fold {k}")
        cards[f"INTOFF{k}"] = (integrated.offsets[k], f"fitted offset of I_INTEGRATED fold {k}")
    return cards


def read_template(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a template file through the project's HEALPix reader (RING, galactic)."""
    return {c: healpix_maps.read_healpix_map(path, c) for c in columns}


def write_sphere_r_ell(
    template_path: str | os.PathLike,
    preprocessed: Mapping[str, str],
    oracle_path: str | os.PathLike | None,
    out_paths: tuple[str | os.PathLike, str | os.PathLike],
    *,
    split: str,
    ell_cutoff: float,
    validation: Mapping[str, Any],
    nthreads: int = 1,
) -> pd.DataFrame:
    """The sphere r_ell table (:func:`dustpred.fullsky_validate.sphere_r_ell`) of a template.

    Models ``unet`` (``I``), ``integrated``, ``linear`` and, when ``oracle_path`` is given,
    ``oracle`` (the HI-traced dust of the synthetic sky); kept sky: unmasked and
    ``WEIGHT > 0``. ``validation``: config ``template.validation`` (``bin_width``,
    ``ell_min``, ``apod_deg``); ``nthreads``: threads of the transforms. Written as CSV and
    Parquet (``out_paths``).
    """
    maps = read_template(template_path, ["I", "I_INTEGRATED", "I_LINEAR", "WEIGHT"])
    nside = hp.npix2nside(maps["I"].size)
    pre = load_preprocessed(
        preprocessed["stack"], preprocessed["mask"], preprocessed["meta"], oracle_path
    )
    target, mask = target_and_mask(pre, nside)
    templates = {"unet": maps["I"], "integrated": maps["I_INTEGRATED"], "linear": maps["I_LINEAR"]}
    if pre.oracle is not None:
        templates["oracle"] = at_nside(pre.oracle, nside)
    table = sphere_r_ell(
        target,
        templates,
        ~mask & (maps["WEIGHT"] > 0),
        split=split,
        ell_cutoff=ell_cutoff,
        bin_width=int(validation["bin_width"]),
        ell_min=int(validation["ell_min"]),
        apod_deg=float(validation["apod_deg"]),
        nthreads=nthreads,
    )
    write_table(table, *out_paths)
    return table
