"""Tables of the paper's comparison: r50/r150 per cutout, mean r(ell), wins, summaries.

Inputs are prediction files (one per experiment, seed and subset) written by
:mod:`dustpred.predict`: HDF5 with datasets ``target``, ``mask`` (1 = masked) and one
(N, H, W) map per model (``integrated``, ``linear``, ``unet``; optionally ``oracle``, the
HI-traced part of the synthetic dust, i.e. the best any HI-based model can do), plus
``lon``, ``lat``, ``psi`` (N,) in degrees and attrs ``reso_arcmin`` and ``npix``.

Outputs are long-format pandas tables (one row per cutout and model, or per ell bin and
model), written as CSV and Parquet. Models are compared to the integrated-intensity map,
the paper's reference: a model "wins" on a cutout when its r is strictly larger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from dustpred.atomic import atomic_write
from dustpred.config import SETTING_COLUMNS
from dustpred.errors import InputError
from dustpred.metrics import bin_edges, r_ell_r50_r150

log = logging.getLogger(__name__)

REFERENCE = "integrated"
MODELS = ("integrated", "linear", "unet")
ORACLE = "oracle"
SUBSETS = ("train", "test")
METRICS = ("r50", "r150")
MODEL_LABELS = {
    "integrated": "integrated intensity",
    "linear": "linear combination",
    "unet": "U-Net",
    "oracle": "oracle (HI-traced dust)",
}

PER_CUTOUT_COLUMNS = ["subset", "cutout", "lon", "lat", "psi", "masked_fraction", "model", *METRICS]
R_ELL_COLUMNS = ["subset", "model", "ell", "ell_lo", "ell_hi", "r_mean", "r_sem", "r_std", "n"]
WINS_COLUMNS = ["subset", "model", "metric", "wins", "n", "fraction"]
SUMMARY_COLUMNS = [
    "experiment",
    "seed",
    "model",
    *SETTING_COLUMNS,
    "n_test",
    "r50_test",
    "r50_test_sem",
    "r150_test",
    "r150_test_sem",
    "r50_train",
    "r150_train",
    "wins_r50",
    "wins_r150",
    "frac_wins_r50",
    "frac_wins_r150",
]
BY_EXPERIMENT_STATS = ["r50_test", "r150_test", "wins_r50", "wins_r150"]
SUMMARY_BY_EXPERIMENT_COLUMNS = [
    "experiment",
    "model",
    *SETTING_COLUMNS,
    "n_seeds",
    *[f"{c}_{s}" for c in BY_EXPERIMENT_STATS for s in ("mean", "sd")],
]


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
        Model maps present, in display order (integrated, linear, unet, then oracle).
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
                    f"the model maps {list(MODELS)} (optionally 'oracle')"
                )
            shape = f["target"].shape
            if len(shape) != 3 or shape[1] != shape[2] or shape[0] == 0:
                raise InputError(
                    f"{self.path}: 'target' has shape {shape}; expected (N, n, n) with N >= 1"
                )
            self.models = [m for m in (*MODELS, ORACLE) if m in f]
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

    def correlations(self, chunk: int = CHUNK) -> Correlations:
        """r50, r150 and r(ell) of every model on every cutout, read ``chunk`` cutouts at a time."""
        result: dict[str, dict[str, list]] = {
            m: {"r50": [], "r150": [], "r_ell": []} for m in self.models
        }
        masked: list[np.ndarray] = []
        ell = None
        for start in range(0, self.n, chunk):
            data = self.read(start, min(start + chunk, self.n))
            masked.append(data["mask"].reshape(len(data["mask"]), -1).mean(axis=1))
            for model in self.models:
                ell, r, r50, r150 = r_ell_r50_r150(
                    data["target"], data[model], side_deg=self.side_deg
                )
                result[model]["r50"].append(r50)
                result[model]["r150"].append(r150)
                result[model]["r_ell"].append(r)
        return Correlations(
            ell=ell,
            masked_fraction=np.concatenate(masked),
            by_model={m: {k: np.concatenate(v) for k, v in d.items()} for m, d in result.items()},
        )


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
                "r50": corr.by_model[model]["r50"],
                "r150": corr.by_model[model]["r150"],
            }
        )
        for model in pred.models
    ]
    return pd.concat(frames, ignore_index=True)[PER_CUTOUT_COLUMNS]


def r_ell_table(pred: Predictions, corr: Correlations, subset: str) -> pd.DataFrame:
    """Mean r(ell) over the cutouts of one subset, per model, with its error on the mean.

    Returns a DataFrame with :data:`R_ELL_COLUMNS`: one row per (model, ell bin); ``ell`` is
    the bin centre, ``ell_lo``/``ell_hi`` its edges, ``r_sem`` = sample sd / sqrt(n)
    (NaN for a single cutout).
    """
    n = pred.n
    edges = bin_edges(pred.npix, pred.side_deg)
    frames = []
    for model in pred.models:
        r = corr.by_model[model]["r_ell"]
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
                    "r_sem": sd / np.sqrt(n),
                    "r_std": sd,
                    "n": n,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[R_ELL_COLUMNS]


def wins_table(per_cutout: pd.DataFrame) -> pd.DataFrame:
    """How often each model beats integrated intensity (strictly larger r) per subset.

    Returns a DataFrame with :data:`WINS_COLUMNS`, one row per (subset, model, metric) for
    every model other than integrated intensity.
    """
    rows = []
    for subset, group in per_cutout.groupby("subset", sort=False):
        wide = group.pivot(index="cutout", columns="model", values=list(METRICS))
        for model in [m for m in (*MODELS, ORACLE) if m != REFERENCE]:
            if model not in group["model"].values:
                continue
            for metric in METRICS:
                wins = int((wide[(metric, model)] > wide[(metric, REFERENCE)]).sum())
                n = int(len(wide))
                rows.append((subset, model, metric, wins, n, wins / n))
    return pd.DataFrame(rows, columns=WINS_COLUMNS)


def write_table(table: pd.DataFrame, csv_path: str | os.PathLike, parquet_path=None) -> None:
    """Write ``table`` to CSV (and Parquet if a path is given), each atomically."""
    atomic_write(csv_path, lambda tmp: table.to_csv(tmp, index=False))
    if parquet_path is not None:
        atomic_write(parquet_path, lambda tmp: table.to_parquet(tmp, index=False))


def evaluate(
    predictions: Mapping[str, str | os.PathLike],
    per_cutout: Sequence[str | os.PathLike],
    r_ell_path: Sequence[str | os.PathLike],
    wins: Sequence[str | os.PathLike],
) -> dict[str, pd.DataFrame]:
    """Evaluate the prediction files of one experiment and seed and write the three tables.

    Parameters
    ----------
    predictions
        Subset name (``train``, ``test``) -> prediction file.
    per_cutout, r_ell_path, wins
        (csv, parquet) output paths of each table.

    Returns
    -------
    dict
        The tables, keyed ``per_cutout``, ``r_ell``, ``wins``.
    """
    pc_frames, rl_frames = [], []
    for subset, path in predictions.items():
        pred = Predictions(path)
        log.info("%s: %d %s cutouts, models %s", path, pred.n, subset, pred.models)
        corr = pred.correlations()
        pc_frames.append(per_cutout_table(pred, corr, subset))
        rl_frames.append(r_ell_table(pred, corr, subset))
    tables = {
        "per_cutout": pd.concat(pc_frames, ignore_index=True),
        "r_ell": pd.concat(rl_frames, ignore_index=True),
    }
    tables["wins"] = wins_table(tables["per_cutout"])
    for line in summary_lines(tables["per_cutout"], tables["wins"]):
        log.info(line)
    write_table(tables["per_cutout"], *per_cutout)
    write_table(tables["r_ell"], *r_ell_path)
    write_table(tables["wins"], *wins)
    return tables


# --- summaries ------------------------------------------------------------------------------


def summary_rows(
    experiment: str, seed: int, per_cutout: pd.DataFrame, wins: pd.DataFrame
) -> pd.DataFrame:
    """One row per model of one experiment and seed, with :data:`SUMMARY_COLUMNS`, from its
    per-cutout table and :func:`wins_table` of it."""
    rows = []
    present = [m for m in (*MODELS, ORACLE) if m in per_cutout["model"].values]
    for model in present:
        row: dict[str, object] = {"experiment": experiment, "seed": int(seed), "model": model}
        for subset in SUBSETS:
            sel = per_cutout[(per_cutout["subset"] == subset) & (per_cutout["model"] == model)]
            if subset == "test":
                row["n_test"] = len(sel)
            for metric in METRICS:
                row[f"{metric}_{subset}"] = sel[metric].mean() if len(sel) else np.nan
                if subset == "test":
                    sem = sel[metric].std(ddof=1) / np.sqrt(len(sel)) if len(sel) > 1 else np.nan
                    row[f"{metric}_test_sem"] = sem
        for metric in METRICS:
            w = wins[
                (wins["subset"] == "test") & (wins["model"] == model) & (wins["metric"] == metric)
            ]
            row[f"wins_{metric}"] = int(w["wins"].iloc[0]) if len(w) else pd.NA
            row[f"frac_wins_{metric}"] = float(w["fraction"].iloc[0]) if len(w) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for metric in METRICS:
        out[f"wins_{metric}"] = out[f"wins_{metric}"].astype("Int64")
    return out


def summary_lines(per_cutout: pd.DataFrame, wins: pd.DataFrame, subset: str = "test") -> list[str]:
    """Human-readable lines: mean r50/r150 per model and win counts on ``subset``."""
    sel = per_cutout[per_cutout["subset"] == subset]
    if sel.empty:
        return [f"no {subset} cutouts"]
    n = int(sel["cutout"].nunique())
    lines = [f"{subset} set, {n} cutouts: mean r50, r150 per model"]
    present = [m for m in (*MODELS, ORACLE) if m in sel["model"].values]
    for model in present:
        m = sel[sel["model"] == model]
        lines.append(
            f"  {MODEL_LABELS[model]:<24} r50 = {m['r50'].mean():.3f}   "
            f"r150 = {m['r150'].mean():.3f}"
        )
    w = wins[wins["subset"] == subset]
    for model in [m for m in present if m != REFERENCE]:
        counts = {
            metric: w[(w["model"] == model) & (w["metric"] == metric)]["wins"] for metric in METRICS
        }
        if all(len(c) for c in counts.values()):
            lines.append(
                f"  {MODEL_LABELS[model]} beats integrated intensity in "
                f"{int(counts['r50'].iloc[0])}/{n} (r50), {int(counts['r150'].iloc[0])}/{n} (r150)"
            )
    return lines


def summarize(
    per_cutout_paths: Mapping[tuple[str, int], str | os.PathLike],
    summary_csv: str | os.PathLike,
    summary_txt: str | os.PathLike,
    summary_parquet: str | os.PathLike | None = None,
    *,
    by_experiment: Sequence[str | os.PathLike] | None = None,
    settings: Mapping[str, Mapping[str, object]] | None = None,
) -> pd.DataFrame:
    """Summary across experiments and seeds: one table row per (experiment, seed, model).

    Parameters
    ----------
    per_cutout_paths
        (experiment, seed) -> that run's per-cutout CSV table.
    summary_csv, summary_txt, summary_parquet
        Outputs: the table, and a human-readable text (also logged).
    by_experiment
        (csv, parquet) paths of the table of means and sds over seeds per experiment and
        model (:data:`SUMMARY_BY_EXPERIMENT_COLUMNS`), or None.
    settings
        Experiment name -> its :data:`SETTING_COLUMNS` values (see
        :func:`dustpred.config.experiment_settings`); fills those columns of both tables.

    Adding experiments or seeds only adds rows (and paragraphs of the text).
    """
    frames, text = [], ["dustpred summary", "================", ""]
    for (experiment, seed), path in per_cutout_paths.items():
        per_cutout = read_table(path, PER_CUTOUT_COLUMNS)
        wins = wins_table(per_cutout)
        frames.append(summary_rows(experiment, seed, per_cutout, wins))
        text.append(f"experiment {experiment}, seed {seed}")
        text.extend(summary_lines(per_cutout, wins))
        text.append("")
    table = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SUMMARY_COLUMNS)
    )
    spread = seed_spread(table)
    text.extend(seed_spread_lines(spread))
    if settings is not None:
        _with_settings(table, settings)
        _with_settings(spread, settings)
    write_table(table, summary_csv, summary_parquet)
    if by_experiment is not None:
        write_table(spread, *by_experiment)
    body = "\n".join(text).rstrip() + "\n"
    atomic_write(summary_txt, lambda tmp: Path(tmp).write_text(body))
    for line in body.splitlines():
        log.info(line)
    return table


def _with_settings(table: pd.DataFrame, settings: Mapping[str, Mapping[str, object]]) -> None:
    """Fill the :data:`SETTING_COLUMNS` of ``table`` in place, per experiment."""
    for column in SETTING_COLUMNS:
        table[column] = [settings.get(e, {}).get(column) for e in table["experiment"]]


def seed_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of the test scores and win counts, per experiment and model.

    Returns a DataFrame with :data:`SUMMARY_BY_EXPERIMENT_COLUMNS`; sds are NaN for a single
    seed.
    """
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_BY_EXPERIMENT_COLUMNS)
    values = table[["experiment", "model", *BY_EXPERIMENT_STATS]].copy()
    values[["wins_r50", "wins_r150"]] = values[["wins_r50", "wins_r150"]].astype("float64")
    grouped = values.groupby(["experiment", "model"], sort=False)[BY_EXPERIMENT_STATS]
    mean = grouped.mean().add_suffix("_mean")
    sd = grouped.std(ddof=1).add_suffix("_sd")
    n = grouped.size().rename("n_seeds")
    out = pd.concat([n, mean, sd], axis=1).reset_index()
    first = table.groupby(["experiment", "model"], sort=False)[SETTING_COLUMNS].first()
    out = out.join(first, on=["experiment", "model"])
    return out[SUMMARY_BY_EXPERIMENT_COLUMNS]


def seed_spread_lines(spread: pd.DataFrame) -> list[str]:
    """Text lines for experiments with more than one seed: mean +- sd over seeds, from
    :func:`seed_spread`."""
    spread = spread[spread["n_seeds"] > 1]
    if spread.empty:
        return []
    lines = ["mean +- sd over seeds (test set)"]
    for _, row in spread.iterrows():
        lines.append(
            f"  {row['experiment']:<16} {MODEL_LABELS[row['model']]:<24} "
            f"r50 = {row['r50_test_mean']:.3f} +- {row['r50_test_sd']:.3f}   "
            f"r150 = {row['r150_test_mean']:.3f} +- {row['r150_test_sd']:.3f}   "
            f"({int(row['n_seeds'])} seeds)"
        )
    return lines


def read_table(path: str | os.PathLike, columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV table and check it has ``columns`` (InputError naming the file if not)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    table = pd.read_csv(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; found {list(table.columns)}, "
            f"expected {list(columns)}"
        )
    return table
