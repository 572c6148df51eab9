"""Training throughput of the paper's U-Net: our trainer against a plain fp32 PyTorch loop.

Paper settings: 64 input maps of 64x64 pixels, widths 64-128-256-512 with a 512 bottleneck,
dropout 0.3, batch 64, the paper's loss (lambda 30). Both loops run in the same process on
the same model shape and the same GPU-resident synthetic data (standardised random maps and a
target that depends nonlinearly on them, so that training makes progress):

- ``plain``: fp32, NCHW, ``torch.optim.Adam``, one eager step per batch (PyTorch defaults:
  cuDNN may use TF32 for convolutions), batches gathered from a float32 tensor on the GPU.
- ``ours``: :class:`dustpred.training.loop.Trainer` exactly as the workflow runs it: bf16 autocast,
  channels_last, bf16 resident data with per-sample rotations/flips, fused Adam, gradient
  clipping, per-step loss bookkeeping, per-epoch validation, in several modes (eager, CUDA
  graph, torch.compile + CUDA graph).

Printed: samples/s, achieved TFLOP/s (3 x forward FLOPs per sample, convolutions only), the
speed-up over the plain loop, and the projected wall time of the paper's run (50,000 cutouts x
40 epochs, training steps only). Also an end-to-end check on small shards: train (killed after
one epoch, then resumed) and predict through the workflow's functions on the GPU.

Usage: ``python bench/bench_training.py [--samples 16384] [--epochs 3] [--json OUT.json]``.
Needs torch with CUDA (runs on CPU with tiny sizes for a smoke test: ``--smoke``); never
imports healpy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dustpred.models.settings import UNetSettings  # noqa: E402
from dustpred.models.unet import UNet, forward_flops  # noqa: E402
from dustpred.training.distributed import DistInfo  # noqa: E402
from dustpred.training.loop import Trainer  # noqa: E402
from dustpred.training.losses import PaperLoss  # noqa: E402
from dustpred.training.resident import ResidentData  # noqa: E402

PAPER_SAMPLES, PAPER_EPOCHS = 50_000, 40


def make_data(n, channels, npix, device, *, seed=0, chunk=1024):
    """Synthetic resident data: bf16 standardised maps (channels-last storage on CUDA) and a
    target mixing a channel average, a product of two channels and a smoothed square."""
    g = torch.Generator(device=device).manual_seed(seed)
    nhwc = device.type == "cuda"
    shape = (n, npix, npix, channels) if nhwc else (n, channels, npix, npix)
    dtype = torch.bfloat16 if nhwc else torch.float32
    feats = torch.empty(shape, dtype=dtype, device=device)
    target = torch.empty((n, npix, npix), device=device)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        f = torch.randn((m, channels, npix, npix), generator=g, device=device)
        f = torch.nn.functional.avg_pool2d(f, 3, stride=1, padding=1) * 3.0  # some structure
        t = f.mean(1) * 4 + 0.5 * f[:, 0] * f[:, 1] + 0.3 * f[:, 2].square()
        feats[lo : lo + m] = (f.permute(0, 2, 3, 1) if nhwc else f).to(dtype)
        target[lo : lo + m] = t
    mask = torch.zeros((n, npix, npix), dtype=torch.bool, device=device)
    return ResidentData(feats, None, target, mask, nhwc=nhwc)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_plain(data, params, device, steps, warmup):
    """Plain fp32 loop; returns (samples/s per timed block, final loss)."""
    torch.manual_seed(0)
    c = data.features.shape[-1] if data.nhwc else data.features.shape[1]
    model = UNet(c, params["widths"], params["bottleneck"], params["dropout"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    loss_fn = PaperLoss(data.npix, 24.96, lam=params["loss_lambda"]).to(device)
    n_plain = min(data.n, 4096)
    # fp32 NCHW copy of part of the data (the plain loop's own resident set)
    feats = data.features[:n_plain]
    feats = (feats.permute(0, 3, 1, 2) if data.nhwc else feats).float().contiguous()
    target, mask = data.target[:n_plain], data.mask[:n_plain]
    b = params["batch_size"]
    g = torch.Generator(device=device).manual_seed(1)
    rates = []
    block = max(1, steps // 5)
    for i in range(warmup + steps):
        if i >= warmup and (i - warmup) % block == 0:
            sync(device)
            t0 = time.perf_counter()
        idx = torch.randint(0, n_plain, (b,), generator=g, device=device)
        pred = model(feats[idx])
        loss, _ = loss_fn(pred, target[idx], mask[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup and (i - warmup) % block == block - 1:
            sync(device)
            rates.append(block * b / (time.perf_counter() - t0))
    del feats
    return rates, loss.item()


def bench_ours(data, params, device, epochs, n_val):
    torch.manual_seed(0)
    c = data.features.shape[-1] if data.nhwc else data.features.shape[1]
    model = UNet(c, params["widths"], params["bottleneck"], params["dropout"], params["variant"])
    idx = np.arange(data.n)
    trainer = Trainer(
        model,
        data,
        idx[n_val:],
        idx[:n_val],
        UNetSettings.from_config(params),
        seed=0,
        device=device,
        side_deg=24.96,
        dist_info=DistInfo(),
    )
    result = trainer.fit(epochs)
    return result.history, trainer.use_graphs


def profile_steps(data, params, device, steps=10):
    """GPU kernel time per step by kind, from torch.profiler over eager (compiled) steps."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    c = data.features.shape[-1]
    model = UNet(c, params["widths"], params["bottleneck"], params["dropout"])
    idx = np.arange(data.n)
    t = Trainer(
        model,
        data,
        idx,
        idx[:0],
        UNetSettings.from_config({**params, "cuda_graphs": False}),
        seed=0,
        device=device,
        side_deg=24.96,
    )
    batches, aug = t._epoch_batches(0)
    for s in range(5):
        t.opt.zero_grad(set_to_none=True)
        t._step_body(batches[s], aug[s])
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for s in range(5, 5 + steps):
            t.opt.zero_grad(set_to_none=True)
            t._step_body(batches[s], aug[s])
        sync(device)
    kinds = {}
    top = []
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if us <= 0 or e.key.startswith("ProfilerStep"):
            continue
        name = e.key.lower()
        if any(k in name for k in ("conv", "xmma", "cudnn", "implicit", "dgrad", "wgrad", "gemm")):
            kind = "convolution (cuDNN/GEMM)"
        elif "fft" in name:
            kind = "FFT (loss)"
        elif "adam" in name:
            kind = "optimizer"
        elif "triton" in name:
            kind = "fused elementwise/reduction (Triton)"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + us / steps
        top.append((us / steps, e.key[:90]))
    top.sort(reverse=True)
    total = sum(kinds.values())
    print(
        f"GPU kernel time per step (eager, compiled, batch {params['batch_size']}): "
        f"{total / 1e3:.2f} ms",
        flush=True,
    )
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {k}: {v / 1e3:.3f} ms ({100 * v / total:.0f} %)")
    for us, name in top[:12]:
        print(f"  {us / 1e3:.3f} ms  {name}")
    return {"per_step_us": kinds, "top": top[:30]}


def end_to_end(device, npix, channels, params):
    """Shards -> train (killed after epoch 1, resumed) -> predict, on this device."""
    import h5py
    from fake_training_shards import write_fake_shards

    from dustpred.evaluation.predict import predict_shards
    from dustpred.models.linear import fit_linear
    from dustpred.training.job import train_unet

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = write_fake_shards(tmp / "s", n_per_shard=(192, 128), channels=channels, npix=npix)
        p = {**params, "epochs": 2, "validation_fraction": 0.1}

        class Killed(Exception):
            pass

        def kill(epoch, result):
            if epoch == 1:
                raise Killed

        kw = dict(params=p, seed=0, resume_path=tmp / "resume" / "state.pt", threads=4)
        try:
            train_unet(shards, tmp / "unet.pt", tmp / "training.csv", _on_epoch_end=kill, **kw)
        except Killed:
            pass
        resumed = []
        train_unet(
            shards,
            tmp / "unet.pt",
            tmp / "training.csv",
            _on_epoch_end=lambda e, r: resumed.append(e),
            **kw,
        )
        fit_linear(shards, tmp / "linear.csv")
        predict_shards(shards, tmp / "linear.csv", tmp / "unet.pt", tmp / "pred.h5")
        with h5py.File(tmp / "pred.h5") as f:
            finite = bool(np.isfinite(f["unet"][...]).all())
            n = f["unet"].shape[0]
        table = (tmp / "training.csv").read_text()
    return {"resumed_epochs": resumed, "predicted": n, "finite": finite, "table": table}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=16384, help="resident training cutouts")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per mode of our trainer")
    ap.add_argument("--plain-steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--modes", default="eager,graph,compile+graph")
    ap.add_argument("--json", default=None, help="write all numbers here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check of the script)")
    ap.add_argument("--profile", action="store_true", help="kernel-time breakdown per step")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    widths, channels, npix = [64, 128, 256, 512], 64, 64
    if args.smoke:
        widths, channels, npix = [4, 8], 6, 16
        args.samples, args.plain_steps, args.epochs = 256, 10, 2
    params = {
        "variant": "paper",
        "input_kind": "cube",
        "widths": widths,
        "bottleneck": widths[-1],
        "dropout": 0.3,
        "loss_lambda": 30.0,
        "epochs": args.epochs,
        "batch_size": args.batch,
        "lr": 1e-3,
        "lr_decay_every": 10,
        "lr_decay_factor": 0.1,
        "validation_fraction": 0.0,
        "grad_clip": 1.0,
        "augment": True,
        "sync_batchnorm": True,
        "device": device.type,
    }
    flops = 3 * forward_flops(UNet(channels, widths), npix, npix)
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "samples": args.samples,
        "batch": args.batch,
        "train_flops_per_sample": flops,
    }
    print(json.dumps(info), flush=True)
    out = {"info": info, "results": {}}
    data = make_data(args.samples, channels, npix, device)
    n_val = min(1024, args.samples // 16)

    # PyTorch's defaults let cuDNN run fp32 convolutions in TF32; "strict" turns that off.
    for name, tf32 in (("plain fp32", True), ("plain fp32 strict (no TF32)", False)):
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32 and saved[1]
        try:
            rates, final = bench_plain(data, params, device, args.plain_steps, warmup=10)
            out["results"][name] = {"rates": rates, "final_loss": final}
            print(f"{name}: {[round(r) for r in rates]} samples/s, loss {final:.3f}", flush=True)
        except Exception:
            traceback.print_exc()
            out["results"][name] = {"error": traceback.format_exc(limit=3)}
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    if args.profile and device.type == "cuda":
        try:
            out["profile"] = profile_steps(data, {**params, "compile": True}, device)
        except Exception:
            traceback.print_exc()

    def run_end_to_end():
        try:
            # paper.yaml's settings: CUDA graphs and torch.compile
            e2e = end_to_end(
                device, npix, channels, {**params, "cuda_graphs": "auto", "compile": True}
            )
            out["end_to_end"] = e2e
            print(
                f"end-to-end: resumed epochs {e2e['resumed_epochs']}, predicted "
                f"{e2e['predicted']} cutouts, finite {e2e['finite']}\n{e2e['table']}",
                flush=True,
            )
        except Exception:
            traceback.print_exc()
            out["end_to_end"] = {"error": traceback.format_exc(limit=5)}

    modes = args.modes.split(",")
    for i, mode in enumerate(modes):
        if "autotune" in mode and "end_to_end" not in out:
            run_end_to_end()  # before the slow-compiling modes
        p = {**params, "cuda_graphs": "graph" in mode, "compile": "compile" in mode}
        if "autotune" in mode:
            p["compile"] = "max-autotune-no-cudagraphs"
        try:
            t0 = time.perf_counter()
            hist, graphs = bench_ours(data, p, device, args.epochs, n_val)
            rates = [h["samples_per_s"] for h in hist]
            out["results"][f"ours {mode}"] = {
                "rates": rates,
                "graphs": graphs,
                "history": hist,
                "wall_s": time.perf_counter() - t0,
            }
            print(
                f"ours {mode}: {[round(r) for r in rates]} samples/s (graphs {graphs}), "
                f"train loss {[round(h['train_loss'], 3) for h in hist]}, "
                f"val loss {[round(h['val_loss'], 3) for h in hist]}, "
                f"wall {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        except Exception:
            traceback.print_exc()
            out["results"][f"ours {mode}"] = {"error": traceback.format_exc(limit=5)}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        summarise(out, flops, args, final=i == len(modes) - 1)

    if "end_to_end" not in out:
        del data
        if device.type == "cuda":
            torch.cuda.empty_cache()
        run_end_to_end()
        summarise(out, flops, args, final=True)


def summarise(out, flops, args, final):
    """Print the table (a row after each mode, so a run cut short still reports) and save.

    Steady-state rate: median of the timed blocks (plain loops) or of the epochs after the
    first (ours: the first includes warm-up, graph capture and compilation).
    """
    info = out["info"]
    rates = {}
    for name, r in out["results"].items():
        if "rates" in r:
            steady = r["rates"] if name.startswith("plain") else r["rates"][1:] or r["rates"]
            rates[name] = r["steady_samples_per_s"] = statistics.median(steady)
    base = rates.get("plain fp32", math.nan)
    strict = rates.get("plain fp32 strict (no TF32)", math.nan)
    rows = []
    for name in out["results"]:
        if name not in rates:
            rows.append((name, "failed", "", "", "", ""))
            continue
        rate = rates[name]
        minutes = PAPER_SAMPLES * PAPER_EPOCHS / rate / 60
        rows.append(
            (
                name,
                f"{rate:,.0f}",
                f"{rate * flops / 1e12:.1f}",
                f"{rate / base:.2f}x",
                f"{rate / strict:.2f}x",
                f"{minutes:.1f}",
            )
        )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    if not final:
        print("so far: " + " | ".join(rows[-1]), flush=True)
        return
    print(
        f"\n{info['device']}, torch {info['torch']}, batch {args.batch}, "
        f"{args.samples} resident samples, {flops / 3e9:.2f} GFLOP forward per sample"
    )
    print("| loop | samples/s | TFLOP/s | vs plain fp32 | vs strict fp32 | paper run min |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
