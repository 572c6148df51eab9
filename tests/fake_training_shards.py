"""Tiny cutout shards following the shard contract, for the model/training/predict tests.

The cutouts are synthetic fields, not projections of a sky; the file is written by the
format's one writer, :class:`dustpred.cutouts.shards.ShardWriter`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dustpred.cutouts.shards import ShardWriter

SIDE_DEG = 24.96


def _smooth_field(rng, n, npix, alpha=2.5):
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(npix), np.fft.fftfreq(npix), indexing="ij"))
    amp = np.where(k > 0, np.maximum(k, 1.0 / npix) ** (-alpha / 2), 0.0)
    noise = rng.normal(size=(n, npix, npix)) + 1j * rng.normal(size=(n, npix, npix))
    g = np.fft.ifft2(noise * amp).real
    return g / g.std(axis=(-2, -1), keepdims=True)


def write_fake_shards(
    directory: Path,
    *,
    n_per_shard=(24, 16),
    channels: int = 6,
    npix: int = 16,
    seed: int = 0,
    oracle: bool = True,
    nside: int | None = None,
) -> list[str]:
    """Write shards shard-0.h5, shard-1.h5, ... to ``directory``; return their paths.

    Channels are log-normal fields; the target is a nonlinear function of them plus noise,
    so models have something to learn. A corner of every other cutout is masked (zero).
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    velocities = np.linspace(-60.0, 15.0, channels)
    paths = []
    for i, n in enumerate(n_per_shard):
        cols = np.exp(0.6 * _smooth_field(rng, n * channels, npix)).reshape(n, channels, npix, npix)
        weights = np.exp(-0.5 * ((velocities + 10) / 20) ** 2)
        inputs = cols * weights[None, :, None, None]
        hi_total = inputs.sum(axis=1)
        truth = hi_total + 0.2 * np.maximum(hi_total - hi_total.mean(), 0) ** 1.5
        target = truth + 0.1 * _smooth_field(rng, n, npix, alpha=1.0)
        mask = np.zeros((n, npix, npix), dtype=np.uint8)
        mask[::2, : npix // 4, : npix // 4] = 1
        inputs *= 1 - mask[:, None]
        target *= 1 - mask
        truth *= 1 - mask
        path = directory / f"shard-{i}.h5"
        attrs = {"velocities_kms": velocities, "reso_arcmin": SIDE_DEG * 60.0 / npix, "npix": npix}
        if nside is not None:  # the Nside of a sky the cutouts are said to come from
            attrs["nside"] = nside
        values = {
            "inputs": inputs.astype(np.float32),
            "target": target.astype(np.float32),
            "mask": mask,
            "lon": rng.uniform(0, 360, n),
            "lat": rng.uniform(30, 90, n),
            "psi": rng.uniform(0, 360, n),
            "masked_fraction": mask.reshape(n, -1).mean(axis=1),
            "slot": np.arange(n),
        }
        if oracle:
            values["oracle"] = truth.astype(np.float32)
        with ShardWriter(
            path, n, channels=channels, npix=npix, dtype="float32", oracle=oracle, attrs=attrs
        ) as writer:
            writer.write(0, values)
        paths.append(str(path))
    return paths


def fit_and_train(shards: list[str], directory: Path, params: dict) -> None:
    """``linear.csv``, ``linear_sd.csv`` and ``unet.pt`` (seed 0) of ``shards`` in ``directory``."""
    from dustpred.models.linear import fit_linear
    from dustpred.training.job import train_unet

    fit_linear(shards, directory / "linear.csv", directory / "linear_sd.csv")
    train_unet(
        shards,
        directory / "unet.pt",
        directory / "training.csv",
        params=params,
        seed=0,
        resume_path=directory / "resume" / "state.pt",
    )
