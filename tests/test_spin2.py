"""Q/U on cutouts (dustpred.polarisation.spin2): the frame against healpy, E/B on known skies.

The pure-E and pure-B skies are ``healpy.synfast`` maps (COSMO convention) at Nside 256 with
C_l^EE (or C_l^BB) ~ l^-2.5 and a 1 deg beam; two cutouts of 64 x 23.4' (l_F = 14.4) far
from each other, Hann-apodised, compared over the Fourier band 6 <= |k| <= 12 (l ~ 86-173).
The same window leaks 2.4 % of the power of a pure-E flat-sky field with this spectrum into B
in that band (computed with numpy alone, not asserted here); the tolerance, 5 %, is about
twice that. Each convention test has a companion showing that the wrong convention fails it.
"""

import healpy as hp
import numpy as np
import pytest

from dustpred.cutouts.projection import cutout_pixels
from dustpred.polarisation import spin2

NSIDE, NPIX, RESO = 256, 64, 23.4
LON, LAT, PSI = np.array([30.0, 200.0]), np.array([40.0, -55.0]), np.array([20.0, -70.0])
LEAKAGE = 0.05
WINDOW = np.outer(np.hanning(NPIX), np.hanning(NPIX))
K = np.hypot(*np.meshgrid(np.fft.fftfreq(NPIX) * NPIX, np.fft.fftfreq(NPIX) * NPIX))
BAND = (K >= 6) & (K <= 12)


def synfast(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Q, U of a sky with only E (or only B) power."""
    ell = np.arange(3 * NSIDE)
    cl = np.zeros(ell.size)
    cl[2:] = (ell[2:] / 80.0) ** -2.5
    zero = np.zeros_like(cl)
    spectra = [zero, cl, zero, zero] if mode == "E" else [zero, zero, cl, zero]
    np.random.seed(1)  # noqa: NPY002 (healpy.synfast draws from the global generator)
    _, q, u = hp.synfast(spectra, NSIDE, new=True, fwhm=np.radians(1.0))
    return q, u


@pytest.fixture(scope="module", params=["E", "B"])
def pure_sky(request):
    return request.param, *synfast(request.param)


def leaked_fraction(mode: str, q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per cutout: power of the other mode / power of ``mode`` in the band."""
    e, b = spin2.flat_eb(q * WINDOW, u * WINDOW)
    pe = (np.abs(e[..., BAND]) ** 2).sum(axis=-1)
    pb = (np.abs(b[..., BAND]) ** 2).sum(axis=-1)
    return pb / pe if mode == "E" else pe / pb


def test_a_pure_e_or_b_sky_stays_e_or_b_in_cutouts_within_the_window_leakage(pure_sky):
    mode, q, u = pure_sky
    fractions = leaked_fraction(mode, *spin2.cutout_qu(q, u, LON, LAT, PSI, npix=NPIX))
    assert (fractions < LEAKAGE).all(), fractions


@pytest.mark.parametrize("wrong", ["IAU sign of U", "no frame rotation", "frame angle reversed"])
def test_the_pure_sky_test_fails_with_a_wrong_convention(pure_sky, wrong):
    mode, q, u = pure_sky
    pix = cutout_pixels(NSIDE, LON, LAT, PSI, npix=NPIX, reso_arcmin=RESO)
    alpha = spin2.frame_angles(LON, LAT, PSI, npix=NPIX, reso_arcmin=RESO)
    q, u = q[pix], u[pix]
    if wrong == "IAU sign of U":
        u = -u
    elif wrong == "no frame rotation":
        alpha = np.zeros_like(alpha)
    else:
        alpha = -alpha
    fractions = leaked_fraction(mode, *spin2.to_cutout_frame(q, u, alpha))
    assert (fractions > 10 * LEAKAGE).any(), fractions


def healpy_frame_angles(lon: float, lat: float, psi: float) -> np.ndarray:
    """The frame angle from healpy's projector alone: central differences of neighbouring
    pixels' directions for the +y and +x axes, their bearings from (theta, phi), bisected."""
    proj = hp.projector.GnomonicProj(rot=(lon, lat, psi), xsize=NPIX, reso=RESO)
    vec = np.asarray(proj.xy2vec(*proj.ij2xy()))  # (3, NPIX, NPIX), [row i = y, column j = x]
    theta, phi = hp.vec2ang(vec[:, 1:-1, 1:-1].reshape(3, -1).T)
    e_north = -np.stack([np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), -np.sin(theta)])
    e_east = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)])
    bearings = []
    for step in (vec[:, 2:, 1:-1] - vec[:, :-2, 1:-1], vec[:, 1:-1, 2:] - vec[:, 1:-1, :-2]):
        t = step.reshape(3, -1)
        bearings.append(np.arctan2((t * e_east).sum(0), (t * e_north).sum(0)))
    along_y, along_x = bearings
    angle = along_y + 0.5 * np.angle(np.exp(1j * (along_x + np.pi / 2 - along_y)))
    return angle.reshape(NPIX - 2, NPIX - 2)


def test_frame_angles_match_healpy_projector_directions():
    # A gnomonic grid line is a great circle, so the chord between a pixel's two neighbours
    # on it points along its tangent: the two routes agree to rounding (1e-14 seen).
    alpha = spin2.frame_angles(LON, LAT, PSI, npix=NPIX, reso_arcmin=RESO)
    for k in range(LON.size):
        reference = healpy_frame_angles(LON[k], LAT[k], PSI[k])
        difference = np.angle(np.exp(1j * (alpha[k, 1:-1, 1:-1] - reference)))
        assert np.abs(difference).max() < 1e-10


def test_a_quarter_turn_of_a_cutout_is_its_rot90_with_q_and_u_negated():
    q, u = synfast("E")
    turned = spin2.cutout_qu(q, u, LON, LAT, PSI + 90.0, npix=NPIX)
    expected = spin2.rot90_qu(*spin2.cutout_qu(q, u, LON, LAT, PSI, npix=NPIX))
    for found, wanted in zip(turned, expected, strict=True):
        np.testing.assert_allclose(found, wanted, rtol=0, atol=1e-12 * np.abs(q).max())
    # (np.rot90 alone, without the sign change, is wrong: Q and U are spin 2)
    assert not np.allclose(turned[0], -expected[0])


def test_mirroring_keeps_e_as_e_only_with_u_negated():
    mode, (q, u) = "E", spin2.cutout_qu(*synfast("E"), LON, LAT, PSI, npix=NPIX)
    assert (leaked_fraction(mode, *spin2.mirror_qu(q, u)) < LEAKAGE).all()
    assert (leaked_fraction(mode, q[..., ::-1], u[..., ::-1]) > 10 * LEAKAGE).any()


@pytest.mark.parametrize(
    ("q_wave", "u_wave", "mode"),
    [
        ("cos x", "0", "E"),  # polarisation along the wavevector (x)
        ("-cos y", "0", "E"),  # along the wavevector (y): chi = 90 deg
        ("0", "cos x", "B"),  # at 45 deg to it
        ("0", "cos(x+y)", "E"),  # wavevector at 45 deg, polarisation along it
    ],
)
def test_flat_eb_of_plane_waves(q_wave, u_wave, mode):
    x = np.arange(NPIX)[None, :] * 2 * np.pi * 4 / NPIX
    y = np.arange(NPIX)[:, None] * 2 * np.pi * 4 / NPIX
    waves = {"0": 0 * x * y, "cos x": np.cos(x + 0 * y), "-cos y": -np.cos(y + 0 * x)}
    waves["cos(x+y)"] = np.cos(x + y)
    e, b = spin2.flat_eb(waves[q_wave], waves[u_wave])
    power = {"E": (np.abs(e) ** 2).sum(), "B": (np.abs(b) ** 2).sum()}
    other = "B" if mode == "E" else "E"
    assert power[other] < 1e-20 * power[mode]
