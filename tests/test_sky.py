"""dustpred.sky.synthetic: determinism, the documented statistics, and the layouts of the files."""

import math

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits

from dustpred.inputs.healpix_maps import read_healpix_map
from dustpred.inputs.hi_cube import channels_in_range, open_hi_cube
from dustpred.sky import synthetic

NSIDE = 32


def simulate(directory, nside=NSIDE, seed=3, run=None, **kwargs):
    settings = synthetic.SkySettings(nside=nside, seed=seed, **kwargs)
    paths = {k: directory / f"{k}.fits" for k in ("hi", "dust", "mask", "oracle")}
    synthetic.simulate_sky(
        settings, paths["hi"], paths["dust"], paths["mask"], paths["oracle"], **(run or {})
    )
    return paths


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sky"))


@pytest.fixture(scope="module")
def cube(sim):
    opened = open_hi_cube(sim["hi"])
    return opened.velocities, opened.read_channels(np.arange(opened.nchan))


# --- determinism ----------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path):
    a = simulate(tmp_path / "a", nside=16, seed=11)
    b = simulate(tmp_path / "b", nside=16, seed=11)
    for kind in a:
        assert a[kind].read_bytes() == b[kind].read_bytes(), kind


def test_thread_count_does_not_change_the_bytes(tmp_path):
    # 3072 pixels in blocks of 500: 7 HI blocks, computed 3 at a time with 3 threads.
    a = simulate(tmp_path / "a", nside=16, seed=11, run={"nthreads": 1, "block_pixels": 500})
    b = simulate(tmp_path / "b", nside=16, seed=11, run={"nthreads": 3, "block_pixels": 500})
    for kind in a:
        assert a[kind].read_bytes() == b[kind].read_bytes(), kind


def test_other_seed_gives_other_sky(tmp_path):
    a = simulate(tmp_path / "a", nside=16, seed=11)
    b = simulate(tmp_path / "b", nside=16, seed=12)
    da = read_healpix_map(a["dust"], "I_ML_FULL")
    db = read_healpix_map(b["dust"], "I_ML_FULL")
    assert abs(np.corrcoef(da, db)[0, 1]) < 0.5


def test_field_streams_are_independent_of_numpy_global_rng():
    np.random.seed(0)  # noqa: NPY002 (the legacy global RNG must not matter)
    a = synthetic.gaussian_field(8, synthetic.power_law_cl(2.7, 23), np.random.default_rng(5))
    np.random.seed(1)  # noqa: NPY002
    b = synthetic.gaussian_field(8, synthetic.power_law_cl(2.7, 23), np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


# --- building blocks ------------------------------------------------------------------


def test_channel_grid_is_hi4pi_like():
    v = synthetic.channel_velocities((-120.0, 80.0), synthetic.HI4PI_CHANNEL_KMS)
    assert v.size == 156 and v[0] >= -120 and v[-1] <= 80
    np.testing.assert_allclose(
        v / synthetic.HI4PI_CHANNEL_KMS, np.round(v / synthetic.HI4PI_CHANNEL_KMS)
    )
    assert channels_in_range(v, -64.5, 17.0).size == 64  # the paper's 64 maps


def test_power_spectrum_of_gaussian_field():
    # Average anafast over realisations: within 10 % of the input C_ell in ell bands
    # (the scatter of 20 realisations of a band of >= 100 modes is < 3 %).
    nside, lmax = 32, 95
    cl = synthetic.power_law_cl(2.7, lmax)
    est = np.mean(
        [
            hp.anafast(
                synthetic.gaussian_field(nside, cl, np.random.default_rng(s), nthreads=2), lmax=lmax
            )
            for s in range(20)
        ],
        axis=0,
    )
    for lo, hi in ((5, 15), (15, 40), (40, 60)):
        ratio = est[lo:hi].sum() / cl[lo:hi].sum()
        assert abs(ratio - 1) < 0.1, (lo, hi, ratio)


def test_field_normalisation_is_unit_variance_up_to_767():
    cl = synthetic.power_law_cl(2.7, 767)
    ell = np.arange(768)
    assert np.sum((2 * ell + 1) * cl) / (4 * np.pi) == pytest.approx(1.0, rel=1e-12)
    assert cl[0] == 0 and cl[1] == cl[7]  # no monopole; flat below the knee


def test_lognormal_has_the_documented_mean():
    g = np.random.default_rng(0).standard_normal(2_000_000)
    assert synthetic.lognormal(2.0, 0.9, g).mean() == pytest.approx(2.0, rel=5e-3)


def test_norm_cdf_matches_erf():
    x = np.linspace(-8, 8, 4001)
    exact = np.array([0.5 * (1 + math.erf(t / math.sqrt(2))) for t in x])
    np.testing.assert_allclose(synthetic._norm_cdf(x.astype(np.float32)), exact, atol=1e-6)


def test_line_profile_integrates_to_column():
    # sum T dv = 54.85 N K km/s, and channel averages match a finely sampled Gaussian.
    v = synthetic.channel_velocities((-60.0, 60.0), synthetic.HI4PI_CHANNEL_KMS)
    dv = synthetic.HI4PI_CHANNEL_KMS
    n, v0, s = np.array([1.0, 3.0]), np.array([-3.3, 10.0]), np.array([0.8, 6.0])
    t = synthetic.line_channels(n, v0, s, v, dv)
    np.testing.assert_allclose(t.sum(axis=1) * dv, 54.85 * n, rtol=1e-5)
    fine = np.linspace(v[20] - dv / 2, v[20] + dv / 2, 20001)
    for i in range(2):
        gauss = (
            54.85 * n[i] / (s[i] * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((fine - v0[i]) / s[i]) ** 2)
        )
        assert t[i, 20] == pytest.approx(gauss.mean(), rel=1e-4, abs=1e-6)


def test_latitude_profile_brighter_toward_plane():
    f = synthetic.latitude_profile(16)
    theta, _ = hp.pix2ang(16, np.arange(f.size))
    b = np.abs(90 - np.degrees(theta))
    assert f[b < 5].min() == pytest.approx(np.sqrt(6.0))
    assert f[b > 80].max() < 0.8
    assert np.all(np.diff(f[np.argsort(b)]) <= 1e-12)


# --- statistics of a simulated sky -----------------------------------------------------


def test_most_hi_emission_is_inside_the_paper_range(cube):
    # Fig. 1 of the paper: -64.5..17 km/s "contains most of the 21 cm signal".
    v, t = cube
    inside = channels_in_range(v, -64.5, 17.0)
    assert t[:, inside].sum() / t.sum() > 0.9


def test_hi_noise_level(cube):
    # The last channel (+79.9 km/s) is ~8 sigma beyond every line: pure noise of
    # 43 mK * Nside/256 per pixel.
    _, t = cube
    assert t[:, -1].std() == pytest.approx(0.043 * NSIDE / 256, rel=0.05)
    assert abs(t[:, -1].mean()) < 5 * 0.043 * NSIDE / 256 / np.sqrt(t.shape[0])


def test_cold_gas_is_optically_thick():
    settings = synthetic.SkySettings(nside=8, seed=1)
    comp = synthetic.components(settings)
    v = synthetic.channel_velocities(settings.velocity_kms, settings.channel_kms)
    comp["cold_N"][:] = 1e3  # an extreme column saturates at 60 K
    for k in ("warm_N", "ivc_N", "pos_N"):
        comp[k][:] = 0.0
    t = synthetic.hi_block(comp, slice(0, 20), v, settings.channel_kms)
    assert t.max() <= 60.0 and t.max() > 59.0


def test_dust_is_not_a_linear_function_of_the_channels(sim, cube):
    v, t = cube
    oracle = read_healpix_map(sim["oracle"], "I_ML_FULL")
    x = np.c_[t[:, channels_in_range(v, -64.5, 17.0)], np.ones(t.shape[0])]
    w = np.linalg.lstsq(x, oracle, rcond=None)[0]
    r2 = 1 - np.sum((x @ w - oracle) ** 2) / np.sum((oracle - oracle.mean()) ** 2)
    assert r2 < 0.9  # ~0.78 on this sky: line widths and the molecular term are nonlinear


def test_dust_minus_oracle_is_cib_plus_noise(sim):
    s = synthetic.SkySettings(nside=NSIDE)
    dust = read_healpix_map(sim["dust"], "I_ML_FULL") / synthetic.DUST_UK_PER_1E20
    oracle = read_healpix_map(sim["oracle"], "I_ML_FULL") / synthetic.DUST_UK_PER_1E20
    ell = np.arange(3 * NSIDE)
    cib_var = np.sum((2 * ell + 1) * synthetic.power_law_cl(1.0, 3 * NSIDE - 1)) / (4 * np.pi)
    noise = s.dust_noise * 23.4 / hp.nside2resol(256, arcmin=True) * NSIDE / 256
    expected = s.cib_amplitude**2 * cib_var + noise**2
    assert (dust - oracle).var() == pytest.approx(expected, rel=0.15)


def test_masks_keep_their_sky_fraction_and_nest(sim):
    mask_nside = NSIDE // 2
    keep = {f: read_healpix_map(sim["mask"], f) for f in synthetic.MASK_FIELDS}
    for name, m in keep.items():
        if name[-1] not in "NS":
            assert m.mean() == pytest.approx(int(name[2:4]) / 100, abs=1 / m.size)
    order = ("LR16", "LR24", "LR33", "LR42", "LR53", "LR63", "LR72")
    for small, big in zip(order[:-1], order[1:], strict=True):
        assert np.all(keep[small] <= keep[big])
    theta, _ = hp.pix2ang(mask_nside, np.arange(12 * mask_nside**2))
    assert keep["LR63N"][theta > np.pi / 2].sum() == 0
    np.testing.assert_array_equal(keep["LR63N"] + keep["LR63S"], keep["LR63"])


def test_masks_remove_the_dusty_plane(sim):
    dust = read_healpix_map(sim["dust"], "I_ML_FULL")
    keep = hp.ud_grade(read_healpix_map(sim["mask"], "LR72"), NSIDE)
    assert dust[keep < 0.5].mean() > 2 * dust[keep > 0.5].mean()


# --- layouts --------------------------------------------------------------------------


def test_files_have_the_real_products_layouts(sim):
    dust = fits.getheader(sim["dust"], 1)
    assert (dust["TTYPE1"], dust["TUNIT1"], dust["ORDERING"]) == ("I_ML_FULL", "uK_RJ", "NESTED")
    assert dust["NSIDE"] == NSIDE and dust["COORDSYS"] == "GALACTIC"
    mask = fits.getheader(sim["mask"], 1)
    assert [mask[f"TTYPE{i + 1}"] for i in range(9)] == list(synthetic.MASK_FIELDS)
    assert mask["NSIDE"] == NSIDE // 2
    hi = fits.getheader(sim["hi"], 1)
    assert (hi["TTYPE1"], hi["TUNIT1"], hi["CTYPE1"], hi["CUNIT1"]) == ("TB", "K", "VRAD", "m/s")
    assert hi["NSIDE"] == NSIDE and hi["COORDSYS"] == "G"


def test_linear_sky_has_dust_equal_to_the_total_column():
    settings = synthetic.SkySettings(nside=8, seed=1, nonlinear=False)
    comp = synthetic.components(settings)
    n_tot = sum(comp[f"{k}_N"].astype(np.float64) for k in ("cold", "warm", "ivc", "pos"))
    np.testing.assert_allclose(
        synthetic.hi_traced_dust(comp, 0.9, nonlinear=False), n_tot, rtol=1e-12
    )


def test_linear_sky_cold_gas_is_optically_thin():
    settings = synthetic.SkySettings(nside=8, seed=1, nonlinear=False)
    comp = synthetic.components(settings)
    v = synthetic.channel_velocities(settings.velocity_kms, settings.channel_kms)
    comp["cold_N"][:] = 1e3
    for k in ("warm_N", "ivc_N", "pos_N"):
        comp[k][:] = 0.0
    t = synthetic.hi_block(comp, slice(0, 20), v, settings.channel_kms, optically_thick=False)
    # sum(T) dv = 54.85 N when thin: 54,850 K km/s, far above the thick 60 K ceiling
    np.testing.assert_allclose(t.sum(axis=1) * settings.channel_kms, 54.85e3, rtol=1e-3)


def test_nonlinear_switch_comes_from_the_config():
    assert synthetic.SkySettings.from_config({"nonlinear": False}, 5).nonlinear is False
    assert synthetic.SkySettings.from_config({}, 5).nonlinear is True
