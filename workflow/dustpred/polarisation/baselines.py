"""The HI-orientation baselines on the cutout shards: fit their fractions, predict Q/U.

Each baseline (:mod:`dustpred.polarisation.orientation`) gives a template of fraction 1 from
a cutout's HI channels; its one fraction is fitted on the training cutouts against the
target Q/U (:func:`fit_baselines`, written as JSON) and applied to the test cutouts, whose
E and B maps are what the evaluation compares (:func:`baseline_eb_maps`;
:mod:`dustpred.qu_evaluation.predict` writes them with the other models').
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from dustpred.cutouts.shards import ShardSet
from dustpred.errors import InputError
from dustpred.polarisation import orientation
from dustpred.polarisation.eb import eb_maps
from dustpred.polarisation.qu_cutouts import CHUNK, read_qu_cutouts
from dustpred.sky.stack import write_json_atomic

#: Baseline name -> its template of fraction 1 (inputs (N, C, H, W), mask, fwhm_pix).
BASELINES = {
    "hi_orientation": orientation.integrated_template,
    "hi_channels": orientation.channel_template,
}


def baseline_templates(
    shard_paths: Sequence[str | os.PathLike], fwhm_pix: float, *, threads: int = 1
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every baseline's fraction-1 template on every cutout of ``shard_paths``:
    ``{name: (q, u)}``, each ``(N, H, W)`` float64."""
    shards = ShardSet(shard_paths, threads=threads)
    shape = (shards.n, *shards.shape)
    out = {name: (np.zeros(shape), np.zeros(shape)) for name in BASELINES}
    for start, chunk in shards.iter_chunks(["inputs", "mask"], CHUNK):
        stop = start + len(chunk["mask"])
        mask = chunk["mask"].astype(bool)
        for name, template in BASELINES.items():
            q, u = template(chunk["inputs"], mask, fwhm_pix)
            out[name][0][start:stop], out[name][1][start:stop] = q, u
    return out


def _aligned(qu: dict[str, np.ndarray], n: int, path: str | os.PathLike) -> None:
    if qu["q"].shape[0] != n:
        raise InputError(
            f"{path}: {qu['q'].shape[0]} Q/U cutouts; expected {n}, one per cutout of the "
            "shards it was made from (rerun the cutouts_qu job)"
        )


def fit_baselines(
    shard_paths: Sequence[str | os.PathLike],
    qu_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    fwhm_pix: float,
    threads: int = 1,
) -> dict[str, float]:
    """Fit each baseline's fraction on the training cutouts; write and return them."""
    qu = read_qu_cutouts(qu_path)
    templates = baseline_templates(shard_paths, fwhm_pix, threads=threads)
    _aligned(qu, templates[next(iter(BASELINES))][0].shape[0], qu_path)
    fractions = {
        name: orientation.fit_fraction(qu["q"], qu["u"], q, u, qu["mask"])
        for name, (q, u) in templates.items()
    }
    write_json_atomic(out_path, {"fwhm_pix": float(fwhm_pix), "fractions": fractions})
    return fractions


def baseline_eb_maps(
    shard_paths: Sequence[str | os.PathLike],
    fractions_path: str | os.PathLike,
    mask: np.ndarray,
    *,
    threads: int = 1,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each baseline's E and B maps (:func:`dustpred.polarisation.eb.eb_maps` of its fitted
    Q/U) on the cutouts of ``shard_paths``: ``{name: (E, B)}``, each ``(N, H, W)`` float32.
    ``mask``: ``(N, H, W)`` bool of the cutouts (their Q/U cutouts' mask)."""
    with open(fractions_path) as f:
        fitted = json.load(f)
    templates = baseline_templates(shard_paths, fitted["fwhm_pix"], threads=threads)
    out = {}
    for name, (q, u) in templates.items():
        if q.shape != mask.shape:
            raise InputError(
                f"{fractions_path}: baselines of {q.shape[0]} cutouts against a mask of "
                f"{mask.shape[0]}; expected the same cutouts"
            )
        fraction = fitted["fractions"][name]
        e, b = eb_maps(fraction * q, fraction * u, mask)
        out[name] = (e.astype(np.float32), b.astype(np.float32))
    return out
