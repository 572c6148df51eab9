"""Side-by-side bench of the evaluate rule's correlations: the per-model path vs ours.

Both compute r50, r150 and r(ell) of every model of one prediction file, in the paper's form
and the offset-robust one, on the same cutouts read in the same chunks:

- per-model (the workflow's earlier path): for each chunk, model and form,
  :func:`dustpred.metrics.r_ell_r50_r150` (the target's FFT and the robust window again for
  every model), one chunk after the other;
- ours: :meth:`dustpred.evaluation.evaluate.Predictions.correlations` (each form's target FFT and
  window once per chunk, ``--threads`` chunks at a time).

Prints both times, the ratio and whether every value is identical.

    PYTHONPATH=workflow python bench/bench_evaluate.py results/predictions/baseline/seed0/train.h5
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from dustpred.evaluation.evaluate import CHUNK, Predictions
from dustpred.metrics import TAPER_PIX, r_ell_r50_r150


def per_model(pred: Predictions) -> dict[str, dict[str, np.ndarray]]:
    """The earlier path: one call per chunk, model and form."""
    out: dict[str, dict[str, list]] = {m: {} for m in pred.models}
    for start in range(0, pred.n, CHUNK):
        data = pred.read(start, min(start + CHUNK, pred.n))
        for model in pred.models:
            for suffix, robust in (("", False), ("_robust", True)):
                _, r, r50, r150 = r_ell_r50_r150(
                    data["target"],
                    data[model],
                    side_deg=pred.side_deg,
                    mask=data["mask"] if robust else None,
                    robust=robust,
                    taper_pix=TAPER_PIX,
                )
                for key, value in (("r_ell", r), ("r50", r50), ("r150", r150)):
                    out[model].setdefault(key + suffix, []).append(value)
    return {m: {k: np.concatenate(v) for k, v in d.items()} for m, d in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="a prediction file (results/predictions/...h5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    pred = Predictions(args.predictions)
    print(f"{args.predictions}: {pred.n} cutouts of {pred.npix}x{pred.npix}, models {pred.models}")

    t0 = time.perf_counter()
    ref = per_model(pred)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = pred.correlations(CHUNK, TAPER_PIX, nthreads=args.threads)
    t_ours = time.perf_counter() - t0

    same = all(
        np.array_equal(ref[m][k], ours.by_model[m][k], equal_nan=True) for m in ref for k in ref[m]
    )
    print(f"per-model path, 1 thread:       {t_ref:8.2f} s")
    print(f"ours, {args.threads} threads:               {t_ours:8.2f} s")
    print(f"ratio: {t_ref / t_ours:.2f}x; every value identical: {same}")


if __name__ == "__main__":
    main()
