"""The polarisation branch of the tiny run (tests/configs/tiny.yaml enables it): every stage's
output is there and well-formed, the Q/U cutouts are those of the shards, and the tables
rank the oracle above the baselines, as the known truth requires.

At Nside 32 with ell_cutoff 64 the r150 band lies above the maps' band limit, so only r50 is
asserted on; the U-Nets train two epochs on 40 cutouts and are only checked to be there.
"""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from dustpred.inputs.stokes_maps import read_qu_maps
from dustpred.polarisation import eb, spin2
from dustpred.qu_evaluation.tables import STATS

pytestmark = pytest.mark.workflow

RUN = "baseline/seed0"


def test_the_synthetic_qu_file_is_cosmo_in_the_planck_layout(tiny_run):
    qu, unit, convention, _ = read_qu_maps(tiny_run.workdir / "resources/synthetic/dust_qu.fits")
    assert convention == "COSMO" and unit == "uK_RJ" and qu.shape == (2, 12 * 32**2)


def test_qu_cutouts_are_the_filtered_maps_at_the_shards_centres(tiny_run):
    w = tiny_run.workdir
    qu = np.load(w / "results/preprocess_qu/qu.npy")
    with h5py.File(w / "results/cutouts_qu/baseline/test.h5") as f:
        q, lon, lat, psi, mask = (f[k][()] for k in ("q", "lon", "lat", "psi", "mask"))
        e = f["e"][()]
        reso, npix = float(f.attrs["reso_arcmin"]), int(f.attrs["npix"])
    expected_q, expected_u = spin2.cutout_qu(
        qu[0], qu[1], lon, lat, psi, npix=npix, reso_arcmin=reso
    )
    keep = mask == 0
    np.testing.assert_allclose(q[keep], expected_q[keep], rtol=1e-5, atol=1e-4)
    expected_e, _ = eb.eb_maps(np.where(keep, expected_q, 0), np.where(keep, expected_u, 0), ~keep)
    np.testing.assert_allclose(e, expected_e, atol=1e-4 * np.abs(expected_e).max())


def test_every_model_has_a_row_per_statistic_and_the_oracle_beats_the_baselines(tiny_run):
    summary = pd.read_csv(tiny_run.workdir / f"results/tables/{RUN}/qu_summary.csv")
    assert set(summary["model"]) == {"hi_orientation", "hi_channels", "oracle", "unet"}
    assert set(summary["stat"]) == set(STATS)
    for stat in ("r50_EE", "r50_BB"):
        oracle = summary[(summary.model == "oracle") & (summary.stat == stat)].iloc[0]
        assert oracle["gain"] > 3 * oracle["gain_error"] > 0, oracle.to_dict()


def test_the_baselines_fractions_are_positive_so_their_angles_follow_the_truths(tiny_run):
    fitted = json.loads(
        (tiny_run.workdir / "results/models/baseline/qu_baselines.json").read_text()
    )
    assert all(0 < f < 1 for f in fitted["fractions"].values()), fitted


def test_both_qu_unets_ran_every_epoch(tiny_run):
    w = tiny_run.workdir / "results/models/baseline/seed0"
    for mode in ("e", "b"):
        table = pd.read_csv(w / f"training_qu_{mode}.csv")
        assert len(table) == 2 and (w / f"unet_qu_{mode}.pt").stat().st_size > 0


def test_a_local_iau_qu_file_enters_the_dag_in_cosmo(tmp_path):
    """data.dust_qu: a Planck-layout file in the IAU convention (healpy writes it, NESTED,
    K_CMB) is read by preprocess_qu with U negated and filtered like the synthetic one."""
    import healpy as hp
    from conftest import snakemake_cli

    from dustpred.sky import harmonic

    rng = np.random.default_rng(1)
    iqu = rng.normal(size=(3, 12 * 64**2))
    path = tmp_path / "qu_iau.fits"
    hp.write_map(
        str(path),
        hp.reorder(iqu, r2n=True),
        nest=True,
        coord="G",
        column_names=["I_STOKES", "Q_STOKES", "U_STOKES"],
        column_units="K_CMB",
        extra_header=[("POLCCONV", "IAU")],
        dtype=np.float64,
    )
    work = tmp_path / "run"
    work.mkdir()
    done = snakemake_cli(
        work, "results/preprocess_qu/qu.npy", extra_config={"data": {"dust_qu": str(path)}}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = np.load(work / "results/preprocess_qu/qu.npy")
    cosmo = np.stack([iqu[1], -iqu[2]]) * 1e6  # K_CMB -> uK_CMB, IAU -> COSMO
    expected = harmonic.lowpass_to_nside(cosmo, 32, 64, 4, iters=1, spin=2)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    meta = json.loads((work / "results/preprocess_qu/qu_meta.json").read_text())
    assert meta["unit"] == "uK_CMB"
