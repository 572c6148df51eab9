"""Errors that respect sky correlations: block bootstrap and jackknife over sky regions.

The test cutouts (24.96 deg a side, ~623 deg^2) overlap heavily in a region of ~14,400
deg^2, so their r values are far from independent and ``sd / sqrt(N)`` overstates the
significance of a mean or a win count. Here the cutouts are grouped by the HEALPix pixel
at a small Nside that contains each centre (:func:`region_labels`; Nside 2 pixels are
~860 deg^2, a little larger than a cutout, so neighbouring regions share little), and
whole regions are resampled:

- :func:`block_bootstrap`: draw as many regions as are occupied, with replacement, pool
  their cutouts, recompute the statistic; the error is the sd of the replicates (ddof=1).
  Seeded (``numpy.random.default_rng(seed)``), so the same inputs and seed give the same
  error bit for bit.
- :func:`block_jackknife`: leave one region out at a time; deterministic.
- :func:`naive_error`: ``sd / sqrt(N)`` treating cutouts as independent, kept for
  comparison and to be labelled "naive" wherever it is reported.
- :func:`effective_patches`: the number of equally filled regions with the same spread of
  weight, ``(sum n_r)^2 / sum n_r^2``; :func:`effective_n` the number of independent
  samples that the block error implies, ``N (naive / block)^2``.
- :func:`estimate` and :func:`win_fraction` bundle a value with both errors for tables and
  summaries (:meth:`Estimate.format` gives "mean +- error (N effective patches)").

Functions take numpy arrays whose first axis runs over cutouts (N,) or (N, K) (K columns
resampled together, e.g. r(ell) bins) and return numpy arrays (or floats).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from dustpred.errors import InputError
from dustpred.metrics import TAPER_PIX

log = logging.getLogger(__name__)

# Nside of the default regions: 48 pixels of 859 deg^2 over the sphere; 1,000 centres in the
# paper's southern test region (b <= -17.65 deg) touch 20-23 of them, ~18.5 effective, close
# to its ~20 independent cutout patches. Nside 4 regions (215 deg^2) are smaller than a
# cutout, so neighbours stay correlated and the errors come out smaller (tests/test_resampling).
NSIDE = 2
N_BOOT = 1000


def region_labels(lon: np.ndarray, lat: np.ndarray, nside: int = NSIDE) -> np.ndarray:
    """HEALPix pixel (RING ordering) at ``nside`` containing each cutout centre.

    Parameters
    ----------
    lon, lat : ndarray, shape (N,)
        Galactic longitude and latitude of the centres, in degrees.
    nside : int
        A power of 2 (default :data:`NSIDE`); 2 and 4 suit 25 deg cutouts.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
    """
    # healpy here, not at the top: it takes 1-2 s to import (astropy, matplotlib), and the
    # figure jobs, which import this module through dustpred.evaluation, never label regions.
    import healpy as hp

    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.shape != lat.shape or lon.ndim != 1:
        raise InputError(
            f"region_labels: lon has shape {lon.shape} and lat {lat.shape}; expected two "
            f"equal shapes (N,)"
        )
    if not hp.isnsideok(nside, nest=True):
        raise InputError(f"region_labels: nside = {nside!r}; expected a power of 2")
    if np.any(np.abs(lat) > 90) or not np.all(np.isfinite(lon)):
        raise InputError(
            "region_labels: latitudes outside [-90, 90] deg or non-finite longitudes; "
            "expected galactic (lon, lat) in degrees"
        )
    return hp.ang2pix(int(nside), lon, lat, lonlat=True).astype(np.int64)


def _groups(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as float64 and the index (N,) of each cutout's region among the occupied
    ones (0 .. R-1, R >= 2), after checking shapes."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    if values.ndim not in (1, 2) or labels.shape != values.shape[:1]:
        raise InputError(
            f"resampling: values have shape {values.shape} and labels {labels.shape}; "
            f"expected values (N,) or (N, K) and labels (N,)"
        )
    _, index = np.unique(labels, return_inverse=True)
    if index.max(initial=-1) < 1:
        raise InputError(
            f"resampling: the {labels.size} cutouts lie in {index.max(initial=-1) + 1} "
            f"region(s); expected at least 2 regions to resample"
        )
    return values, index.ravel()


def _mean(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=0)


def bootstrap_replicates(
    values: np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """The statistic on ``n_boot`` block-bootstrap resamples of the regions.

    Parameters
    ----------
    values : ndarray, shape (N,) or (N, K)
    labels : ndarray, shape (N,)
        Region of each cutout (e.g. from :func:`region_labels`); any hashable numbers.
    n_boot : int
        Number of resamples (default :data:`N_BOOT`).
    seed : int
        Seed of ``numpy.random.default_rng``.
    statistic : callable or None
        ``f(values_subset) -> (...)``, reducing over axis 0; None (default) is the mean,
        computed from per-region sums without building the resamples.

    Returns
    -------
    replicates : ndarray, shape (n_boot,) + statistic's shape ((), or (K,) for the mean)
    """
    values, index = _groups(values, labels)
    n_regions = index.max() + 1
    rng = np.random.default_rng(seed)
    # Multiplicity of each region in each resample (R regions drawn with replacement).
    mult = rng.multinomial(n_regions, np.full(n_regions, 1.0 / n_regions), size=int(n_boot))
    if statistic is None:
        sums = np.zeros((n_regions,) + values.shape[1:])
        np.add.at(sums, index, values)
        counts = np.bincount(index, minlength=n_regions).astype(np.float64)
        total = np.tensordot(mult.astype(np.float64), sums, axes=(1, 0))
        return total / (mult @ counts).reshape((-1,) + (1,) * (values.ndim - 1))
    rows = np.arange(len(values))
    return np.stack([np.asarray(statistic(values[np.repeat(rows, m[index])])) for m in mult])


def block_bootstrap(
    values: np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Block-bootstrap error (sd of :func:`bootstrap_replicates`, ddof=1) of the statistic.

    Same arguments as :func:`bootstrap_replicates`; returns float64 of the statistic's
    shape: () for values (N,), (K,) for the mean of values (N, K).
    """
    reps = bootstrap_replicates(values, labels, n_boot=n_boot, seed=seed, statistic=statistic)
    return reps.std(axis=0, ddof=1)


def block_jackknife(
    values: np.ndarray,
    labels: np.ndarray,
    *,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Delete-one-region jackknife error ``sqrt((R-1)/R sum_r (theta_(r) - theta_bar)^2)``.

    ``values`` (N,) or (N, K), ``labels`` (N,), ``statistic`` as in
    :func:`bootstrap_replicates` (None = mean). Returns float64 of the statistic's shape.
    Deterministic; for the mean of equally filled regions it equals the standard error of
    the R region means.
    """
    values, index = _groups(values, labels)
    n_regions = index.max() + 1
    stat = _mean if statistic is None else statistic
    leave_out = np.stack([np.asarray(stat(values[index != r])) for r in range(n_regions)])
    spread = ((leave_out - leave_out.mean(axis=0)) ** 2).sum(axis=0)
    return np.sqrt((n_regions - 1) / n_regions * spread)


def naive_error(values: np.ndarray) -> np.ndarray:
    """Standard error of the mean treating the N cutouts as independent: sd (ddof=1) /
    sqrt(N), per column of values (N,) or (N, K). Label it "naive" wherever reported."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2) or len(values) < 2:
        raise InputError(
            f"naive_error: values have shape {values.shape}; expected (N,) or (N, K), N >= 2"
        )
    return values.std(axis=0, ddof=1) / np.sqrt(len(values))


def effective_patches(labels: np.ndarray) -> float:
    """Effective number of regions ``(sum n_r)^2 / sum n_r^2`` of the cutout counts n_r.

    R equally filled regions give R; one region holding nearly all cutouts gives ~1.
    """
    counts = np.unique(np.asarray(labels), return_counts=True)[1].astype(np.float64)
    if counts.size == 0:
        raise InputError("effective_patches: no labels; expected at least one cutout")
    return float(counts.sum() ** 2 / (counts**2).sum())


def effective_n(n: int, naive: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Number of independent samples implied by the errors: ``n (naive / block)^2``.

    ``naive`` and ``block`` are errors of the same mean over ``n`` cutouts (any equal
    shapes); a block error of 0 gives inf.
    """
    naive = np.asarray(naive, dtype=np.float64)
    block = np.asarray(block, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return n * (naive / block) ** 2


@dataclass(frozen=True)
class Estimate:
    """A value with its region-resampling error and its naive error.

    value, block_error, naive_error : float; n_patches : float (:func:`effective_patches`).
    """

    value: float
    block_error: float
    naive_error: float
    n_patches: float

    def format(self, digits: int = 3) -> str:
        """``"0.512 +- 0.034 (17.2 effective patches; naive +- 0.005)"``."""
        return (
            f"{self.value:.{digits}f} +- {self.block_error:.{digits}f} "
            f"({self.n_patches:.1f} effective patches; naive +- {self.naive_error:.{digits}f})"
        )


def estimate(
    values: np.ndarray, labels: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0
) -> Estimate:
    """Mean of ``values`` (N,) with its block-bootstrap and naive errors."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise InputError(f"estimate: values have shape {values.shape}; expected (N,)")
    return Estimate(
        value=float(values.mean()),
        block_error=float(block_bootstrap(values, labels, n_boot=n_boot, seed=seed)),
        naive_error=float(naive_error(values)),
        n_patches=effective_patches(labels),
    )


@dataclass(frozen=True)
class WinFraction:
    """How often a model beats a reference, with errors.

    wins, n : int; fraction = wins / n; block_error : block-bootstrap error of the fraction;
    naive_error : binomial ``sqrt(f (1 - f) / n)`` (cutouts treated as independent);
    n_patches : :func:`effective_patches` of the labels.
    """

    wins: int
    n: int
    fraction: float
    block_error: float
    naive_error: float
    n_patches: float


def win_fraction(
    model: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> WinFraction:
    """Fraction of cutouts where ``model`` is strictly larger than ``reference``.

    Parameters
    ----------
    model, reference : ndarray, shape (N,)
        A metric (e.g. r50) of the two models on the same cutouts; a tie is not a win (as
        in :func:`dustpred.evaluation.evaluate.wins_table`).
    labels : ndarray, shape (N,)
        Region of each cutout.
    n_boot, seed : int
        As in :func:`block_bootstrap`.
    """
    model = np.asarray(model, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if model.shape != reference.shape or model.ndim != 1:
        raise InputError(
            f"win_fraction: model has shape {model.shape} and reference {reference.shape}; "
            f"expected two equal shapes (N,)"
        )
    won = (model > reference).astype(np.float64)
    n = won.size
    f = float(won.mean())
    return WinFraction(
        wins=int(won.sum()),
        n=n,
        fraction=f,
        block_error=float(block_bootstrap(won, labels, n_boot=n_boot, seed=seed)),
        naive_error=float(np.sqrt(f * (1.0 - f) / n)),
        n_patches=effective_patches(labels),
    )


@dataclass(frozen=True)
class ErrorSettings:
    """How the errors are computed (config section ``evaluation`` plus the master seed).

    region_nside : Nside of the resampled HEALPix regions; n_boot : bootstrap resamples;
    seed : bootstrap seed; robust_taper_pix : mask-edge taper of the robust r (pixels).
    """

    region_nside: int = NSIDE
    n_boot: int = N_BOOT
    seed: int = 0
    robust_taper_pix: float = TAPER_PIX

    @classmethod
    def from_config(cls, section: Mapping[str, object] | None, seed: int) -> ErrorSettings:
        section = dict(section or {})
        keys = ("region_nside", "n_boot", "robust_taper_pix")
        return cls(seed=int(seed), **{k: section[k] for k in keys if k in section})

    def labels(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Region of each cutout centre; cutouts without centres (NaN) are their own region,
        which makes the block errors the naive ones."""
        lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
            log.warning("cutouts without centres: block errors fall back to naive ones")
            return np.arange(lon.size)
        return region_labels(lon, lat, self.region_nside)

    def block_error(self, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Block-bootstrap error of the mean of ``values`` (N,) or (N, K); NaN if < 2 regions."""
        if np.unique(labels).size < 2:
            return np.full(np.shape(values)[1:], np.nan)
        return block_bootstrap(values, labels, n_boot=self.n_boot, seed=self.seed)
