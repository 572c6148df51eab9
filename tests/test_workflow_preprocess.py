"""The DAG from raw inputs to the preprocess outputs, through the snakemake CLI (tiny config).

simulate_sky -> preprocess (+ preprocess_oracle) on the synthetic sky at Nside 32, in a
temporary working directory; then a dry run of the real-data configuration, which must list
download -> preprocess without touching the network.
"""

import json

import numpy as np
import pytest
from conftest import REPO, job_counts, snakemake_cli

pytestmark = pytest.mark.workflow

PREP = "results/preprocess/v-64.5_17"
TARGETS = [f"{PREP}/stack.npy", f"{PREP}/mask.npy", f"{PREP}/meta.json", f"{PREP}/oracle.npy"]


@pytest.fixture(scope="module")
def workdir(tiny_run):
    return tiny_run.workdir


def test_outputs_have_the_contract_layout(workdir):
    meta = json.loads((workdir / PREP / "meta.json").read_text())
    npix = 12 * 32**2
    stack = np.load(workdir / PREP / "stack.npy", mmap_mode="r")
    assert stack.shape == (npix, meta["nchan"] + 1) and stack.dtype == np.float32
    assert meta["nchan"] == 64 and meta["nside"] == 32
    mask = np.load(workdir / PREP / "mask.npy")
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert 0.2 < mask.mean() < 0.4  # LR72 masks ~28 % of the sky
    oracle = np.load(workdir / PREP / "oracle.npy")
    assert oracle.shape == (npix,) and oracle.dtype == np.float32
    assert np.corrcoef(oracle, stack[:, -1])[0, 1] > 0.5


def test_logs_report_progress(workdir):
    log = (workdir / "logs/preprocess/v-64.5_17.log").read_text()
    assert "channel 64/64" in log and "wrote" in log
    assert "HI cube" in (workdir / "logs/simulate_sky.log").read_text()


def test_rerun_has_nothing_to_do(workdir):
    done = snakemake_cli(workdir, *TARGETS, args=("-n",))
    assert done.returncode == 0
    assert job_counts(done.stdout + done.stderr) == {}


def test_editing_preprocess_reruns_only_preprocess(workdir):
    extra = {"preprocess": {"ell_cutoff": 50}}
    done = snakemake_cli(workdir, *TARGETS, args=("-n",), extra_config=extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_counts(done.stdout + done.stderr) == {"preprocess": 1, "preprocess_oracle": 1}


def test_paper_config_dry_run_lists_downloads_then_preprocess(tmp_path):
    paper = [REPO / "config/config.yaml", REPO / "config/paper.yaml"]
    done = snakemake_cli(tmp_path, f"{PREP}/stack.npy", configfiles=paper, args=("-n",))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert job_counts(out) == {"download": 3, "preprocess": 1}
    assert "resources/download/COM_CompMap_ThermalDust-commander_2048_R2.00.fits" in out


def test_local_files_override_the_synthetic_sky(workdir, tmp_path):
    # data.hi/dust/mask pointing at existing files: no simulate_sky job.
    raw = workdir / "resources/synthetic"
    extra = {"data": {k: str(raw / f"{k}.fits") for k in ("hi", "dust", "mask")}}
    done = snakemake_cli(tmp_path, f"{PREP}/stack.npy", args=("-n",), extra_config=extra)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert job_counts(out) == {"preprocess": 1}
