r"""Polarised dust (Stokes Q, U) for the synthetic sky, with a known HI-traced part (issue 28).

No workflow rule calls it yet. It builds on the intensity sky of
:mod:`dustpred.sky.synthetic`: the same four HI components (cold, warm, intermediate-velocity
and positive-velocity gas) and their share of the HI-traced dust.

**Physics.** Dust grains align with the magnetic field, and thermal dust emission is
polarised perpendicular to the plane-of-sky field: :math:`\psi_{dust} = \theta_B + 90^\circ`.
Thin HI structures ("fibres") run along the plane-of-sky field (Clark, Peek & Putman 2014;
Clark et al. 2015), and each velocity component has its own structures, so the orientations
differ from component to component. Here, per component ``c``:

- the HI-traced field direction :math:`\theta_{HI,c}` runs along the iso-contours of the
  component's small-scale column structure: perpendicular to the gradient of the Gaussian
  field ``g`` behind its column (``N_c = m exp(s g - s^2/2)``, :mod:`dustpred.sky.synthetic`),
  smoothed with a Gaussian of FWHM ``fibre_fwhm_deg``. The gradient comes from the field's
  own a_lm (a spin-1 synthesis, ducc0; equal to ``healpy.alm2map_der1``), not from an image
  operator on the maps: the baselines of issue 28 (structure-tensor or Hessian angles of the
  integrated or per-channel maps) must not share the truth's operator;
- the field direction is :math:`\theta_{B,c} = \theta_{HI,c} + \delta_c`, where
  :math:`\delta_c = \sigma_t g_{t,c}` is the part the HI does not trace (turbulence): an
  independent unit-variance Gaussian field per component (power law 2.7, as the columns) times
  ``turbulence_deg``;
- the component's dust is polarised by ``p_max`` at :math:`\psi_c = \theta_{B,c} + 90^\circ`,
  so (IAU, angles from north through east)

.. math:: Q + iU = p_{max} \sum_c D_c\, e^{2i\psi_c}, \qquad
          D = \sum_c D_c = \frac{2}{\sigma_{v,cold}} N_{cold} + N_{warm} + r_{IVC} N_{IVC}
          + N_{pos} + 0.25 (N_{tot} - 4)_+^{1.5},

with the molecular term counted with the cold gas. The polarisation fraction is at most
``p_max`` (the observed maximum, ≈ 20 %: Planck 2018 XII) and lower where the components'
orientations disagree along the line of sight, as where the observed field is tangled.
The maps are returned in the **COSMO** convention (healpy's and Planck's: U negated).

**The oracle** is the best any HI model can do: the conditional mean of Q + iU given the HI.
For a Gaussian :math:`\delta`, :math:`E[e^{2i\delta}] = e^{-2\sigma_t^2}`, so the oracle is
:math:`p_{max} e^{-2\sigma_t^2} \sum_c D_c e^{2i(\theta_{HI,c} + 90^\circ)}`.

Units: as the intensity dust, 50 µK_RJ per 1e20 cm^-2 equivalent. Noise and the CIB-like
intensity term are unpolarised and left out here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ducc0
import healpy as hp
import numpy as np
from ducc0.sht import experimental as sht

from dustpred.errors import ConfigError
from dustpred.inputs.healpix_maps import write_healpix_maps
from dustpred.sky import synthetic
from dustpred.sky.synthetic import SkySettings

COMPONENTS = ("cold", "warm", "ivc", "pos")
#: Random streams of the turbulent angles, apart from the intensity sky's (synthetic.STREAMS).
TURBULENCE_STREAMS = {"cold": 101, "warm": 102, "ivc": 103, "pos": 104}


@dataclass(frozen=True)
class PolarisationSettings:
    """The polarised dust's settings (a future config section ``synthetic.polarisation``)."""

    p_max: float = 0.2
    turbulence_deg: float = 20.0
    fibre_fwhm_deg: float = 1.0

    @classmethod
    def from_config(cls, section: dict | None) -> PolarisationSettings:
        """From config ``synthetic.polarisation`` (absent keys take the defaults)."""
        keys = ("p_max", "turbulence_deg", "fibre_fwhm_deg")
        return cls(**{k: float(v) for k, v in (section or {}).items() if k in keys})

    def __post_init__(self) -> None:
        checks = [
            ("p_max", 0 < self.p_max <= 1, "in (0, 1]"),
            ("turbulence_deg", 0 <= self.turbulence_deg <= 90, "in [0, 90] degrees"),
            ("fibre_fwhm_deg", self.fibre_fwhm_deg > 0, "a positive number of degrees"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"config key 'synthetic.polarisation.{key}': found "
                    f"{getattr(self, key)!r}; expected {expected}"
                )


def gradient(alm: np.ndarray, nside: int, lmax: int, *, nthreads: int = 1) -> np.ndarray:
    """``(d/dtheta, d/(sin theta dphi))`` of the map of ``alm`` (healpy order), ``(2, npix)``
    float64: ``healpy.alm2map_der1``'s derivatives by a ducc0 spin-1 synthesis."""
    ell = hp.Alm.getlm(lmax)[0]
    grad = np.ascontiguousarray(np.stack([alm * np.sqrt(ell * (ell + 1.0)), np.zeros_like(alm)]))
    geom = ducc0.healpix.Healpix_Base(int(nside), "RING").sht_info()
    return sht.synthesis(alm=grad, lmax=int(lmax), spin=1, nthreads=int(nthreads), **geom)


def bearing(grad: np.ndarray) -> np.ndarray:
    """Angle of a tangent vector ``(theta, phi)`` components from north toward east, radians
    (the ``theta`` unit vector points south)."""
    return np.arctan2(grad[1], -grad[0])


def hi_field_angles(
    sky: SkySettings, pol: PolarisationSettings, *, nthreads: int = 1
) -> dict[str, np.ndarray]:
    """:math:`\\theta_{HI,c}` per component: ``{c: (npix,) float64}`` radians from north
    toward east, along the iso-contours of the smoothed column structure."""
    lmax = 3 * sky.nside - 1
    cl = synthetic.power_law_cl(2.7, lmax)
    ell = hp.Alm.getlm(lmax)[0]
    sigma = np.radians(pol.fibre_fwhm_deg) / np.sqrt(8 * np.log(2))
    beam = np.exp(-0.5 * ell * (ell + 1.0) * sigma**2)
    out = {}
    for c in COMPONENTS:
        # The same draws as the column's field (synthetic.components), smoothed.
        alm = synthetic.gaussian_alm(cl, synthetic._rng(sky.seed, f"{c}_N")) * beam
        out[c] = bearing(gradient(alm, sky.nside, lmax, nthreads=nthreads)) + np.pi / 2
    return out


def component_dust(
    comp: dict[str, np.ndarray], ivc_dust_ratio: float, nonlinear: bool = True
) -> dict[str, np.ndarray]:
    """Each component's share ``D_c`` of :func:`dustpred.sky.synthetic.hi_traced_dust`
    (the molecular term with the cold gas; each column alone with ``nonlinear=False``),
    ``{c: (npix,) float64}``."""
    cols = {c: comp[f"{c}_N"].astype(np.float64) for c in COMPONENTS}
    if not nonlinear:
        return cols
    n_tot = cols["cold"] + cols["warm"] + cols["ivc"] + cols["pos"]
    return {
        "cold": (2.0 / comp["cold_sigma"]) * cols["cold"] + 0.25 * np.maximum(n_tot - 4, 0) ** 1.5,
        "warm": cols["warm"],
        "ivc": ivc_dust_ratio * cols["ivc"],
        "pos": cols["pos"],
    }


def stokes_cosmo(
    dust: dict[str, np.ndarray], field_angles: dict[str, np.ndarray], p: float
) -> tuple[np.ndarray, np.ndarray]:
    """COSMO Q, U of ``p`` times each component's dust polarised perpendicular to its field
    angle (radians from north toward east), summed over components."""
    z = sum(dust[c] * np.exp(2j * (field_angles[c] + np.pi / 2)) for c in dust)
    return p * z.real, -p * z.imag  # IAU -> COSMO: U changes sign


def polarised_dust(
    sky: SkySettings, pol: PolarisationSettings, *, nthreads: int = 1
) -> dict[str, Any]:
    """Q, U of the synthetic dust and of its HI-traced part (the oracle), µK_RJ, COSMO.

    Returns
    -------
    dict
        ``Q``, ``U``, ``Q_oracle``, ``U_oracle``: ``(npix,)`` float64 RING maps; ``I``: the
        HI-traced intensity D they polarise (µK_RJ); ``hi_angles``: :func:`hi_field_angles`.
    """
    comp = synthetic.components(sky, nthreads=nthreads)
    dust = {
        c: synthetic.DUST_UK_PER_1E20 * d
        for c, d in component_dust(comp, sky.ivc_dust_ratio, sky.nonlinear).items()
    }
    hi = hi_field_angles(sky, pol, nthreads=nthreads)
    lmax, sigma_t = 3 * sky.nside - 1, np.radians(pol.turbulence_deg)
    cl = synthetic.power_law_cl(2.7, lmax)
    field = {}
    for c in COMPONENTS:
        rng = np.random.default_rng(np.random.SeedSequence([sky.seed, TURBULENCE_STREAMS[c]]))
        turbulence = synthetic.gaussian_field(sky.nside, cl, rng, nthreads=nthreads)
        field[c] = hi[c] + sigma_t * turbulence
    q, u = stokes_cosmo(dust, field, pol.p_max)
    q_oracle, u_oracle = stokes_cosmo(dust, hi, pol.p_max * np.exp(-2 * sigma_t**2))
    intensity = sum(dust.values())
    return {
        "Q": q,
        "U": u,
        "Q_oracle": q_oracle,
        "U_oracle": u_oracle,
        "I": intensity,
        "hi_angles": hi,
    }


def write_polarised_dust(
    sky: SkySettings,
    pol: PolarisationSettings,
    qu_path: str,
    oracle_path: str,
    *,
    nthreads: int = 1,
) -> dict[str, float]:
    """Write :func:`polarised_dust`'s Q/U and its oracle as Planck-style tables (columns
    ``Q_STOKES``, ``U_STOKES`` in µK_RJ, RING, ``POLCCONV = 'COSMO'``); returns a summary
    (rms of Q and U, mean polarisation fraction of the HI-traced intensity)."""
    maps = polarised_dust(sky, pol, nthreads=nthreads)
    extra = {
        "POLAR": (True, "Polarisation included"),
        "POLCCONV": ("COSMO", "Coord. convention for polarisation (COSMO/IAU)"),
    }
    units = {"Q_STOKES": "uK_RJ", "U_STOKES": "uK_RJ"}
    for path, suffix in ((qu_path, ""), (oracle_path, "_oracle")):
        columns = {"Q_STOKES": maps[f"Q{suffix}"], "U_STOKES": maps[f"U{suffix}"]}
        write_healpix_maps(path, columns, nested=False, units=units, extra=extra)
    p = np.hypot(maps["Q"], maps["U"]) / np.maximum(maps["I"], 1e-30)
    return {
        "q_rms": float(maps["Q"].std()),
        "u_rms": float(maps["U"].std()),
        "mean_fraction": float(p.mean()),
    }
