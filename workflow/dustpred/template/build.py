"""The template stage: tiles -> cutouts -> batched inference of every model -> reassembly -> FITS.

:func:`build_template` runs the whole step for one experiment. The models come as a list of
:class:`Fold`: fold 0 is trained on region 0 of the split (the ``train`` shards: north or
east), fold 1 on region 1 (the ``crossfit`` shards, drawn in the test region: south or
west); with one fold (no
cross-fitting) fold 0 provides every pixel. For each model (U-Net of each seed and fold, linear
weights of each fold, integrated intensity):

1. every tile of :func:`~dustpred.template.tiling.tile_grid` is cut from the preprocessed
   stack (:func:`~dustpred.template.tiling.tile_cutouts`, chunk by chunk so the HI cube of all
   tiles is never in memory) and predicted with
   :func:`~dustpred.evaluation.predict.predict_models` (the U-Net in batches of
   ``batch_size`` on the GPU when one is available);
2. the predictions are reassembled over the whole sky
   (:func:`~dustpred.template.reassembly.reassemble`);
3. scale and offset are fitted against the target dust on the model's own training region
   (unmasked, covered pixels; :func:`~dustpred.template.amplitude.fit_amplitude`), and
   applied;
4. each pixel takes the value of the model of its FOLD
   (:func:`~dustpred.template.tiling.fold_map`, with the pixels the training shards read as
   ``seen``): a model never provides a pixel of its own training region.

The U-Net template ``I`` is the mean over seeds, ``I_STD`` the seed spread (sample standard
deviation, 0 with one seed), ``I_TILE_STD`` the weighted tile-to-tile spread of the
overlapping predictions (after the amplitude, rms over seeds). Baselines: ``I_INTEGRATED``
and ``I_LINEAR`` are reassembled and amplitude-fitted the same way. ``I_ERR`` and
``I_ERR_1DEG`` are the 1-sigma error of ``I`` per pixel and at ``template.errors.fwhm_deg``,
each fold's calibrated on the other fold's residuals (:mod:`dustpred.template.uncertainty`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import healpy as hp
import numpy as np
import torch

from dustpred.cutouts import sampling
from dustpred.cutouts.shards import ShardSet
from dustpred.errors import ConfigError
from dustpred.evaluation.predict import predict_models, resolve_device
from dustpred.inputs.download import sha256_of
from dustpred.models.checkpoint import load_model
from dustpred.models.linear import read_weights
from dustpred.models.settings import UNetSettings
from dustpred.sky.stack import load_preprocessed
from dustpred.template import reassembly, tiling
from dustpred.template.amplitude import fit_amplitude
from dustpred.template.fitsfile import filter_and_input_cards, provenance_cards, write_template
from dustpred.template.sphere import HEMISPHERES, target_and_mask
from dustpred.template.uncertainty import ErrorSettings, cross_calibrated_error

log = logging.getLogger(__name__)

#: Tiles cut and predicted at once (64 HI channels of 64 x 64 float32: 1 MB per tile).
TILE_CHUNK = 128


@dataclass(frozen=True)
class TemplateSettings:
    """Config section ``template`` (see config/README.md). ``template.cross_fit`` is not
    here: it decides the folds in the workflow, and the library counts the folds it gets."""

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
class Fold:
    """The models trained on one region of the split and the cutouts they were trained on.

    unets : seed -> U-Net model file; linear : the linear weights (CSV); shards : the training
    shard files (their pixels are ``seen``); unet_settings : the ``unet`` slice the fold's
    U-Nets must have been trained with (None: not checked).
    """

    unets: Mapping[int, str]
    linear: str
    shards: Sequence[str]
    unet_settings: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Geometry:
    """Tile geometry and sampling of the training cutouts (config ``cutouts``)."""

    npix: int
    reso_arcmin: float
    interpolation: str
    split: str


def predict_tiles(
    pre,
    tiles: tiling.Tiles,
    geometry: Geometry,
    unets: Mapping[tuple[int, int], str],
    linears: Sequence[str],
    settings: TemplateSettings,
    expected: Sequence[Mapping[str, Any] | None],
) -> tuple[dict[Any, np.ndarray], np.ndarray]:
    """Every model's prediction of every tile; ``expected[k]``: the ``unet`` settings fold
    k's U-Nets must have been trained with (:func:`~dustpred.models.checkpoint.load_model`).

    Returns
    -------
    predictions, masked
        ``{('unet', seed, fold) | ('linear', fold) | ('integrated',): (N, H, W) float32}`` and
        the ``(N, H, W)`` uint8 tile mask (1 = masked).
    """
    dev = resolve_device(settings.device)
    nets = {
        (seed, fold): load_model(
            path,
            which=UNetSettings.from_config(expected[fold]).keep,
            device=dev,
            expected=expected[fold],
        )[:2]
        for (seed, fold), path in unets.items()
    }
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
        chunk = tiling.Tiles(
            tiles.lon[sl], tiles.lat[sl], tiles.psi[sl], tiles.npix, tiles.reso_arcmin, 0
        )
        cut, m = tiling.tile_cutouts(
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
            tiling.seen_pixels(
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
    tiles: tiling.Tiles,
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
    done: dict[int, reassembly.Reassembled] = {}  # the same array for every fold: reassemble once
    for k, pred in enumerate(predictions):
        if id(pred) not in done:
            done[id(pred)] = reassembly.reassemble(pred, tiles, nside, masked=masked, taper=taper)
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
    folds: Sequence[Fold],
    out_path: str | os.PathLike,
    *,
    geometry: Geometry,
    settings: TemplateSettings,
    errors: ErrorSettings,
    seed: int,
    config_slice: Mapping[str, Any],
    threads: int = 1,
    commit: str = "unknown",
) -> None:
    """Write the full-sky template of one experiment (module docstring).

    Parameters
    ----------
    preprocessed
        ``{'stack', 'mask', 'meta'}`` paths of the preprocess stage.
    folds
        ``[fold 0]``, or ``[fold 0, fold 1]`` with cross-fitting; every fold has the same seeds.
    out_path
        ``dust_template.fits``.
    geometry, settings, errors
        Tile geometry (config ``cutouts``), config ``template`` and ``template.errors``.
    seed
        Master seed (tile rotations).
    config_slice
        Written to the header as JSON (``CONFIG``).
    threads
        CPU threads (inference, transforms, checksums).
    commit
        The workflow's git commit, written to the header (``GITCOMMT``).
    """
    torch.set_num_threads(max(1, int(threads)))
    seed_sets = [sorted(f.unets) for f in folds]
    if len(folds) not in (1, 2) or any(seeds != seed_sets[0] for seeds in seed_sets):
        raise ConfigError(
            f"template: {len(folds)} folds with U-Net seeds {seed_sets}; expected 1 fold, or 2 "
            "with cross-fitting (template.cross_fit), each with the same seeds"
        )
    cross_fit = len(folds) == 2
    unets = {(s, k): path for k, f in enumerate(folds) for s, path in f.unets.items()}
    linears = [f.linear for f in folds]
    pre = load_preprocessed(preprocessed["stack"], preprocessed["mask"], preprocessed["meta"])
    nside = int(settings.nside or pre.nside)
    tiles = tiling.tile_grid(
        geometry.npix,
        geometry.reso_arcmin,
        seed=seed,
        coverage=settings.coverage,
        nside_tiles=settings.nside_tiles,
    )
    expected = [f.unet_settings for f in folds]
    preds, masked = predict_tiles(pre, tiles, geometry, unets, linears, settings, expected)
    target, mask = target_and_mask(pre, nside)
    seen = training_seen([f.shards for f in folds], nside, geometry)
    fold = tiling.fold_map(
        nside,
        geometry.split,
        cross_fit=cross_fit,
        seen=tuple(seen) if cross_fit else None,
    )
    # Model k is fitted where it was trained: its region and every pixel its cutouts read.
    regions = [
        (tiling.region_map(nside, geometry.split, subset) | s) & ~mask
        for subset, s in zip(sampling.SUBSETS, seen, strict=False)
    ]

    def folded(keys):
        return fold_and_fit(
            [preds[key] for key in keys], masked, tiles, fold, regions, target, settings.taper
        )

    seeds = sorted({s for s, _ in unets})
    per_seed = [folded([("unet", s, k) for k in range(len(folds))]) for s in seeds]
    linear = folded([("linear", k) for k in range(len(folds))])
    integrated = folded([("integrated",)] * len(folds))
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
    usable = ~mask & (integrated.weight > 0)
    for column, fwhm in (("I_ERR", None), ("I_ERR_1DEG", errors.fwhm_deg)):
        maps[column] = (
            calibrated_error(maps["I"], target, fold, usable, errors, fwhm, threads)
            if cross_fit
            else np.full(fold.size, hp.UNSEEN)  # no out-of-sample residuals to calibrate on
        )
    cards = template_cards(
        unets, seeds, len(folds), per_seed, linear, integrated, geometry.split, config_slice
    )
    read = {**preprocessed, **{f"linear_{k}": path for k, path in enumerate(linears)}}
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        digests = dict(zip(read, pool.map(sha256_of, read.values()), strict=True))
    inputs = {name: (os.fspath(path), digests[name]) for name, path in read.items()}
    cards.update(filter_and_input_cards(pre.meta, inputs, commit))
    cards["ERRCAL"] = (
        f"other fold's residuals, {errors.bins} bins of I" if cross_fit else "none",
        "I_ERR calibration",
    )
    cards["ERRFWHM"] = (float(errors.fwhm_deg), "FWHM (deg) of I_ERR_1DEG's smoothing")
    write_template(out_path, maps, unit=str(pre.meta["units"]["dust"]), cards=cards)


def calibrated_error(value, target, fold, usable, errors, fwhm, threads):
    """``I_ERR`` (``fwhm=None``) or ``I_ERR_1DEG``, UNSEEN where undefined
    (:func:`~dustpred.template.uncertainty.cross_calibrated_error`)."""
    error = cross_calibrated_error(
        value, target, fold, usable, bins=errors.bins, fwhm_deg=fwhm, nthreads=threads
    )
    return np.where(np.isfinite(error), error, hp.UNSEEN)


def template_cards(unets, seeds, folds, per_seed, linear, integrated, split, config_slice):
    """Provenance cards: model j = seed_index * folds + fold (``MODSHAj``, ``AMPSCLj``, ...)."""
    order = [(s, k) for s in seeds for k in range(folds)]
    cards = provenance_cards(
        model_sha256=[sha256_of(unets[key]) for key in order],
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
