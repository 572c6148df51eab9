"""dustpred.metrics: r(ell), r50, r150 against analytic cases and the contract's geometry.

Reference values are computed independently of the implementation: mode sets from integer
arithmetic on (kx, ky), and the expected correlation of noisy maps from the closed form for
the phase difference of two correlated circular complex Gaussians.
"""

import math

import numpy as np
import pytest
import torch

from dustpred.errors import InputError
from dustpred.metrics import (
    TAPER_PIX,
    apodisation_window,
    apodise,
    bin_edges,
    ell_fundamental,
    ell_grid,
    modes_per_bin,
    r50_r150,
    r50_r150_torch,
    r_ell,
    r_ell_r50_r150,
)

N = 64
SIDE = 24.96
ELL_F = 360.0 / SIDE  # 2 pi / (side in radians) = 14.423
# The amplitude floor (metrics.EPS_POWER = 1e-12 of the largest mode power) shrinks |r_k| of a
# mode by ~1e-12 max|T|^2 / |T_k|^2: < 1e-8 for white-noise maps, whose weakest modes in the
# bands are > 1e-4 of the strongest.
FLOOR_TOL = 1e-8


def integer_k2(n=N):
    """|k|^2 of every FFT mode (FFT order), in exact integers."""
    k = np.fft.fftfreq(n, d=1.0 / n).round().astype(int)
    return k[:, None] ** 2 + k[None, :] ** 2


def hermitian_sign_flip(field, flip):
    """Field whose Fourier modes are those of `field`, negated where `flip` (symmetric in k)."""
    return np.fft.ifft2(np.fft.fft2(field) * np.where(flip, -1.0, 1.0)).real


def hyp2f1_half_half_two(z, terms=4000):
    """Gauss 2F1(1/2, 1/2; 2; z) by its power series (|z| < 1)."""
    total, term = 1.0, 1.0
    for k in range(terms):
        term *= (0.5 + k) ** 2 / ((2 + k) * (k + 1)) * z
        total += term
    return total


def expected_mode_r(snr):
    """E[r_k] for T~ = T + n, T and n circular complex Gaussian modes, power ratio `snr`.

    r_k is the cosine of the phase difference of two circular complex Gaussians with
    correlation gamma = sqrt(snr / (1 + snr)); its mean is (pi/4) gamma 2F1(1/2, 1/2; 2;
    gamma^2) (the interferometric-phase result; checked against a direct 2e6-sample Monte
    Carlo of complex Gaussians to 3e-4 when this test was written).
    """
    gamma2 = snr / (1.0 + snr)
    return math.pi / 4 * math.sqrt(gamma2) * hyp2f1_half_half_two(gamma2)


# --- geometry -------------------------------------------------------------------------------


def test_fundamental_multipole_of_the_paper_cutout_is_14_42():
    assert ell_fundamental(SIDE) == pytest.approx(14.4231, abs=1e-4)
    assert ell_fundamental() == pytest.approx(ELL_F, rel=1e-12)


def test_ell_grid_is_ell_f_times_integer_wavenumber():
    ell = ell_grid((N, N), SIDE)
    np.testing.assert_allclose(ell, ELL_F * np.sqrt(integer_k2()), rtol=1e-12)
    assert ell[0, 3] == pytest.approx(3 * ELL_F) and ell[-3, 0] == pytest.approx(3 * ELL_F)


def test_bins_have_width_ell_f_from_ell_f_to_half_the_grid():
    edges = bin_edges(N, SIDE)
    np.testing.assert_allclose(edges, ELL_F * np.arange(1, N // 2 + 2), rtol=1e-12)
    rng = np.random.default_rng(0)
    t = rng.normal(size=(N, N))
    centres, r = r_ell(t, t, side_deg=SIDE)
    assert centres.shape == (N // 2,) and r.shape == (N // 2,)
    np.testing.assert_allclose(centres, ELL_F * (np.arange(1, N // 2 + 1) + 0.5), rtol=1e-12)


def test_mode_counts_per_bin_match_integer_annuli():
    k2 = integer_k2()
    expected = [np.count_nonzero((k2 >= j * j) & (k2 < (j + 1) ** 2)) for j in range(1, N // 2 + 1)]
    np.testing.assert_array_equal(modes_per_bin(N, SIDE), expected)


@pytest.mark.parametrize("j", [1, 3, 4, 7, 20, 32])
def test_negating_exactly_one_annulus_gives_minus_one_in_its_bin_only(j):
    """Modes with j <= |k| < j + 1 (integer test: lower edge inclusive) form bin j."""
    rng = np.random.default_rng(j)
    t = rng.normal(size=(N, N))
    k2 = integer_k2()
    p = hermitian_sign_flip(t, (k2 >= j * j) & (k2 < (j + 1) ** 2))
    _, r = r_ell(t, p, side_deg=SIDE)
    expected = np.ones(N // 2)
    expected[j - 1] = -1.0
    np.testing.assert_allclose(r, expected, atol=1e-9)


def test_r50_and_r150_average_exactly_the_contract_modes():
    """r50: ell_F <= ell < 100, i.e. 1 <= |k|^2 <= 48; r150: 100 <= ell < 200, 49..192."""
    assert 48 < (100 / ELL_F) ** 2 < 49 and 192 < (200 / ELL_F) ** 2 < 193
    rng = np.random.default_rng(1)
    t = rng.normal(size=(N, N))
    k2 = integer_k2()
    # Negate a symmetric random subset of modes, including the edge cases |k|^2 = 1, 48, 49.
    flip = rng.random((N, N)) < 0.3
    flip = flip | np.roll(flip[::-1, ::-1], 1, axis=(0, 1))  # make flip(k) == flip(-k)
    flip |= np.isin(k2, [1, 45, 49, 192])
    p = hermitian_sign_flip(t, flip)
    in50 = (k2 >= 1) & (k2 <= 48)
    in150 = (k2 >= 49) & (k2 <= 192)
    r50, r150 = r50_r150(t, p, side_deg=SIDE)
    assert r50 == pytest.approx(1 - 2 * flip[in50].mean(), abs=1e-9)
    assert r150 == pytest.approx(1 - 2 * flip[in150].mean(), abs=1e-9)


# --- analytic cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("a", [1.0, 3.7, 1e-3, 1e4])
def test_positive_rescaling_gives_one_everywhere(a):
    rng = np.random.default_rng(2)
    t = rng.normal(size=(3, N, N))
    _, r = r_ell(t, a * t, side_deg=SIDE)
    np.testing.assert_allclose(r, 1.0, atol=FLOOR_TOL)
    r50, r150 = r50_r150(t, a * t, side_deg=SIDE)
    np.testing.assert_allclose([r50, r150], 1.0, atol=FLOOR_TOL)
    _, rp = r_ell(t, a * t, side_deg=SIDE, form="power")
    np.testing.assert_allclose(rp, 1.0, atol=1e-12)


def test_negative_rescaling_gives_minus_one():
    t = np.random.default_rng(3).normal(size=(N, N))
    r50, r150 = r50_r150(t, -2.0 * t, side_deg=SIDE)
    assert r50 == pytest.approx(-1.0, abs=FLOOR_TOL) and r150 == pytest.approx(-1.0, abs=FLOOR_TOL)


def test_independent_fields_scatter_around_zero_as_one_over_sqrt_modes():
    """Independent fields: r_k = cos(uniform phase), mean 0, variance 1/2 per independent
    mode; a bin of M modes has M/2 independent ones, so sd(r(ell)) = 1/sqrt(M)."""
    n_real = 400
    rng = np.random.default_rng(4)
    t = rng.normal(size=(n_real, N, N))
    p = rng.normal(size=(n_real, N, N))
    _, r = r_ell(t, p, side_deg=SIDE)
    m = modes_per_bin(N, SIDE)
    sd_expected = 1 / np.sqrt(m)
    # mean over realisations: 0 within 4 standard errors in every bin
    assert np.all(np.abs(r.mean(axis=0)) < 4 * sd_expected / np.sqrt(n_real))
    # sample sd / expected: chi-square with n_real - 1 dof, relative sd sqrt(1/(2 (n - 1)))
    ratio = r.std(axis=0, ddof=1) / sd_expected
    assert np.all(np.abs(ratio - 1) < 4 * math.sqrt(1 / (2 * (n_real - 1))))
    # r50/r150 are means over many more modes: a single pair is close to zero
    k2 = integer_k2()
    m50 = np.count_nonzero((k2 >= 1) & (k2 <= 48))
    r50, _ = r50_r150(t, p, side_deg=SIDE)
    assert np.abs(r50).max() < 4.5 / math.sqrt(m50)


@pytest.mark.parametrize("snr", [0.25, 1.0, 4.0])
def test_signal_plus_noise_gives_the_analytic_mean_correlation(snr):
    """T~ = T + n with white T and n of power ratio snr in every mode (see expected_mode_r).

    Tolerance: 4 standard errors, with Var(r_k) <= 1 - mu^2 per independent mode and
    half of the band's modes independent (k and -k of a real map share r_k).
    """
    n_real = 60
    rng = np.random.default_rng(5)
    t = rng.normal(size=(n_real, N, N))
    noise = rng.normal(size=(n_real, N, N)) / math.sqrt(snr)
    mu = expected_mode_r(snr)
    r50, r150 = r50_r150(t, t + noise, side_deg=SIDE)
    k2 = integer_k2()
    for values, n_modes in (
        (r50, np.count_nonzero((k2 >= 1) & (k2 <= 48))),
        (r150, np.count_nonzero((k2 >= 49) & (k2 <= 192))),
    ):
        tol = 4 * math.sqrt((1 - mu**2) / (n_real * n_modes / 2))
        assert values.mean() == pytest.approx(mu, abs=tol)
    # the full r(ell) curve: all bins from ell = 200 on average over enough modes
    _, r = r_ell(t, t + noise, side_deg=SIDE)
    m = modes_per_bin(N, SIDE)
    tol = 4 * np.sqrt((1 - mu**2) / (n_real * m / 2))
    assert np.all(np.abs(r.mean(axis=0) - mu) < tol)


def test_expected_mode_r_reference_limits():
    """The closed form goes to 1 at infinite signal-to-noise and to (pi/4) gamma at low."""
    assert expected_mode_r(1e8) == pytest.approx(1.0, abs=1e-3)
    assert expected_mode_r(1e-6) == pytest.approx(math.pi / 4 * math.sqrt(1e-6), rel=1e-5)


@pytest.mark.parametrize("snr", [0.25, 1.0, 4.0])
def test_power_form_gives_gamma_for_signal_plus_noise(snr):
    """C_TT~ / sqrt(C_TT C_T~T~) -> sqrt(snr / (1 + snr)) when spectra are averaged over
    many modes. Per cutout the ratio of bin means has a bias O(1/modes); averaged over 60
    cutouts, bins j >= 8 (>= 50 modes each) agree within 4 standard errors plus 2/modes."""
    n_real = 60
    rng = np.random.default_rng(6)
    t = rng.normal(size=(n_real, N, N))
    p = t + rng.normal(size=(n_real, N, N)) / math.sqrt(snr)
    _, r = r_ell(t, p, side_deg=SIDE, form="power")
    gamma = math.sqrt(snr / (1 + snr))
    m = modes_per_bin(N, SIDE)
    tol = 4 * (1 - gamma**2) / np.sqrt(n_real * m / 2) + 2.0 / m
    assert np.all(np.abs(r.mean(axis=0) - gamma)[7:] < tol[7:])


def test_zero_amplitude_modes_give_zero_not_nan():
    t = np.zeros((N, N))
    t[10:20, 10:20] = 1.0
    _, r = r_ell(t, np.zeros((N, N)), side_deg=SIDE)
    assert np.all(np.isfinite(r)) and np.all(r == 0)
    # a single cosine: only its two modes have power; every other mode contributes 0
    y = np.arange(N)[:, None] * np.ones((1, N))
    c = np.cos(2 * np.pi * 3 * y / N)
    _, r = r_ell(c, c, side_deg=SIDE)
    m = modes_per_bin(N, SIDE)
    assert r[2] == pytest.approx(2 / m[2], abs=1e-9)
    assert np.all(np.delete(r, 2) == pytest.approx(0, abs=1e-9))


def test_batch_axes_are_independent():
    rng = np.random.default_rng(7)
    t = rng.normal(size=(2, 3, N, N))
    p = t + rng.normal(size=(2, 3, N, N))
    r50, r150 = r50_r150(t, p, side_deg=SIDE)
    assert r50.shape == (2, 3)
    one50, one150 = r50_r150(t[1, 2], p[1, 2], side_deg=SIDE)
    assert r50[1, 2] == pytest.approx(one50, abs=1e-12) and r150[1, 2] == pytest.approx(one150)


def test_combined_function_equals_r_ell_and_r50_r150():
    rng = np.random.default_rng(8)
    t = rng.normal(size=(5, N, N))
    p = t + rng.normal(size=(5, N, N))
    ell, r, r50, r150 = r_ell_r50_r150(t, p, side_deg=SIDE)
    ell_ref, r_ref = r_ell(t, p, side_deg=SIDE)
    r50_ref, r150_ref = r50_r150(t, p, side_deg=SIDE)
    for got, want in ((ell, ell_ref), (r, r_ref), (r50, r50_ref), (r150, r150_ref)):
        np.testing.assert_array_equal(got, want)


def test_mismatched_or_non_square_shapes_raise_input_error():
    with pytest.raises(InputError, match="shape"):
        r_ell(np.zeros((N, N)), np.zeros((N, N - 1)))
    with pytest.raises(InputError, match="square"):
        r50_r150(np.zeros((N, N // 2)), np.zeros((N, N // 2)))


# --- offset-robust form ------------------------------------------------------------------------


def red_fields(rng, n, mean_over_rms=2.0, slope=-2.5):
    """n Gaussian fields (n, N, N) with power ~ |k|^slope, unit rms and the given mean."""
    k = np.sqrt(integer_k2())
    amp = np.where(k > 0, np.maximum(k, 1.0) ** (slope / 2), 0.0)
    f = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, N, N))) * amp).real
    return f / f.std(axis=(-2, -1), keepdims=True) + mean_over_rms


def blob_mask(frac=0.3, centre=(40, 24)):
    """(N, N) disc masking ``frac`` of the cutout (29.9 % for 0.3), off the centre."""
    y, x = np.mgrid[:N, :N]
    return np.hypot(y - centre[0], x - centre[1]) < math.sqrt(frac * N * N / math.pi)


def test_window_is_zero_on_the_mask_a_cosine_taper_near_it_and_one_beyond():
    mask = np.zeros((N, N), bool)
    mask[30, 30] = True
    a = apodisation_window(mask, taper_pix=4.0)

    def taper(d):
        return 0.5 * (1 - math.cos(math.pi * d / 4.0))

    assert a[30, 30] == 0.0
    assert a[30, 31] == pytest.approx(taper(1.0), abs=1e-15)  # 0.146
    assert a[31, 31] == pytest.approx(taper(math.sqrt(2)), abs=1e-15)
    assert a[33, 32] == pytest.approx(taper(math.sqrt(13)), abs=1e-15)
    assert a[34, 30] == 1.0 and a[0, 0] == 1.0
    assert np.count_nonzero(a < 1) == np.count_nonzero(integer_k2() < 16)  # |offset| < 4
    np.testing.assert_array_equal(apodisation_window(mask, taper_pix=0), ~mask)
    np.testing.assert_array_equal(apodisation_window(np.zeros((2, N, N), bool)), 1.0)


def test_window_does_not_taper_the_cutout_border():
    mask = np.zeros((N, N), bool)
    mask[:, :10] = True  # a mask touching the border tapers only along its own edge
    a = apodisation_window(mask, taper_pix=TAPER_PIX)
    np.testing.assert_array_equal(a[:, 14:], 1.0)
    np.testing.assert_allclose(a[0, 10:14], a[N // 2, 10:14], rtol=0, atol=0)


def test_apodised_map_has_zero_sum_and_ignores_an_offset():
    rng = np.random.default_rng(20)
    x = rng.normal(size=(3, N, N))
    a = apodisation_window(blob_mask())
    np.testing.assert_allclose(apodise(x, a).sum(axis=(-2, -1)), 0.0, atol=1e-10)
    np.testing.assert_allclose(apodise(x + 5.0, a), apodise(x, a), atol=1e-12)


def test_independent_fields_under_a_shared_mask_correlate_only_in_the_papers_form():
    """Two independent red fields with mean/rms = 2 under a 30 % masked blob (issue 16):
    the paper's form gives r50 = 0.32 averaged over 20 pairs (offset leaking through the
    mask); the robust form gives 0 within 0.1 (its per-pair sd is 0.1, so the mean of 20
    has sd 0.025: the bound is 4 sd)."""
    rng = np.random.default_rng(21)
    t, p = red_fields(rng, 20), red_fields(rng, 20)
    mask = blob_mask()
    paper50, _ = r50_r150(t, p, mask=mask)
    robust50, robust150 = r50_r150(t, p, mask=mask, robust=True)
    assert paper50.mean() > 0.2
    assert abs(robust50.mean()) < 0.1 and abs(robust150.mean()) < 0.1


def test_robust_form_ignores_an_offset_of_either_map_and_the_papers_does_not():
    rng = np.random.default_rng(22)
    t = red_fields(rng, 4)
    p = t + 0.5 * red_fields(rng, 4, mean_over_rms=0.0)
    mask = blob_mask()
    robust = r50_r150(t, p, mask=mask, robust=True)
    for shifted in (
        r50_r150(t + 3.0, p, mask=mask, robust=True),
        r50_r150(t, p - 7.0, mask=mask, robust=True),
    ):
        np.testing.assert_allclose(shifted, robust, atol=1e-9)
    paper, _ = r50_r150(t, p, mask=mask)
    paper_shifted, _ = r50_r150(t, p - 7.0, mask=mask)
    assert np.abs(paper_shifted - paper).min() > 0.05


@pytest.mark.parametrize("robust", [False, True])
@pytest.mark.parametrize(("a_target", "a_prediction"), [(1.0, 1e-3), (7.0, 1.0), (1.0, 1e4)])
def test_rescaling_either_map_leaves_both_forms_unchanged(robust, a_target, a_prediction):
    rng = np.random.default_rng(23)
    t, p = red_fields(rng, 3), red_fields(rng, 3)
    mask = blob_mask()
    _, r, r50, r150 = r_ell_r50_r150(t, p, mask=mask, robust=robust)
    _, r_s, r50_s, r150_s = r_ell_r50_r150(a_target * t, a_prediction * p, mask=mask, robust=robust)
    for got, want in ((r_s, r), (r50_s, r50), (r150_s, r150)):
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_robust_form_without_mask_or_offset_equals_the_papers_form():
    """Without a mask the window is 1 and only the mean (k = 0, in no bin) is removed; the
    difference is the amplitude floor's, < FLOOR_TOL."""
    rng = np.random.default_rng(24)
    t = red_fields(rng, 3, mean_over_rms=0.0)
    p = t + red_fields(rng, 3, mean_over_rms=0.0)
    _, r, r50, r150 = r_ell_r50_r150(t, p)
    _, r_rob, r50_rob, r150_rob = r_ell_r50_r150(t, p, robust=True)
    for got, want in ((r_rob, r), (r50_rob, r50), (r150_rob, r150)):
        np.testing.assert_allclose(got, want, atol=FLOOR_TOL)
    _, r_pow = r_ell(t, p, form="power")
    _, r_pow_rob = r_ell(t, p, form="power", robust=True)
    np.testing.assert_allclose(r_pow_rob, r_pow, atol=1e-12)


def test_papers_form_with_a_mask_equals_it_on_maps_already_zeroed():
    rng = np.random.default_rng(25)
    t, p = red_fields(rng, 3), red_fields(rng, 3)
    mask = rng.random((3, N, N)) < 0.3
    zeroed = np.where(mask, 0.0, t), np.where(mask, 0.0, p)
    for got, want in zip(r_ell_r50_r150(t, p, mask=mask), r_ell_r50_r150(*zeroed), strict=True):
        np.testing.assert_array_equal(got, want)


def test_bad_mask_or_taper_raises_input_error():
    with pytest.raises(InputError, match="mask has shape"):
        r50_r150(np.zeros((2, N, N)), np.zeros((2, N, N)), mask=np.zeros((3, N, N)))
    with pytest.raises(InputError, match="taper_pix"):
        apodisation_window(np.zeros((N, N), bool), taper_pix=-1.0)


# --- torch twin -------------------------------------------------------------------------------


def test_torch_twin_matches_numpy():
    rng = np.random.default_rng(8)
    t = rng.normal(size=(5, N, N)).astype(np.float32)
    p = (t + rng.normal(size=(5, N, N)) * np.array([0.1, 0.5, 1, 2, 10])[:, None, None]).astype(
        np.float32
    )
    mask = rng.random((5, N, N)) < 0.3
    t[mask] = 0
    p[mask] = 0
    r50, r150 = r50_r150(t, p, side_deg=SIDE)
    out = r50_r150_torch(torch.from_numpy(t), torch.from_numpy(p), side_deg=SIDE)
    assert out.shape == (5, 2) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), np.stack([r50, r150], axis=-1), atol=2e-5)


def test_torch_twin_does_not_overflow_for_large_amplitudes():
    """Integrated HI is ~1e3 K km/s: FFT amplitudes ~1e7, whose 4th power overflows float32."""
    rng = np.random.default_rng(9)
    t = (3e3 * (1 + rng.random((2, N, N)))).astype(np.float32)
    p = (t * 2.0 + 300 * rng.normal(size=(2, N, N))).astype(np.float32)
    out = r50_r150_torch(torch.from_numpy(t), torch.from_numpy(p))
    r50, r150 = r50_r150(t, p)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), np.stack([r50, r150], axis=-1), atol=1e-4)


def test_torch_twin_gradient_matches_finite_differences():
    rng = np.random.default_rng(10)
    n = 16  # side 16 * 23.4' = 6.24 deg: ell_F = 57.7, both bands populated
    side = n * 23.4 / 60
    t = torch.tensor(rng.normal(size=(2, n, n)), dtype=torch.float64)
    p = torch.tensor(rng.normal(size=(2, n, n)), dtype=torch.float64, requires_grad=True)

    def fn(pred):
        return r50_r150_torch(t, pred, side_deg=side)

    assert torch.autograd.gradcheck(fn, (p,), eps=1e-6, atol=1e-6)


def test_torch_twin_gradient_is_finite_for_an_all_zero_prediction_region():
    t = torch.randn(2, N, N, generator=torch.Generator().manual_seed(11))
    p = torch.zeros(2, N, N, requires_grad=True)
    with torch.no_grad():
        p[0] = t[0] * 0.5
    out = r50_r150_torch(t, p)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(p.grad).all()
    assert out[1].abs().max() == 0
