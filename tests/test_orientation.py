"""HI-orientation baselines (dustpred.polarisation.orientation) on images of known structure.

Stripes of wavevector angle theta (from +x toward +y, the cutout frame) have their intensity
gradient along theta, so the dust they trace is polarised at chi = theta: the template is
I (cos 2 theta, sin 2 theta). Tolerance 1e-2 on cos/sin 2chi away from the image border and
the mask, where the smoothing reads zeros.
"""

import numpy as np
import pytest

from dustpred.polarisation import orientation

NPIX, FWHM = 64, 2.5


def stripes(theta_deg: float, amplitude: float = 1.0, wavelength: float = 9.0) -> np.ndarray:
    y, x = np.mgrid[:NPIX, :NPIX].astype(float)
    t = np.radians(theta_deg)
    return 5.0 + amplitude * np.sin(2 * np.pi * (x * np.cos(t) + y * np.sin(t)) / wavelength)


INNER = (slice(10, -10), slice(10, -10))


@pytest.mark.parametrize("theta", [0.0, 30.0, 75.0, 120.0])
def test_stripes_give_the_gradient_angle_in_the_cutout_frame(theta):
    cos2, sin2 = orientation.orientation(stripes(theta), np.zeros((NPIX, NPIX), bool), FWHM)
    t = np.radians(theta)
    np.testing.assert_allclose(cos2[INNER], np.cos(2 * t), atol=1e-2)
    np.testing.assert_allclose(sin2[INNER], np.sin(2 * t), atol=1e-2)


def test_swapping_the_image_axes_reverses_the_angle():
    """Companion: an axis convention error (rows as x) would turn 30 deg into 60 deg."""
    cos2, _ = orientation.orientation(stripes(30.0).T, np.zeros((NPIX, NPIX), bool), FWHM)
    assert abs(cos2[INNER].mean() - np.cos(np.radians(120))) < 1e-2


def test_masked_pixels_get_no_template_and_do_not_bend_the_angle_beside_them():
    mask = np.zeros((NPIX, NPIX), bool)
    mask[:, :30] = True
    image = np.where(mask, 0.0, stripes(30.0))
    cos2, sin2 = orientation.orientation(image, mask, FWHM)
    assert (cos2[mask] == 0).all() and (sin2[mask] == 0).all()
    beside = (slice(10, -10), slice(34, -10))  # from 4 pixels off the mask edge
    np.testing.assert_allclose(cos2[beside], np.cos(np.radians(60)), atol=2e-2)


def test_channel_template_keeps_each_channel_orientation_that_integration_mixes():
    a, b = stripes(0.0, 1.0), stripes(90.0, 1.0)
    inputs = np.stack([a, b])[None]  # one cutout, two channels
    mask = np.zeros((1, NPIX, NPIX), bool)
    q_ch, u_ch = orientation.channel_template(inputs, mask, FWHM)
    # Channel 0 at chi = 0 (Q = +I), channel 1 at chi = 90 deg (Q = -I): Q_ch = I_a - I_b.
    np.testing.assert_allclose(q_ch[0][INNER], (a - b)[INNER], atol=0.1)
    np.testing.assert_allclose(u_ch[0][INNER], 0.0, atol=0.1)
    # The sum is a checkerboard-like map with no single orientation per channel.
    q_int, _ = orientation.integrated_template(inputs, mask, FWHM)
    assert np.abs(q_int[0][INNER] - q_ch[0][INNER]).mean() > 0.5


def test_fit_fraction_recovers_the_scale_of_a_scaled_template():
    rng = np.random.default_rng(2)
    q, u = rng.normal(size=(2, 3, NPIX, NPIX))
    mask = rng.random((3, NPIX, NPIX)) < 0.2
    noise = rng.normal(scale=0.01, size=(2, 3, NPIX, NPIX))
    f = orientation.fit_fraction(0.15 * q + noise[0], 0.15 * u + noise[1], q, u, mask)
    assert abs(f - 0.15) < 1e-3
