"""Fake prediction files in the layout of results/predictions/{experiment}/seed{seed}/{subset}.h5.

Target: Gaussian random field with a power-law spectrum. Each model is the target plus
independent noise of a chosen noise-to-signal ratio, so the ranking of models is known:
oracle > unet > linear_sd > linear ~ integrated. (linear_sd is drawn last, so adding it left
the other maps of a given seed unchanged.)
"""

from __future__ import annotations

import h5py
import numpy as np

NOISE = {"integrated": 1.0, "linear": 0.9, "unet": 0.4, "oracle": 0.1, "linear_sd": 0.8}


def gaussian_field(rng, n_maps, npix, slope=-2.5):
    k = np.fft.fftfreq(npix) * npix
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    amp = np.where(k2 > 0, np.maximum(k2, 1.0) ** (slope / 4), 0.0)
    white = np.fft.fft2(rng.normal(size=(n_maps, npix, npix)))
    return np.fft.ifft2(white * amp).real


def write_fake_predictions(
    path, n=20, npix=32, reso_arcmin=46.8, seed=0, oracle=True, noise=None, scale=None
):
    """Write a prediction file with `n` cutouts of `npix` pixels; returns the arrays written."""
    noise = dict(NOISE if noise is None else noise)
    if not oracle:
        noise.pop("oracle", None)
    rng = np.random.default_rng(seed)
    target = gaussian_field(rng, n, npix) + 3.0
    mask = np.zeros((n, npix, npix), dtype=np.uint8)
    for i in range(n):  # a masked disc of random size per cutout
        y, x = np.ogrid[:npix, :npix]
        cy, cx = rng.integers(0, npix, 2)
        mask[i] = (y - cy) ** 2 + (x - cx) ** 2 < (rng.uniform(0, 0.3) * npix) ** 2
    sd = target.std()
    data = {"target": target, "mask": mask}
    for model, ratio in noise.items():
        factor = (scale or {}).get(model, 1.0)
        data[model] = factor * (target + ratio * sd * gaussian_field(rng, n, npix, slope=-1.5) * 3)
    for key in ("target", *noise):
        data[key] = np.where(mask == 1, 0.0, data[key]).astype(np.float32)
    data["lon"] = rng.uniform(0, 360, n)
    data["lat"] = rng.uniform(-90, 90, n)
    data["psi"] = rng.uniform(0, 360, n)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f[key] = value
        f.attrs["reso_arcmin"] = reso_arcmin
        f.attrs["npix"] = npix
    return data
