"""Linear-combination model (paper section 2.2 and appendix A).

The prediction is ``P = sum_i w_i I_i`` with weights fitted on the training cutouts by
least squares in Fourier space: minimise ``sum_n sum_k |T^n_k - sum_i w_i I^n_{i,k}|^2``
over the modes k of the r(ell) bins (``ell_F <= ell < (npix/2 + 1) ell_F``: the mean, k = 0,
is left out, as in r). The normal equations (A.4)

    sum_i w_i A_ij = b_j,  A_ij = sum_nk Re(I_ik conj(I_jk)),  b_j = sum_nk Re(T_k conj(I_jk))

are accumulated per ell bin over all training shards in float64, then either summed over the
bins (scale-independent weights, the paper's choice) or solved bin by bin (scale-dependent
weights, one vector per bin). The solve is scaled to unit diagonal and done by an SVD-based
least-squares solve, so nearly collinear channels give a finite minimum-norm solution; an
optional ridge term adds ``ridge * mean(diag A)`` to the diagonal.

Weights table (CSV): one row per (bin, channel) with columns ``channel`` (0-based),
``velocity_kms``, ``weight``, ``ell_lo``, ``ell_hi``. The scale-independent table has one bin
covering all fitted modes. :func:`fit_linear` writes both tables from one pass over the
training shards: the workflow evaluates both models (``linear`` and ``linear_sd``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from dustpred.atomic import atomic_write
from dustpred.cutouts.shards import ShardSet
from dustpred.errors import InputError
from dustpred.metrics import bin_edges, ell_grid, rfft_multiplicity
from dustpred.ordered_pool import map_in_order

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["channel", "velocity_kms", "weight", "ell_lo", "ell_hi"]


def _rfft_modes(npix: int, side_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin index per rfft2 mode (-1 outside the bins), the multiplicity weight of each mode
    (2 for a half-plane mode standing for itself and its mirror, else 1), and the edges."""
    ell = ell_grid((npix, npix), side_deg)[:, : npix // 2 + 1]
    edges = bin_edges(npix, side_deg)
    idx = np.digitize(ell, edges) - 1
    idx[(idx < 0) | (idx >= len(edges) - 1)] = -1
    return idx.ravel(), rfft_multiplicity(npix).ravel(), edges


@dataclass
class NormalEquations:
    """Per-bin sums of the normal equations, float64.

    a : (nbins, C, C); b : (nbins, C); edges : (nbins + 1,) bin edges in ell; side_deg : the
    cutout side in degrees.
    """

    a: np.ndarray
    b: np.ndarray
    edges: np.ndarray
    side_deg: float

    @classmethod
    def empty(cls, channels: int, npix: int, side_deg: float) -> NormalEquations:
        _, _, edges = _rfft_modes(npix, side_deg)
        nb = len(edges) - 1
        return cls(np.zeros((nb, channels, channels)), np.zeros((nb, channels)), edges, side_deg)

    def add(self, inputs: np.ndarray, target: np.ndarray) -> None:
        """Accumulate cutouts: ``inputs`` (n, C, H, W), ``target`` (n, H, W)."""
        a, b = chunk_sums(inputs, target, self.side_deg, len(self.b))
        self.a += a
        self.b += b


def chunk_sums(
    inputs: np.ndarray, target: np.ndarray, side_deg: float, nbins: int
) -> tuple[np.ndarray, np.ndarray]:
    """The normal equations' terms of one chunk of cutouts, per ell bin.

    Parameters
    ----------
    inputs, target
        ``(n, C, H, W)`` HI channels and ``(n, H, W)`` dust of ``n`` cutouts.
    side_deg
        Cutout side (degrees).
    nbins
        Number of ell bins.

    Returns
    -------
    tuple of numpy.ndarray
        ``a`` (nbins, C, C) and ``b`` (nbins, C), float64.
    """
    n, c, h, w = inputs.shape
    idx, mult, _ = _rfft_modes(h, side_deg)
    fi = np.fft.rfft2(np.asarray(inputs, dtype=np.float64)).reshape(n, c, -1)
    ft = np.fft.rfft2(np.asarray(target, dtype=np.float64)).reshape(n, -1)
    sw = np.sqrt(mult)
    a, b = np.zeros((nbins, c, c)), np.zeros((nbins, c))
    for j in range(nbins):
        sel = np.flatnonzero(idx == j)
        # Real representation [Re; Im] turns sum_k Re(x_k conj(y_k)) into one dot product.
        xi = fi[:, :, sel] * sw[sel]
        xt = ft[:, sel] * sw[sel]
        xr = np.concatenate([xi.real, xi.imag], axis=2).transpose(1, 0, 2).reshape(c, -1)
        tr = np.concatenate([xt.real, xt.imag], axis=1).reshape(-1)
        a[j] = xr @ xr.T
        b[j] = xr @ tr
    return a, b


def solve_normal_equations(a: np.ndarray, b: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Solve ``(a + ridge mean(diag a) I) w = b`` for one (C, C) system, stably.

    The system is scaled to unit diagonal (Jacobi) and solved by SVD-based least squares
    (``numpy.linalg.lstsq``), which returns the minimum-norm solution if it is singular.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if ridge < 0:
        raise InputError(f"config key 'linear.ridge': got {ridge}, expected >= 0")
    diag = np.diag(a).copy()
    if ridge > 0:
        a = a + ridge * diag.mean() * np.eye(len(diag))
        diag = np.diag(a).copy()
    d = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 0.0)
    scaled = a * d[:, None] * d[None, :]
    ws, *_ = np.linalg.lstsq(scaled, b * d, rcond=1e-12)
    return ws * d


def accumulate_shards(shards: ShardSet, *, chunk: int = 64, nthreads: int = 1) -> NormalEquations:
    """Normal equations summed over every cutout of ``shards``.

    Chunks are read in order and their terms (:func:`chunk_sums`: FFTs and products, which
    release the GIL) computed ``nthreads`` at a time, then added in chunk order, so the sums
    do not depend on ``nthreads``.
    """
    eq = NormalEquations.empty(shards.channels, shards.npix, shards.side_deg)
    nbins = len(eq.b)

    def terms(chunk_of: tuple[int, dict]) -> tuple[np.ndarray, np.ndarray]:
        start, d = chunk_of
        if start % (chunk * 128) == 0:
            log.info("linear: cutouts %d.. of %d", start, shards.n)
        return chunk_sums(d["inputs"], d["target"], eq.side_deg, nbins)

    for a, b in map_in_order(terms, shards.iter_chunks(["inputs", "target"], chunk), nthreads):
        eq.a += a
        eq.b += b
    return eq


def weights_table(
    eq: NormalEquations,
    velocities_kms: Sequence[float],
    *,
    scale_dependent: bool = False,
    ridge: float = 0.0,
) -> pd.DataFrame:
    """Solve ``eq`` and return the weights table (see module docstring)."""
    c = eq.a.shape[1]
    rows = []
    if scale_dependent:
        systems = [(eq.a[j], eq.b[j], eq.edges[j], eq.edges[j + 1]) for j in range(len(eq.b))]
    else:
        systems = [(eq.a.sum(axis=0), eq.b.sum(axis=0), eq.edges[0], eq.edges[-1])]
    for a, b, lo, hi in systems:
        w = solve_normal_equations(a, b, ridge)
        for i in range(c):
            rows.append((i, float(velocities_kms[i]), float(w[i]), float(lo), float(hi)))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as CSV atomically (temporary file in the same directory, then rename)."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.10g"))


def read_weights(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a weights table written by :func:`fit_linear`."""
    table = pd.read_csv(path)
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected {TABLE_COLUMNS}")
    return table


class LinearWeights(NamedTuple):
    """The two weights tables fitted from the same normal equations."""

    scale_independent: pd.DataFrame
    scale_dependent: pd.DataFrame


def fit_linear(
    shard_paths: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    scale_dependent_csv: str | os.PathLike | None = None,
    *,
    ridge: float = 0.0,
    nthreads: int = 1,
) -> LinearWeights:
    """Fit the scale-independent and the scale-dependent linear model on training shards.

    Both solve the same normal equations, accumulated once (``nthreads`` chunks at a time,
    :func:`accumulate_shards`): summed over the ell bins (scale-independent, written to
    ``out_csv``) and bin by bin (scale-dependent, written to ``scale_dependent_csv`` if
    given).
    """
    shards = ShardSet(shard_paths, threads=nthreads)
    log.info(
        "linear: %d training cutouts of %d channels, ridge %g",
        shards.n,
        shards.channels,
        ridge,
    )
    eq = accumulate_shards(shards, nthreads=nthreads)
    fitted = LinearWeights(
        *(
            weights_table(eq, shards.velocities_kms, scale_dependent=sd, ridge=ridge)
            for sd in (False, True)
        )
    )
    outputs = ((fitted.scale_independent, out_csv, "scale-independent"),)
    if scale_dependent_csv is not None:
        outputs += ((fitted.scale_dependent, scale_dependent_csv, "scale-dependent"),)
    for table, path, kind in outputs:
        write_table(table, path)
        w = table["weight"].to_numpy()
        log.info(
            "linear, %s: weights mean %.4g, min %.4g, max %.4g -> %s",
            kind,
            w.mean(),
            w.min(),
            w.max(),
            path,
        )
    return fitted


def predict_linear(inputs: np.ndarray, table: pd.DataFrame, *, side_deg: float) -> np.ndarray:
    """Apply a weights table to channel maps (n, C, H, W); returns (n, H, W) float32.

    Scale-independent: ``sum_i w_i I_i`` in pixel space. Scale-dependent: per Fourier mode
    with the weights of its bin (modes below the first bin use the first bin's weights,
    modes above the last the last's); masked pixels (zero in every input) are zeroed again.
    """
    inputs = np.asarray(inputs)
    n, c, h, w = inputs.shape
    bins = table.groupby(["ell_lo", "ell_hi"], sort=True)
    if bins.ngroups == 1:
        wv = table.sort_values("channel")["weight"].to_numpy()
        if len(wv) != c:
            raise InputError(f"linear weights: {len(wv)} channels; the inputs have {c}")
        return np.tensordot(wv, inputs.astype(np.float64), axes=([0], [1])).astype(np.float32)
    idx, _, _ = _rfft_modes(h, side_deg)
    ell = ell_grid((h, w), side_deg)[:, : w // 2 + 1].ravel()
    wmat = np.stack([g.sort_values("channel")["weight"].to_numpy() for _, g in bins])  # (nbins, C)
    if wmat.shape[1] != c:
        raise InputError(f"linear weights: {wmat.shape[1]} channels; the inputs have {c}")
    first = ell < table["ell_lo"].min()
    idx = np.where(idx >= 0, idx, np.where(first, 0, len(wmat) - 1))
    per_mode = wmat[idx].T  # (C, modes)
    f = np.fft.rfft2(inputs.astype(np.float64)).reshape(n, c, -1)
    p = np.einsum("ncm,cm->nm", f, per_mode).reshape(n, h, w // 2 + 1)
    out = np.fft.irfft2(p, s=(h, w))
    unmasked = np.any(inputs != 0, axis=1)
    return (out * unmasked).astype(np.float32)
