"""Data-parallel scaling of U-Net training: 1 GPU against N GPUs, through the workflow's path.

Each run is the ``train_unet`` rule's own code: :func:`dustpred.training.job.launch_distributed`
starts ``python -m torch.distributed.run --standalone --nproc-per-node N`` (also for N = 1,
so that both sides go through torchrun), the ranks train on synthetic cutout shards at the
paper's settings (64 input maps of 64 x 64 pixels, widths 64-128-256-512, dropout 0.3, the
paper's loss with lambda 30, global batch 64 split across the ranks) and rank 0 writes the
per-epoch table. One extra row trains in this process without torchrun (what a ``gpu: 1`` job
does) to show that the launcher costs nothing.

Printed per run: the steady rate (median samples/s of the epochs after the first, which holds
warm-up and graph capture), the scaling efficiency rate_N / (N x rate_1), and the validation
r50/r150 after the fixed number of epochs. A run that needs more GPUs than are visible is
listed as not run; nothing is extrapolated.

Usage (device machine)::

    python3 bench/bench_ddp.py --gpus 1 2 [--samples 8192] [--epochs 6] [--json OUT.json]

CPU check of the script (gloo, tiny sizes): ``python bench/bench_ddp.py --smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dustpred.training.job import TrainSpec, launch_distributed, run_training  # noqa: E402

# NVLink multicast stays off on shared hosts (device README); torchrun's ranks inherit these.
for _key, _value in (
    ("NCCL_NVLS_ENABLE", "0"),
    ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
    ("NVSHMEM_DISABLE_NVLS", "1"),
):
    os.environ.setdefault(_key, _value)


def write_shards(directory: Path, n: int, channels: int, npix: int, seed: int) -> list[str]:
    """Synthetic float16 shards (contract datasets inputs/target/mask) in two files.

    Inputs are positive, spatially correlated maps; the target mixes their sum with a
    nonlinear term so that the network has something to learn. No pixel is masked.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, count in enumerate((n - n // 2, n // 2)):
        path = directory / f"shard-{i}.h5"
        with h5py.File(path, "w") as f:
            inputs = f.create_dataset(
                "inputs", (count, channels, npix, npix), "f2", chunks=(16, channels, npix, npix)
            )
            target = f.create_dataset("target", (count, npix, npix), "f4")
            for lo in range(0, count, 256):
                m = min(256, count - lo)
                x = rng.standard_normal((m, channels, npix, npix), dtype=np.float32)
                x = (x + np.roll(x, 1, -1) + np.roll(x, 1, -2) + np.roll(x, 1, 1)) / 2
                x = np.exp(0.5 * x)
                total = x.mean(axis=1)
                target[lo : lo + m] = total + 0.5 * x[:, 0] * x[:, 1]
                inputs[lo : lo + m] = x.astype(np.float16)
            f["mask"] = np.zeros((count, npix, npix), np.uint8)
            f.attrs["velocities_kms"] = np.linspace(-64.5, 17.0, channels)
            f.attrs["reso_arcmin"] = 23.4 * 64 / npix
            f.attrs["npix"] = npix
        paths.append(str(path))
    return paths


def summarise(table: pd.DataFrame) -> dict:
    steady = table["samples_per_s"].iloc[1:] if len(table) > 1 else table["samples_per_s"]
    last = table.iloc[-1]
    return {
        "samples_per_s": float(statistics.median(steady)),
        "val_r50": float(last["val_r50"]),
        "val_r150": float(last["val_r150"]),
        "train_loss": float(last["train_loss"]),
        "seconds": float(table["seconds"].sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="processes per run")
    ap.add_argument("--samples", type=int, default=8192, help="training cutouts")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over ranks)")
    ap.add_argument("--cuda-graphs", default="true", choices=["true", "false", "auto"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the network")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write all numbers here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU with gloo")
    args = ap.parse_args()

    channels, npix, widths = 64, 64, [64, 128, 256, 512]
    device = "auto"
    if args.smoke:
        args.samples, args.epochs, args.batch = 96, 2, 8
        channels, npix, widths, device = 4, 16, [4, 8], "cpu"
    visible = torch.cuda.device_count() if torch.cuda.is_available() and not args.smoke else 0
    print(f"torch {torch.__version__}, {visible} GPU(s) visible", flush=True)
    if visible:
        print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ddp_"))
    t0 = time.perf_counter()
    shards = write_shards(work / "shards", args.samples, channels, npix, seed=0)
    print(
        f"shards: {args.samples} cutouts x {channels} maps of {npix}x{npix} "
        f"({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    params = {
        "widths": widths,
        "dropout": 0.3,
        "loss_lambda": 30.0,
        "epochs": args.epochs,
        "batch_size": args.batch,
        "lr": 1e-3,
        "lr_decay_every": 10,
        "validation_fraction": 0.05,
        "device": device,
        "cuda_graphs": args.cuda_graphs,
        "compile": args.compile,
    }

    def spec(name: str) -> TrainSpec:
        out = work / name
        return TrainSpec(
            shards,
            str(out / "unet.pt"),
            str(out / "training.csv"),
            str(out / "resume" / "state.pt"),
            params,
            7,
            max(1, os.cpu_count() or 1),
            str(out / "train.log"),
        )

    runs = [(f"torchrun, {n} {'process' if n == 1 else 'processes'}", n) for n in args.gpus]
    runs.append(("in process (gpu: 1 job), no torchrun", 0))
    rows = []
    for label, n in runs:
        if not args.smoke and max(n, 1) > visible:
            print(f"{label}: not run ({max(n, 1)} GPUs needed, {visible} visible)", flush=True)
            rows.append({"run": label, "gpus": n, "status": "not run"})
            continue
        s = spec(f"run{n}")
        t1 = time.perf_counter()
        print(f"{label}: training {args.epochs} epochs ...", flush=True)
        if n == 0:
            run_training(s)
        else:
            launch_distributed(s, n)
        row = {"run": label, "gpus": max(n, 1), "status": "ok"}
        row.update(summarise(pd.read_csv(s.table_path)))
        row["wall_s"] = time.perf_counter() - t1
        rows.append(row)
        print(
            f"  {row['samples_per_s']:,.0f} samples/s, val r50 {row['val_r50']:.4f} "
            f"r150 {row['val_r150']:.4f}, wall {row['wall_s']:.1f} s",
            flush=True,
        )

    ok = [r for r in rows if r["status"] == "ok"]
    one = next((r for r in ok if r["run"].startswith("torchrun") and r["gpus"] == 1), None)
    print(
        f"\nglobal batch {args.batch}, {args.samples} cutouts, {args.epochs} epochs, "
        f"cuda_graphs {args.cuda_graphs}, compile {args.compile}"
    )
    print("| run | GPUs | samples/s | vs 1 GPU | scaling efficiency | val r50 | val r150 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['run']} | {r['gpus']} | not run | | | | |")
            continue
        speedup = r["samples_per_s"] / one["samples_per_s"] if one else float("nan")
        r["speedup"], r["efficiency"] = speedup, speedup / r["gpus"]
        print(
            f"| {r['run']} | {r['gpus']} | {r['samples_per_s']:,.0f} | {speedup:.2f}x | "
            f"{100 * r['efficiency']:.0f} % | {r['val_r50']:.4f} | {r['val_r150']:.4f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
