"""Within-sky errors against the scatter over independent skies, for several resamplings.

    python bench/realisation_errors.py runs/realisation-*/results/tables/baseline/*/per_cutout.csv

Each file is one sky's (one realisation's) per-cutout table; its test rows give, per model
(U-Net, oracle, scale-independent linear) and metric (r50, r150 and their robust forms), three
statistics: the mean r, the mean gain over integrated intensity and the win fraction. For each
statistic: the sd over skies (ddof=1), and the ratio sd / (mean over skies of the within-sky
error) for the block bootstrap (500 resamples, seed 0) and the block jackknife over HEALPix
regions of Nside 1, 2 (the workflow's default) and 4. A ratio near 1 means the within-sky error
describes the sky-to-sky scatter; with 5 skies the sd itself is uncertain by ~35 %.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from dustpred.evaluation.resampling import block_bootstrap, block_jackknife, region_labels

METRICS = ("r50", "r150", "r50_robust", "r150_robust")
MODELS = ("unet", "oracle", "linear")
NSIDES = (1, 2, 4)


def sky_statistics(path: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(model, statistic, metric): {'value', 'boot<nside>', 'jack<nside>'}}`` of one sky."""
    table = pd.read_csv(path)
    test = table[table["subset"] == "test"]
    wide = test.pivot(index="cutout", columns="model", values=list(METRICS))
    pos = test[test["model"] == "integrated"].set_index("cutout").loc[wide.index]
    labels = {n: region_labels(pos["lon"].to_numpy(), pos["lat"].to_numpy(), n) for n in NSIDES}
    out = {}
    for metric in METRICS:
        reference = wide[(metric, "integrated")].to_numpy()
        for model in MODELS:
            r = wide[(metric, model)].to_numpy()
            for name, values in (("mean", r), ("gain", r - reference), ("wins", r > reference)):
                values = np.asarray(values, dtype=np.float64)
                row = {"value": float(values.mean())}
                for n, lab in labels.items():
                    row[f"boot{n}"] = float(block_bootstrap(values, lab, n_boot=500, seed=0))
                    row[f"jack{n}"] = float(block_jackknife(values, lab))
                out[(model, name, metric)] = row
    return out


def ratio_table(paths: list[str]) -> pd.DataFrame:
    """One row per (model, statistic, metric): sd over skies and sd / mean error per method."""
    skies = [sky_statistics(path) for path in paths]
    rows = []
    for key in skies[0]:
        values = [sky[key] for sky in skies]
        sd = float(np.std([v["value"] for v in values], ddof=1))
        errors = {c: np.mean([v[c] for v in values]) for c in values[0] if c != "value"}
        rows.append(
            {
                "model": key[0],
                "statistic": key[1],
                "metric": key[2],
                "mean": float(np.mean([v["value"] for v in values])),
                "sd": sd,
                **{c: sd / e for c, e in errors.items()},
            }
        )
    return pd.DataFrame(rows)


def main(paths: list[str]) -> None:
    table = ratio_table(paths)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(f"{len(paths)} skies; sd over skies / mean within-sky error")
        print(table.round(3).to_string(index=False))
    print("share of the 36 ratios within 0.7-1.5, and their median:")
    for column in [c for c in table.columns if c.startswith(("boot", "jack"))]:
        inside = table[column].between(0.7, 1.5)
        print(f"  {column}: {int(inside.sum())}/{len(table)}, median {table[column].median():.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
