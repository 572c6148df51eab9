r"""A synthetic 21-cm + dust sky on HEALPix with a known HI-traced dust component.

The simulator writes the three inputs of the workflow in the layouts of the real
products (see :mod:`dustpred.inputs.healpix_maps` and :mod:`dustpred.inputs.hi_cube`) plus the
HI-traced dust alone (the "oracle"):

- ``hi.fits``: HI brightness temperature cube (K), RING, one spectrum per pixel,
  channels of ``channel_kms`` (HI4PI's 1.288 km/s) over ``velocity_kms`` (default
  -120..+80 km/s, wider than the paper's -64.5..17 so the range selection shows);
- ``dust.fits``: dust intensity, column ``I_ML_FULL`` in µK_RJ, NESTED (like the Planck
  Commander map);
- ``dust_hi_traced.fits``: the HI-traced part of the dust, same layout;
- ``mask.fits``: keep-masks (1 = keep) ``LR16 .. LR72`` at Nside/2, NESTED (like the
  Planck LR mask file).

Random fields
-------------
``g`` denotes a unit-variance Gaussian random field on the sphere with angular power
spectrum

.. math:: C_\ell \propto \max(\ell, \ell_0)^{-\alpha},\quad \ell \ge 1,\ \ell_0 = 7,

(the knee at ``ell_0`` ~ half the cutout fundamental mode 14.4 keeps most of the variance
on the scales of a 25° cutout, as in a flat patch cut from a larger field), normalised so
that :math:`\sum_{\ell=1}^{767} (2\ell+1) C_\ell / 4\pi = 1` whatever the Nside
(multipoles above 767 add the small-scale tail at higher Nside). ``alpha = 2.7`` unless
stated. ``z`` is a "regional" unit-variance field with flat :math:`C_\ell` for
:math:`1 \le \ell \le 10` and zero above (one value per ~20° region). Every field is drawn
as :math:`a_{\ell m}` from its own ``numpy.random.default_rng`` stream (a fixed stream
number per field, combined with the seed) and synthesised with ducc0's multithreaded
transform (:func:`dustpred.sky.harmonic.synthesis`, healpy's ``alm2map`` to rounding, and
bitwise independent of the thread count), so the same seed gives the same bytes. The
log-normal field is :math:`LN(m, s) = m \exp(s g - s^2/2)` (mean ``m``).

HI components (columns in :math:`10^{20}\,\mathrm{cm^{-2}}`, velocities in km/s)
-----------------------------------------------------------------------------------
==================  =======================================  ================  =============
component           column N                                 centroid v0       width σ_v
==================  =======================================  ================  =============
cold local          f(b)·LN(1.0, 0.9)                        3 g(α=3.5) + 2 z  2 exp(0.5 g)
warm local          f(b)·LN(2.0, 0.3)                        v0_cold + g       9 exp(0.1 g)
intermediate (IVC)  LN(1.0, 0.8)·0.4·exp(0.5 z' − 0.125)     −45 + 5 z'' + 3 g 5 exp(0.2 g)
positive-velocity   LN(0.3, 0.8)                             8 + 2 z + 2 g     3 exp(0.2 g)
==================  =======================================  ================  =============

(each g and z is an independent draw; z' and z'' are two different regional fields).

The local gas is brighter toward the galactic plane, like a (clumpy) plane-parallel slab:
:math:`f(b) = \sqrt{\min(0.6/\sin|b|, 6)}` (1 at |b| = 37°, 2.4 at |b| < 5.7°; its mean
over the LR72 sky is ~1, so the columns there match the flat-sky prototype's; the full
1/sin|b| put a smooth, linearly predictable gradient across low-latitude cutouts).
The cold line width (2 exp(0.5 g), wider spread than the prototype's 0.35) sets the
strength of the line-width emissivity term below; with it the oracle's r50/r150 on
Nside-256 test cutouts exceed integrated intensity by ~0.19/0.15, as in the prototype.

Each component has a Gaussian line profile integrated over each channel
:math:`[v_k - \Delta v/2, v_k + \Delta v/2]`:

.. math:: T_k = \frac{54.85\,N}{\Delta v}\left[\Phi\left(\frac{v_k + \Delta v/2 - v_0}
          {\sigma_v}\right) - \Phi\left(\frac{v_k - \Delta v/2 - v_0}{\sigma_v}\right)\right]

(:math:`\int T\,dv = 54.85\,N` K km/s, the optically thin relation
:math:`N_{HI} = 1.823\times10^{18} \int T\,dv`). The cold component is optically thick:
:math:`T \to 60\,\mathrm{K}\,(1 - e^{-T/60\,\mathrm{K}})`. The channel map is the sum of
the four components plus white noise of ``hi_noise_mk`` (43 mK, HI4PI's per-channel rms)
per Nside-256 pixel, scaled by Nside/256 at other Nside so the noise power spectrum
does not depend on the resolution.

Dust (µK_RJ, 50 µK_RJ per :math:`10^{20}\,\mathrm{cm^{-2}}`)
----------------------------------------------------------------
HI-traced part (the oracle):

.. math:: D = \frac{2}{\sigma_{v,cold}} N_{cold} + N_{warm} + r_{IVC} N_{IVC} + N_{pos}
          + 0.25\,(N_{tot} - 4)_+^{1.5}

- line-width emissivity (narrow cold lines are dustier: :math:`2/\sigma_{v,cold}`),
- a molecular term above a column-density threshold (:math:`N_{tot} > 4`, gas turning
  molecular, invisible in HI),
- dust-poor IVC gas (``ivc_dust_ratio`` :math:`r_{IVC}`, default 0.9: deliberately weak,
  because a dust-poor cloud tied to fixed channels is exactly what a per-channel linear
  model captures).

None of these is a per-channel linear function of the HI brightness. With
``nonlinear=False`` (config ``synthetic.nonlinear: false``, the null test of no nonlinear
physics) all three are off and the cold gas is optically thin: :math:`D = N_{tot}` and
the HI brightness is linear in the columns, so integrated intensity is the best HI model
up to the velocity range kept. The observed dust is

.. math:: T = D + A_{CIB}\, g(\alpha = 1) + n

with the CIB-like field of amplitude ``cib_amplitude`` (0.5; HI cannot explain it) and
white noise ``n`` of 0.1 per 23.4' pixel (0.17·Nside/256 per pixel), all times 50 µK_RJ.

Masks
-----
``LRxx`` keeps the xx % of the sky with the lowest observed dust smoothed with a 5° FWHM
Gaussian (computed at the mask Nside = Nside/2, at least 8), as the Planck LR masks
threshold smoothed dust emission. ``LR63N``/``LR63S`` are LR63 restricted to the
northern/southern galactic hemisphere (synthetic stand-ins for the Planck fields of
those names).

Memory
------
About 20 float32 maps are held (component parameters, dust); the cube is written in
blocks of pixels (``nthreads + 1`` blocks at a time). At Nside 1024: ~1 GB of maps plus
~0.5 GB per block of spectra being computed, far below 24 GiB, whatever the number of
channels (the file itself is npix · nchan · 4 bytes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import healpy as hp
import numpy as np

from dustpred.inputs import healpix_maps, hi_cube
from dustpred.ordered_pool import map_in_order
from dustpred.sky import harmonic

log = logging.getLogger(__name__)

HI4PI_CHANNEL_KMS = 1.28821496
K_KMS_PER_1E20 = 54.85
DUST_UK_PER_1E20 = 50.0
ELL_KNEE = 7
ELL_NORM = 767
MASK_FIELDS = ("LR16", "LR24", "LR33", "LR42", "LR53", "LR63N", "LR63S", "LR63", "LR72")
MASK_SMOOTHING_DEG = 5.0

# One random stream per field: adding a field never changes the others.
STREAMS = {
    "cold_N": 1,
    "cold_v": 2,
    "cold_sigma": 3,
    "cold_z": 4,
    "warm_N": 5,
    "warm_v": 6,
    "warm_sigma": 7,
    "ivc_N": 8,
    "ivc_zN": 9,
    "ivc_zv": 10,
    "ivc_v": 11,
    "ivc_sigma": 12,
    "pos_N": 13,
    "pos_z": 14,
    "pos_v": 15,
    "pos_sigma": 16,
    "cib": 17,
    "dust_noise": 18,
    "hi_noise": 19,
}


@dataclass(frozen=True)
class SkySettings:
    """Settings of the synthetic sky (config section ``synthetic`` plus the seed)."""

    nside: int = 256
    seed: int = 0
    velocity_kms: tuple[float, float] = (-120.0, 80.0)
    channel_kms: float = HI4PI_CHANNEL_KMS
    hi_noise_mk: float = 43.0
    cib_amplitude: float = 0.5
    dust_noise: float = 0.1
    ivc_dust_ratio: float = 0.9
    nonlinear: bool = True

    @classmethod
    def from_config(cls, synthetic: dict, seed: int) -> SkySettings:
        keys = (
            "nside",
            "velocity_kms",
            "channel_kms",
            "hi_noise_mk",
            "cib_amplitude",
            "dust_noise",
            "ivc_dust_ratio",
            "nonlinear",
        )
        kwargs = {k: synthetic[k] for k in keys if k in synthetic}
        if "velocity_kms" in kwargs:
            kwargs["velocity_kms"] = tuple(float(v) for v in kwargs["velocity_kms"])
        return cls(seed=int(seed), **kwargs)

    @property
    def mask_nside(self) -> int:
        return max(self.nside // 2, 8)


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), STREAMS[stream]]))


def channel_velocities(velocity_kms: tuple[float, float], channel_kms: float) -> np.ndarray:
    """Channel centres ``k * channel_kms`` (k integer, 0 km/s a channel centre) inside the range.

    Returns
    -------
    numpy.ndarray
        ``(nchan,)`` float64 km/s, increasing.
    """
    lo, hi = velocity_kms
    k = np.arange(np.ceil(lo / channel_kms - 1e-9), np.floor(hi / channel_kms + 1e-9) + 1)
    return k * channel_kms


def power_law_cl(alpha: float, lmax: int, ell_knee: int = ELL_KNEE) -> np.ndarray:
    """``C_ell ∝ max(ell, ell_knee)**-alpha`` for ell >= 1, 0 at ell = 0, unit variance on
    ``1 <= ell <= ELL_NORM``.

    Returns
    -------
    numpy.ndarray
        ``(lmax + 1,)`` C_ell (dimensionless).
    """
    ell = np.arange(max(lmax, ELL_NORM) + 1, dtype=np.float64)
    cl = np.zeros_like(ell)
    cl[1:] = np.maximum(ell[1:], ell_knee) ** (-alpha)
    norm = np.sum((2 * ell[: ELL_NORM + 1] + 1) * cl[: ELL_NORM + 1]) / (4 * np.pi)
    return cl[: lmax + 1] / norm


def band_cl(ell_max: int, lmax: int) -> np.ndarray:
    """Flat ``C_ell`` on ``1 <= ell <= ell_max``, zero elsewhere, unit variance."""
    cl = np.zeros(lmax + 1)
    top = min(ell_max, lmax)
    cl[1 : top + 1] = 1.0
    ell = np.arange(lmax + 1)
    return cl / (np.sum((2 * ell + 1) * cl) / (4 * np.pi))


def gaussian_field(
    nside: int, cl: np.ndarray, rng: np.random.Generator, *, nthreads: int = 1
) -> np.ndarray:
    """A Gaussian random field with power spectrum ``cl``, drawn as a_lm from ``rng``.

    Parameters
    ----------
    nside
        HEALPix Nside of the map.
    cl
        ``(lmax + 1,)`` angular power spectrum.
    rng
        Generator the a_lm are drawn from (healpy.synfast would use numpy's global RNG).
    nthreads
        Threads of the synthesis (the result does not depend on it).

    Returns
    -------
    numpy.ndarray
        ``(12 nside**2,)`` float64 RING map.
    """
    lmax = len(cl) - 1
    return harmonic.synthesis(gaussian_alm(cl, rng), nside, lmax, nthreads=nthreads)


def gaussian_alm(cl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The a_lm of :func:`gaussian_field` (healpy's order, lmax = len(cl) - 1), complex128."""
    ell, m = hp.Alm.getlm(len(cl) - 1)
    draws = rng.standard_normal((2, ell.size))
    amp = np.sqrt(cl[ell])
    # Complex a_lm with m > 0 carry half the variance in each part; m = 0 is real.
    alm = np.where(m == 0, draws[0] * amp, (draws[0] + 1j * draws[1]) * amp / np.sqrt(2.0))
    return alm.astype(np.complex128)


def lognormal(mean: float, s: float, g: np.ndarray) -> np.ndarray:
    """``mean * exp(s g - s**2 / 2)``: log-normal with mean ``mean`` for unit-variance g."""
    return mean * np.exp(s * g - 0.5 * s * s)


def latitude_profile(nside: int) -> np.ndarray:
    """``f(b) = sqrt(min(0.6 / sin|b|, 6))`` per RING pixel, ``(12 nside**2,)`` float64."""
    theta, _ = hp.pix2ang(nside, np.arange(12 * nside**2))
    sin_b = np.abs(np.cos(theta))
    return np.sqrt(np.minimum(0.6 / np.maximum(sin_b, 1e-6), 6.0))


def components(settings: SkySettings, *, nthreads: int = 1) -> dict[str, np.ndarray]:
    """Column, centroid and line-width maps of the four HI components.

    ``nthreads``: threads of each field's synthesis.

    Returns
    -------
    dict
        Keys ``{cold,warm,ivc,pos}_{N,v,sigma}``: ``(npix,)`` float32 RING maps
        (N in 1e20 cm^-2, v and sigma in km/s).
    """
    nside, seed = settings.nside, settings.seed
    lmax = 3 * nside - 1

    def g(stream: str, alpha: float = 2.7) -> np.ndarray:
        cl = power_law_cl(alpha, lmax)
        return gaussian_field(nside, cl, _rng(seed, stream), nthreads=nthreads)

    def z(stream: str) -> np.ndarray:
        return gaussian_field(nside, band_cl(10, lmax), _rng(seed, stream), nthreads=nthreads)

    f_b = latitude_profile(nside)
    out: dict[str, np.ndarray] = {}
    out["cold_N"] = f_b * lognormal(1.0, 0.9, g("cold_N"))
    out["cold_v"] = 3.0 * g("cold_v", alpha=3.5) + 2.0 * z("cold_z")
    out["cold_sigma"] = 2.0 * np.exp(0.5 * g("cold_sigma"))
    out["warm_N"] = f_b * lognormal(2.0, 0.3, g("warm_N"))
    out["warm_v"] = out["cold_v"] + g("warm_v")
    out["warm_sigma"] = 9.0 * np.exp(0.1 * g("warm_sigma"))
    out["ivc_N"] = lognormal(1.0, 0.8, g("ivc_N")) * 0.4 * np.exp(0.5 * z("ivc_zN") - 0.125)
    out["ivc_v"] = -45.0 + 5.0 * z("ivc_zv") + 3.0 * g("ivc_v")
    out["ivc_sigma"] = 5.0 * np.exp(0.2 * g("ivc_sigma"))
    zpos = z("pos_z")
    out["pos_N"] = lognormal(0.3, 0.8, g("pos_N"))
    out["pos_v"] = 8.0 + 2.0 * zpos + 2.0 * g("pos_v")
    out["pos_sigma"] = 3.0 * np.exp(0.2 * g("pos_sigma"))
    return {k: v.astype(np.float32) for k, v in out.items()}


def hi_traced_dust(
    comp: dict[str, np.ndarray], ivc_dust_ratio: float, nonlinear: bool = True
) -> np.ndarray:
    """The HI-traced dust D (1e20 cm^-2 equivalent), float64 ``(npix,)``; see module doc.
    ``nonlinear=False``: D = N_tot (dust proportional to the HI column)."""
    n_tot = comp["cold_N"].astype(np.float64) + comp["warm_N"] + comp["ivc_N"] + comp["pos_N"]
    if not nonlinear:
        return n_tot
    return (
        (2.0 / comp["cold_sigma"]) * comp["cold_N"]
        + comp["warm_N"]
        + ivc_dust_ratio * comp["ivc_N"]
        + comp["pos_N"]
        + 0.25 * np.maximum(n_tot - 4.0, 0.0) ** 1.5
    )


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF via Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7); no scipy."""
    u = np.abs(x) * np.float32(1.0 / np.sqrt(2.0))
    t = 1.0 / (1.0 + np.float32(0.3275911) * u)
    poly = t * (
        np.float32(0.254829592)
        + t
        * (
            np.float32(-0.284496736)
            + t
            * (
                np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429))
            )
        )
    )
    erf_abs = 1.0 - poly * np.exp(-u * u)
    return 0.5 * (1.0 + np.sign(x) * erf_abs)


def line_channels(
    column: np.ndarray, v0: np.ndarray, sigma: np.ndarray, velocities: np.ndarray, dv: float
) -> np.ndarray:
    """Channel-averaged brightness of Gaussian lines (optically thin).

    Parameters
    ----------
    column, v0, sigma
        ``(m,)`` column (1e20 cm^-2), centroid and dispersion (km/s).
    velocities
        ``(nchan,)`` channel centres (km/s); each channel is ``dv`` wide.

    Returns
    -------
    numpy.ndarray
        ``(m, nchan)`` float32 K; ``sum(T) * dv = 54.85 N`` when the line is inside the band.
    """
    edges = np.concatenate([velocities - dv / 2, velocities[-1:] + dv / 2]).astype(np.float32)
    x = (edges[None, :] - v0[:, None].astype(np.float32)) / sigma[:, None].astype(np.float32)
    cdf = _norm_cdf(x)
    scale = (K_KMS_PER_1E20 / dv) * column.astype(np.float32)
    return (np.diff(cdf, axis=1) * scale[:, None]).astype(np.float32)


def hi_block(
    comp: dict[str, np.ndarray],
    sl: slice,
    velocities: np.ndarray,
    dv: float,
    optically_thick: bool = True,
) -> np.ndarray:
    """Noise-free HI spectra of pixels ``sl``: ``(m, nchan)`` float32 K (cold gas saturated
    unless ``optically_thick`` is False)."""
    cold = line_channels(
        comp["cold_N"][sl], comp["cold_v"][sl], comp["cold_sigma"][sl], velocities, dv
    )
    if optically_thick:
        total = np.float32(60.0) * (1.0 - np.exp(-cold / np.float32(60.0)))
    else:
        total = cold
    for name in ("warm", "ivc", "pos"):
        total += line_channels(
            comp[f"{name}_N"][sl], comp[f"{name}_v"][sl], comp[f"{name}_sigma"][sl], velocities, dv
        )
    return total


def lr_masks(dust: np.ndarray, mask_nside: int, *, nthreads: int = 1) -> dict[str, np.ndarray]:
    """Synthetic LR keep-masks from the observed dust (see module docstring).

    ``nthreads``: threads of the smoothing transforms.

    Returns
    -------
    dict
        Field name -> ``(12 mask_nside**2,)`` float32 RING map, 1 = keep.
    """
    lmax = 3 * mask_nside - 1
    # healpy's map2alm default of 3 iterations
    alm = harmonic.analysis(hp.ud_grade(dust, mask_nside), lmax, iters=3, nthreads=nthreads)
    beam = hp.gauss_beam(np.radians(MASK_SMOOTHING_DEG), lmax=lmax)
    smooth = harmonic.synthesis(hp.almxfl(alm, beam), mask_nside, lmax, nthreads=nthreads)
    theta, _ = hp.pix2ang(mask_nside, np.arange(12 * mask_nside**2))
    north = theta < np.pi / 2
    order = np.argsort(smooth, kind="stable")
    masks = {}
    for name in MASK_FIELDS:
        keep_pct = int(name[2:4])
        keep = np.zeros(smooth.size, dtype=np.float32)
        keep[order[: int(round(keep_pct / 100 * smooth.size))]] = 1.0
        if name.endswith("N"):
            keep[~north] = 0.0
        elif name.endswith("S"):
            keep[north] = 0.0
        masks[name] = keep
    return masks


def _block_noise(seed: int, block: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise of block ``block``: its own stream (seed, "hi_noise", block), float32."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAMS["hi_noise"], block]))
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _noisy_hi_block(comp, settings, velocities, sl: slice, block: int, sigma: float):
    """Noisy HI spectra ``(m, nchan)`` float32 K of pixels ``sl`` (block number ``block``)."""
    spectra = hi_block(comp, sl, velocities, settings.channel_kms, settings.nonlinear)
    spectra += _block_noise(settings.seed, block, spectra.shape, sigma)
    return spectra


def _hi_blocks(comp, settings, velocities, block_pixels, nthreads: int = 1) -> Iterator[np.ndarray]:
    """Noisy HI spectra, block after block of pixels, in pixel order.

    Up to ``nthreads`` blocks are computed at once (numpy releases the GIL in its loops), at
    most ``nthreads + 1`` held (:func:`dustpred.ordered_pool.map_in_order`). Each block draws
    its noise from its own stream (seed, block number), so the noise is drawn in parallel too
    and the cube does not depend on ``nthreads`` (it does on ``block_pixels``, fixed by the
    caller).
    """
    npix = 12 * settings.nside**2
    sigma = settings.hi_noise_mk * 1e-3 * settings.nside / 256.0
    slices = [
        slice(start, min(start + block_pixels, npix)) for start in range(0, npix, block_pixels)
    ]

    def noisy(i: int) -> np.ndarray:
        if i % 16 == 0:
            log.info("HI cube: pixels %d..%d of %d", slices[i].start, slices[i].stop - 1, npix)
        return _noisy_hi_block(comp, settings, velocities, slices[i], i, sigma)

    yield from map_in_order(noisy, range(len(slices)), nthreads)


def simulate_sky(
    settings: SkySettings,
    hi_path: str | os.PathLike,
    dust_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    oracle_path: str | os.PathLike,
    *,
    block_pixels: int = 1 << 16,
    nthreads: int = 1,
) -> dict[str, float]:
    """Simulate the sky and write the four FITS files (see module docstring).

    ``nthreads`` (the job's threads) runs the harmonic transforms; the files do not
    depend on it.

    Returns
    -------
    dict
        Summary statistics (for the log): nchan, mean columns, dust moments, mask fsky.
    """
    nside = settings.nside
    npix = 12 * nside**2
    velocities = channel_velocities(settings.velocity_kms, settings.channel_kms)
    log.info(
        "synthetic sky: Nside %d, %d channels %.2f..%.2f km/s, seed %d",
        nside,
        velocities.size,
        velocities[0],
        velocities[-1],
        settings.seed,
    )
    comp = components(settings, nthreads=nthreads)
    oracle = hi_traced_dust(comp, settings.ivc_dust_ratio, settings.nonlinear)
    lmax = 3 * nside - 1
    cib = gaussian_field(
        nside, power_law_cl(1.0, lmax), _rng(settings.seed, "cib"), nthreads=nthreads
    )
    noise_sigma = settings.dust_noise * (23.4 / hp.nside2resol(256, arcmin=True)) * nside / 256
    noise = _rng(settings.seed, "dust_noise").standard_normal(npix) * noise_sigma
    dust = oracle + settings.cib_amplitude * cib + noise
    del cib, noise
    masks = lr_masks(dust, settings.mask_nside, nthreads=nthreads)

    header_extra = {"ORIGIN": ("dustpred.sky", "synthetic sky"), "SEED": settings.seed}
    ring_of_nest = hp.nest2ring(nside, np.arange(npix))
    for path, values in ((dust_path, dust), (oracle_path, oracle)):
        healpix_maps.write_healpix_maps(
            path,
            {"I_ML_FULL": (values * DUST_UK_PER_1E20).astype(np.float32)[ring_of_nest]},
            nested=True,
            units={"I_ML_FULL": "uK_RJ"},
            coordsys="GALACTIC",
            extra=header_extra,
        )
    mask_nest = {k: hp.reorder(v, r2n=True).astype(np.float32) for k, v in masks.items()}
    healpix_maps.write_healpix_maps(
        mask_path, mask_nest, nested=True, coordsys="GALACTIC", extra=header_extra
    )
    log.info("wrote %s, %s, %s", dust_path, oracle_path, mask_path)
    hi_cube.write_hi_cube(
        hi_path,
        nside,
        velocities,
        _hi_blocks(comp, settings, velocities, block_pixels, nthreads),
        extra=header_extra,
    )
    log.info("wrote %s", hi_path)
    n_tot = comp["cold_N"] + comp["warm_N"] + comp["ivc_N"] + comp["pos_N"]
    return {
        "nchan": int(velocities.size),
        "mean_N_tot_1e20": float(n_tot.mean()),
        "dust_mean_uK": float(dust.mean() * DUST_UK_PER_1E20),
        "oracle_mean_uK": float(oracle.mean() * DUST_UK_PER_1E20),
        "fsky_LR72": float(masks["LR72"].mean()),
    }
