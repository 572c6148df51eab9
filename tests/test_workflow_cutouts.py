"""The DAG through the cutout index and Fig. 1, through the snakemake CLI (tiny config).

simulate_sky -> preprocess -> cutout_shard (K = 2 scatter jobs) -> gather_cutouts, and
velocity_spectrum from the raw cube, at Nside 32 in a temporary working directory; then the
same cutouts with K = 3 shards, and the rerun behaviour.
"""

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import job_counts, snakemake_cli

from dustpred.cutouts.shards import ShardSet

pytestmark = pytest.mark.workflow

CUT = "results/cutouts/v-64.5_17/north_south"
FIG1 = ["results/figures/fig1_velocity_spectrum.png", "results/tables/fig1_velocity_spectrum.csv"]
TARGETS = [f"{CUT}/index.json", *FIG1]


def shard_paths(workdir, subset, k):
    return [workdir / CUT / subset / f"shard-{i}-of-{k}.h5" for i in range(1, k + 1)]


@pytest.fixture(scope="module")
def workdir(tiny_run):
    return tiny_run.workdir


def test_index_lists_every_shard_with_its_checksum(workdir):
    index = json.loads((workdir / CUT / "index.json").read_text())
    assert index["subsets"]["train"]["count"] == 40
    assert index["subsets"]["test"]["count"] == 12
    assert index["cutouts"]["split"] == "north_south" and index["seed"] == 7
    for subset in ("train", "test"):
        entries = index["subsets"][subset]["shards"]
        assert [e["path"] for e in entries] == [f"{subset}/shard-{i}-of-2.h5" for i in (1, 2)]
        for entry in entries:
            data = (workdir / CUT / entry["path"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert "oracle" in index["subsets"][subset]["fields"]  # synthetic sky


def test_shards_hold_the_requested_cutouts(workdir):
    train = ShardSet(shard_paths(workdir, "train", 2)).load()
    assert train["inputs"].shape == (40, 64, 64, 64)
    assert train["target"].shape == train["mask"].shape == (40, 64, 64)
    assert train["lat"].min() >= 17.649 and train["masked_fraction"].max() <= 0.7
    masked = train["mask"] == 1
    assert masked.any() and not np.any(train["inputs"] * masked[:, None])
    assert (train["target"][masked] == 0).all() and (train["oracle"][masked] == 0).all()
    test = ShardSet(shard_paths(workdir, "test", 2)).load(["lat"])
    assert test["lat"].max() <= -17.649


def test_the_cross_fit_training_set_is_full_size_in_the_test_region_and_not_the_test_set(
    workdir,
):
    crossfit = ShardSet(shard_paths(workdir, "crossfit", 2)).load(["lon", "lat", "masked_fraction"])
    test = ShardSet(shard_paths(workdir, "test", 2)).load(["lon", "lat"])
    assert crossfit["lat"].size == 40  # cutouts.n_train, as the training set
    assert crossfit["lat"].max() <= -17.649  # wholly in the south, as the test cutouts
    assert crossfit["masked_fraction"].max() <= 0.7  # the training set's masking rule
    centres = {(lon, lat) for lon, lat in zip(crossfit["lon"], crossfit["lat"], strict=True)}
    assert not centres & {(lon, lat) for lon, lat in zip(test["lon"], test["lat"], strict=True)}
    index = json.loads((workdir / CUT / "crossfit" / "index.json").read_text())
    assert list(index["subsets"]) == ["crossfit"] and index["subsets"]["crossfit"]["count"] == 40


def test_fig1_marks_the_selected_range(workdir):
    table = pd.read_csv(workdir / FIG1[1])
    assert table["in_range"].sum() == 64  # the 64 selected channels
    inside = table.loc[table["in_range"], "total_K"].sum()
    assert inside > 0.5 * table["total_K"].sum()  # most of the 21-cm signal
    assert (workdir / "results/figures/fig1_velocity_spectrum.pdf").stat().st_size > 0


def test_three_shards_give_the_same_cutouts(workdir, tmp_path):
    # In a copy, so the K = 2 index stays what the other tests expect.
    copy = tmp_path / "k3"
    shutil.copytree(workdir, copy)
    done = snakemake_cli(copy, f"{CUT}/index.json", extra_config={"cutouts": {"shards": 3}})
    assert done.returncode == 0, done.stderr[-4000:]
    assert job_counts(done.stdout + done.stderr) == {"cutout_shard": 3, "gather_cutouts": 1}
    for subset in ("train", "test"):
        two = ShardSet(shard_paths(workdir, subset, 2)).load()
        three = ShardSet(shard_paths(copy, subset, 3)).load()
        assert set(two) == set(three)
        for name in two:
            assert two[name].tobytes() == three[name].tobytes(), (subset, name)


def test_indices_store_gives_the_same_models_and_predictions_as_image_shards(workdir, tmp_path):
    # In a copy: the shards are remade as pixel indices, gathered from the stack when read.
    copy = tmp_path / "indices"
    shutil.copytree(workdir, copy)
    outputs = [
        "results/models/baseline/linear.csv",
        "results/models/baseline/seed0/unet.pt",
        "results/predictions/baseline/seed0/test.h5",
    ]
    done = snakemake_cli(copy, *outputs, extra_config={"cutouts": {"store": "indices"}})
    assert done.returncode == 0, done.stderr[-4000:]
    counts = job_counts(done.stdout + done.stderr)
    assert counts == {
        "cutout_shard": 2,
        "gather_cutouts": 1,
        "fit_linear": 1,
        "train_unet": 1,
        "predict": 1,
    }
    assert ShardSet(shard_paths(copy, "train", 2)).store == "indices"
    pairs = zip(shard_paths(copy, "train", 2), shard_paths(workdir, "train", 2), strict=True)
    for indices, images in pairs:
        assert indices.stat().st_size < 0.1 * images.stat().st_size  # 64 float32 channels
    for path in outputs:
        assert (copy / path).read_bytes() == (workdir / path).read_bytes(), path


def test_rerun_has_nothing_to_do(workdir):
    done = snakemake_cli(workdir, *TARGETS, args=("-n",))
    assert done.returncode == 0
    assert job_counts(done.stdout + done.stderr) == {}


def test_editing_fig1_settings_reruns_only_fig1(workdir):
    extra = {"cutouts": {"spectrum_pointings": 300}}
    done = snakemake_cli(workdir, *TARGETS, args=("-n",), extra_config=extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_counts(done.stdout + done.stderr) == {"velocity_spectrum": 1}


def test_editing_cutout_settings_remakes_the_shards(workdir):
    extra = {"cutouts": {"max_masked_fraction": 0.5}}
    done = snakemake_cli(workdir, *TARGETS, args=("-n",), extra_config=extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_counts(done.stdout + done.stderr) == {"cutout_shard": 2, "gather_cutouts": 1}


def test_a_shuffled_pairing_experiment_gets_its_own_cutouts_from_the_same_stack(workdir):
    extra = {"experiments": {"null_shuffled": {"pairing": "shuffled"}}}
    target = f"{CUT}-shuffled/index.json"
    done = snakemake_cli(workdir, target, args=("-n",), extra_config=extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_counts(done.stdout + done.stderr) == {"cutout_shard": 2, "gather_cutouts": 1}
