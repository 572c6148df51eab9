"""Tables of the paper's comparison: r50/r150 per cutout, mean r(ell), wins, summaries.

Inputs are prediction files (one per experiment, seed and subset) written by
:mod:`dustpred.evaluation.predict`: HDF5 with datasets ``target``, ``mask`` (1 = masked) and one
(N, H, W) map per model (``integrated``, ``linear``, ``unet``; optionally ``linear_sd``, the
scale-dependent linear model, and ``oracle``, the HI-traced part of the synthetic dust, i.e.
the best any HI-based model can do), plus
``lon``, ``lat``, ``psi`` (N,) in degrees and attrs ``reso_arcmin`` and ``npix``.

Outputs are long-format pandas tables (one row per cutout and model, or per ell bin and
model), written as CSV and Parquet. Models are compared to the integrated-intensity map,
the paper's reference: a model "wins" on a cutout when its r is strictly larger.

Errors (issue 16): every mean and win fraction carries a block-bootstrap error over HEALPix
regions of the cutout centres (:mod:`dustpred.evaluation.resampling`, settings
:class:`~dustpred.evaluation.resampling.ErrorSettings`), beside the naive error that treats
the overlapping cutouts as independent (``*_naive``). The offset-robust r
(:mod:`dustpred.metrics`, ``robust=True``) is computed beside the paper's on every cutout
(``*_robust`` columns). Summaries across runs: :mod:`dustpred.evaluation.summary`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from dustpred.errors import InputError
from dustpred.evaluation import resampling
from dustpred.evaluation.resampling import ErrorSettings
from dustpred.evaluation.tables import (
    ALL_METRICS,
    MODELS,
    OPTIONAL_MODELS,
    PER_CUTOUT_COLUMNS,
    R_ELL_COLUMNS,
    REFERENCE,
    WINS_COLUMNS,
    model_order,
    write_table,
)
from dustpred.metrics import TAPER_PIX, bin_edges, r_ell_r50_r150_models
from dustpred.ordered_pool import map_in_order

log = logging.getLogger(__name__)


# --- reading --------------------------------------------------------------------------------

CHUNK = 1024  # cutouts per read: bounds memory for the paper's 50,000 training cutouts


@dataclass(frozen=True)
class Correlations:
    """Per-cutout correlations of one prediction file.

    ell : (nbins,) bin centres; masked_fraction : (n,);
    by_model : model -> {"r50": (n,), "r150": (n,), "r_ell": (n, nbins)}.
    """

    ell: np.ndarray
    masked_fraction: np.ndarray
    by_model: dict[str, dict[str, np.ndarray]]


class Predictions:
    """A validated prediction file, read lazily in chunks of cutouts.

    Attributes
    ----------
    path : Path
    n, npix : int
        Number of cutouts and pixels per side.
    side_deg : float
        Cutout side ``npix * reso_arcmin / 60`` in degrees.
    models : list of str
        Model maps present, in display order (integrated, linear, linear_sd, unet, oracle).
    lon, lat, psi : ndarray, shape (n,)
        Cutout centres and rotations in degrees (NaN if the file has none).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: prediction file not found; expected an HDF5 file")
        with h5py.File(self.path, "r") as f:
            missing = [k for k in ("target", "mask", *MODELS) if k not in f]
            if missing:
                raise InputError(
                    f"{self.path}: missing dataset(s) {missing}; expected 'target', 'mask' and "
                    f"the model maps {list(MODELS)} (optionally {list(OPTIONAL_MODELS)})"
                )
            shape = f["target"].shape
            if len(shape) != 3 or shape[1] != shape[2] or shape[0] == 0:
                raise InputError(
                    f"{self.path}: 'target' has shape {shape}; expected (N, n, n) with N >= 1"
                )
            self.models = [m for m in model_order((*MODELS, *OPTIONAL_MODELS)) if m in f]
            for key in ("mask", *self.models):
                if f[key].shape != shape:
                    raise InputError(
                        f"{self.path}: dataset '{key}' has shape {f[key].shape}; expected "
                        f"{shape} like 'target'"
                    )
            self.n, self.npix = int(shape[0]), int(shape[-1])
            for key in ("lon", "lat", "psi"):
                value = np.asarray(f[key][...], dtype=np.float64) if key in f else None
                if value is not None and value.shape != (self.n,):
                    raise InputError(
                        f"{self.path}: dataset '{key}' has shape {value.shape}; "
                        f"expected ({self.n},)"
                    )
                setattr(self, key, value if value is not None else np.full(self.n, np.nan))
            if "reso_arcmin" not in f.attrs:
                raise InputError(
                    f"{self.path}: attribute 'reso_arcmin' missing; expected the pixel size in "
                    f"arcmin"
                )
            reso = float(f.attrs["reso_arcmin"])
            npix = int(f.attrs.get("npix", self.npix))
            if npix != self.npix:
                raise InputError(
                    f"{self.path}: attribute npix = {npix} but the maps have {self.npix} "
                    f"pixels a side; expected equal"
                )
        self.side_deg = self.npix * reso / 60.0

    def read(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Cutouts ``start:stop``: ``mask`` (bool, True = masked), ``target`` and each model
        (float64, shape (m, n, n), masked pixels set to zero as the r(ell) contract asks)."""
        stop = self.n if stop is None else stop
        out: dict[str, np.ndarray] = {}
        with h5py.File(self.path, "r") as f:
            out["mask"] = np.asarray(f["mask"][start:stop]).astype(bool)
            for key in ("target", *self.models):
                value = np.asarray(f[key][start:stop], dtype=np.float64)
                if not np.all(np.isfinite(value)):
                    raise InputError(
                        f"{self.path}: dataset '{key}' has non-finite values in cutouts "
                        f"{start}..{stop - 1}; expected finite numbers"
                    )
                value[out["mask"]] = 0.0
                out[key] = value
        return out

    def masked_fraction(self, chunk: int = CHUNK) -> np.ndarray:
        """Fraction of masked pixels of each cutout, shape (n,)."""
        out = []
        with h5py.File(self.path, "r") as f:
            for start in range(0, self.n, chunk):
                mask = np.asarray(f["mask"][start : start + chunk]).astype(bool)
                out.append(mask.reshape(len(mask), -1).mean(axis=1))
        return np.concatenate(out)

    def correlations(
        self, chunk: int = CHUNK, taper_pix: float = TAPER_PIX, *, nthreads: int = 1
    ) -> Correlations:
        """r50, r150 and r(ell) of every model on every cutout, in the paper's form and the
        offset-robust form (``*_robust``, mask-edge taper ``taper_pix`` pixels), read
        ``chunk`` cutouts at a time; ``nthreads`` chunks are computed at once (numpy's FFTs
        release the GIL) and joined in order, so the result does not depend on it."""
        chunks = (self.read(start, min(start + chunk, self.n)) for start in range(0, self.n, chunk))
        parts = list(
            map_in_order(lambda data: _chunk_correlations(data, self, taper_pix), chunks, nthreads)
        )
        keys = ("r50", "r150", "r_ell", "r50_robust", "r150_robust", "r_ell_robust")
        return Correlations(
            ell=parts[-1][0],
            masked_fraction=np.concatenate([p[1] for p in parts]),
            by_model={
                m: {k: np.concatenate([p[2][m][k] for p in parts]) for k in keys}
                for m in self.models
            },
        )


def _chunk_correlations(data: dict[str, np.ndarray], pred: Predictions, taper_pix: float):
    """(ell, masked fraction (n,), model -> {r50, r150, r_ell and their *_robust}) of one
    chunk read by :meth:`Predictions.read`: each form's target FFT and window once."""
    masked = data["mask"].reshape(len(data["mask"]), -1).mean(axis=1)
    by_model: dict[str, dict[str, np.ndarray]] = {m: {} for m in pred.models}
    ell = None
    for suffix, robust in (("", False), ("_robust", True)):
        ell, out = r_ell_r50_r150_models(
            data["target"],
            {m: data[m] for m in pred.models},
            side_deg=pred.side_deg,
            mask=data["mask"] if robust else None,
            robust=robust,
            taper_pix=taper_pix,
        )
        for model, (r, r50, r150) in out.items():
            by_model[model].update(
                {f"r_ell{suffix}": r, f"r50{suffix}": r50, f"r150{suffix}": r150}
            )
    return ell, masked, by_model


# --- tables ---------------------------------------------------------------------------------


def per_cutout_table(pred: Predictions, corr: Correlations, subset: str) -> pd.DataFrame:
    """r50 and r150 of every model on every cutout of one subset.

    Returns a DataFrame with :data:`PER_CUTOUT_COLUMNS`, one row per (cutout, model).
    """
    frames = [
        pd.DataFrame(
            {
                "subset": subset,
                "cutout": np.arange(pred.n),
                "lon": pred.lon,
                "lat": pred.lat,
                "psi": pred.psi,
                "masked_fraction": corr.masked_fraction,
                "model": model,
                **{metric: corr.by_model[model][metric] for metric in ALL_METRICS},
            }
        )
        for model in pred.models
    ]
    return pd.concat(frames, ignore_index=True)[PER_CUTOUT_COLUMNS]


def r_ell_table(
    pred: Predictions, corr: Correlations, subset: str, errors: ErrorSettings | None = None
) -> pd.DataFrame:
    """Mean r(ell) over the cutouts of one subset, per model, with its errors on the mean.

    Returns a DataFrame with :data:`R_ELL_COLUMNS`: one row per (model, ell bin); ``ell`` is
    the bin centre, ``ell_lo``/``ell_hi`` its edges, ``r_err`` the block-bootstrap error
    over sky regions (:class:`ErrorSettings`), ``r_err_naive`` = sample sd / sqrt(n) (both
    NaN for a single cutout), ``r_robust_*`` the same for the offset-robust r, ``n_patches``
    the effective number of regions.
    """
    errors = errors or ErrorSettings()
    n = pred.n
    edges = bin_edges(pred.npix, pred.side_deg)
    labels = errors.labels(pred.lon, pred.lat)
    patches = resampling.effective_patches(labels)
    frames = []
    for model in pred.models:
        r = corr.by_model[model]["r_ell"]
        robust = corr.by_model[model]["r_ell_robust"]
        sd = r.std(axis=0, ddof=1) if n > 1 else np.full(r.shape[1], np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "subset": subset,
                    "model": model,
                    "ell": corr.ell,
                    "ell_lo": edges[:-1],
                    "ell_hi": edges[1:],
                    "r_mean": r.mean(axis=0),
                    "r_err": errors.block_error(r, labels),
                    "r_err_naive": sd / np.sqrt(n),
                    "r_std": sd,
                    "r_robust_mean": robust.mean(axis=0),
                    "r_robust_err": errors.block_error(robust, labels),
                    "n": n,
                    "n_patches": patches,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[R_ELL_COLUMNS]


def wins_table(per_cutout: pd.DataFrame, errors: ErrorSettings | None = None) -> pd.DataFrame:
    """How often each model beats integrated intensity (strictly larger r) per subset.

    Returns a DataFrame with :data:`WINS_COLUMNS`, one row per (subset, model, metric) for
    every model other than integrated intensity and every metric of :data:`ALL_METRICS` the
    table has; ``fraction_err`` is the block-bootstrap error of the fraction over sky
    regions (NaN without centres in two regions), ``fraction_err_naive`` the binomial one.
    """
    errors = errors or ErrorSettings()
    metrics = [m for m in ALL_METRICS if m in per_cutout.columns]
    rows = []
    for subset, group in per_cutout.groupby("subset", sort=False):
        wide = group.pivot(index="cutout", columns="model", values=metrics)
        first = group[group["model"] == group["model"].iloc[0]].set_index("cutout")
        if {"lon", "lat"} <= set(first.columns):
            lon, lat = first.loc[wide.index, "lon"], first.loc[wide.index, "lat"]
        else:
            lon = lat = np.full(len(wide), np.nan)
        labels = errors.labels(lon, lat)
        models = model_order(group["model"])
        for model in [m for m in models if m != REFERENCE]:
            for metric in metrics:
                won = wide[(metric, model)].to_numpy(), wide[(metric, REFERENCE)].to_numpy()
                w = _win_fraction(*won, labels, errors)
                rows.append(
                    (
                        subset,
                        model,
                        metric,
                        w.wins,
                        w.n,
                        w.fraction,
                        w.block_error,
                        w.naive_error,
                        w.n_patches,
                    )
                )
    return pd.DataFrame(rows, columns=WINS_COLUMNS)


def _win_fraction(model, reference, labels, errors: ErrorSettings) -> resampling.WinFraction:
    """:func:`~dustpred.evaluation.resampling.win_fraction`, NaN block error for < 2 regions."""
    if np.unique(labels).size < 2:
        won = model > reference
        f = float(won.mean())
        naive = float(np.sqrt(f * (1 - f) / won.size))
        return resampling.WinFraction(int(won.sum()), won.size, f, np.nan, naive, 1.0)
    return resampling.win_fraction(model, reference, labels, n_boot=errors.n_boot, seed=errors.seed)


def evaluate(
    predictions: Mapping[str, str | os.PathLike],
    per_cutout: Sequence[str | os.PathLike],
    r_ell_path: Sequence[str | os.PathLike],
    wins: Sequence[str | os.PathLike],
    *,
    errors: ErrorSettings | None = None,
    nthreads: int = 1,
) -> dict[str, pd.DataFrame]:
    """Evaluate the prediction files of one experiment and seed and write the three tables.

    Parameters
    ----------
    predictions
        Subset name (``train``, ``test``) -> prediction file.
    per_cutout, r_ell_path, wins
        (csv, parquet) output paths of each table.
    errors
        How errors are computed (default :class:`ErrorSettings`).
    nthreads
        Chunks of cutouts correlated at once (:meth:`Predictions.correlations`).

    Returns
    -------
    dict
        The tables, keyed ``per_cutout``, ``r_ell``, ``wins``.
    """
    errors = errors or ErrorSettings()
    pc_frames, rl_frames = [], []
    for subset, path in predictions.items():
        pred = Predictions(path)
        log.info("%s: %d %s cutouts, models %s", path, pred.n, subset, pred.models)
        corr = pred.correlations(taper_pix=errors.robust_taper_pix, nthreads=nthreads)
        pc_frames.append(per_cutout_table(pred, corr, subset))
        rl_frames.append(r_ell_table(pred, corr, subset, errors))
    tables = {
        "per_cutout": pd.concat(pc_frames, ignore_index=True),
        "r_ell": pd.concat(rl_frames, ignore_index=True),
    }
    tables["wins"] = wins_table(tables["per_cutout"], errors)
    write_table(tables["per_cutout"], *per_cutout)
    write_table(tables["r_ell"], *r_ell_path)
    write_table(tables["wins"], *wins)
    return tables
