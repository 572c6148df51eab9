"""The synthetic polarised dust (dustpred.polarisation.sky) on a Nside-32 sky: its
convention, its polarisation fraction, its oracle and the information in the velocity
components."""

import healpy as hp
import numpy as np
import pytest

from dustpred.errors import ConfigError
from dustpred.polarisation import sky as pol_sky
from dustpred.sky import synthetic

SKY = synthetic.SkySettings(nside=32, seed=5)
POL = pol_sky.PolarisationSettings()


@pytest.fixture(scope="module")
def dust():
    return pol_sky.polarised_dust(SKY, POL)


def test_the_gradient_equals_healpys_alm2map_der1():
    lmax = 3 * SKY.nside - 1
    alm = synthetic.gaussian_alm(synthetic.power_law_cl(2.7, lmax), np.random.default_rng(0))
    _, d_theta, d_phi = hp.alm2map_der1(alm, SKY.nside, lmax=lmax)
    found = pol_sky.gradient(alm, SKY.nside, lmax)
    scale = np.abs(d_theta).max()
    np.testing.assert_allclose(found[0], d_theta, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(found[1], d_phi, rtol=0, atol=1e-10 * scale)


def test_a_column_rising_to_the_north_gives_north_south_polarisation_q_positive():
    # Field along the contours (east-west), dust polarised across it (north-south): in both
    # IAU and COSMO that is Q > 0, U = 0. The column grows toward the north pole: cos(theta).
    nside, lmax = 16, 47
    alm = np.zeros(hp.Alm.getsize(lmax), complex)
    alm[hp.Alm.getidx(lmax, 1, 0)] = 1.0
    angle = pol_sky.bearing(pol_sky.gradient(alm, nside, lmax)) + np.pi / 2
    q, u = pol_sky.stokes_cosmo({"c": np.ones(angle.size)}, {"c": angle}, 0.2)
    np.testing.assert_allclose(q, 0.2, atol=1e-12)
    np.testing.assert_allclose(u, 0.0, atol=1e-12)


def test_a_field_at_45_degrees_east_of_north_gives_cosmo_u_positive():
    # Field 45 deg east of north: dust at 135 deg (IAU), U_IAU = P sin(270 deg) = -P, so
    # U_COSMO = +P (POLARISATION-NOTES: COSMO differs from IAU by the sign of U).
    q, u = pol_sky.stokes_cosmo({"c": np.ones(1)}, {"c": np.full(1, np.pi / 4)}, 0.2)
    np.testing.assert_allclose([q[0], u[0]], [0.0, 0.2], atol=1e-12)


def test_the_components_add_up_to_the_intensity_skys_hi_traced_dust():
    comp = synthetic.components(SKY)
    for nonlinear in (True, False):
        parts = pol_sky.component_dust(comp, SKY.ivc_dust_ratio, nonlinear)
        total = synthetic.hi_traced_dust(comp, SKY.ivc_dust_ratio, nonlinear)
        # (the intensity sky mixes the float32 component maps in float32 products)
        np.testing.assert_allclose(sum(parts.values()), total, rtol=1e-6)


def test_the_polarisation_fraction_reaches_p_max_and_never_exceeds_it(dust):
    fraction = np.hypot(dust["Q"], dust["U"]) / dust["I"]
    assert fraction.max() <= POL.p_max * (1 + 1e-12)
    assert fraction.max() > 0.9 * POL.p_max  # where the components agree
    assert fraction.mean() < 0.8 * POL.p_max  # depolarised where they do not


def test_without_turbulence_the_sky_is_its_oracle():
    calm = pol_sky.polarised_dust(SKY, pol_sky.PolarisationSettings(turbulence_deg=0.0))
    np.testing.assert_array_equal(calm["Q"], calm["Q_oracle"])
    np.testing.assert_array_equal(calm["U"], calm["U_oracle"])


def test_the_oracle_is_the_conditional_mean_so_turbulence_only_adds_scatter(dust):
    # Truth = oracle + a part the HI cannot know: the residual does not correlate with the
    # oracle, and with 20 deg of turbulence the oracle explains much but not all of Q and U
    # (correlations 0.78 and 0.81 measured here).
    for q, q_o in ((dust["Q"], dust["Q_oracle"]), (dust["U"], dust["U_oracle"])):
        residual = q - q_o
        assert abs(np.corrcoef(residual, q_o)[0, 1]) < 0.1
        assert 0.5 < np.corrcoef(q, q_o)[0, 1] < 0.99


def test_the_velocity_components_carry_different_field_orientations(dust):
    # <cos 2 (theta_a - theta_b)> is 1 for aligned components and 0 for unrelated ones:
    # the cube holds orientations that the integrated map mixes away.
    angles = dust["hi_angles"]
    for a, b in (("cold", "warm"), ("cold", "ivc"), ("warm", "pos")):
        assert abs(np.mean(np.cos(2 * (angles[a] - angles[b])))) < 0.2, (a, b)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_sky(dust):
    again = pol_sky.polarised_dust(SKY, POL, nthreads=2)
    assert again["Q"].tobytes() == dust["Q"].tobytes()
    other = pol_sky.polarised_dust(synthetic.SkySettings(nside=32, seed=6), POL)
    assert np.corrcoef(other["Q"], dust["Q"])[0, 1] < 0.3


@pytest.mark.parametrize(
    ("key", "value"), [("p_max", 0.0), ("turbulence_deg", 120.0), ("fibre_fwhm_deg", -1.0)]
)
def test_settings_out_of_range_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"synthetic.polarisation.{key}"):
        pol_sky.PolarisationSettings(**{key: value})


def test_the_written_tables_read_back_as_cosmo_qu_in_uk_rj(dust, tmp_path):
    from dustpred.inputs.stokes_maps import read_qu_maps

    paths = tmp_path / "qu.fits", tmp_path / "oracle.fits"
    pol_sky.write_polarised_dust(SKY, POL, *map(str, paths))
    for path, suffix in zip(paths, ("", "_oracle"), strict=True):
        qu, unit, convention, _ = read_qu_maps(path)
        assert unit == "uK_RJ" and convention == "COSMO"
        np.testing.assert_allclose(qu[0], dust[f"Q{suffix}"], rtol=1e-6)
        np.testing.assert_allclose(qu[1], dust[f"U{suffix}"], rtol=1e-6)


def test_settings_from_config_take_the_given_keys():
    settings = pol_sky.PolarisationSettings.from_config({"turbulence_deg": 5})
    assert settings == pol_sky.PolarisationSettings(turbulence_deg=5.0)
