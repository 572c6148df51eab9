"""dustpred.cutouts.extract and dustpred.cutouts.shards: the shard contract, K-independence, the
reader (ShardSet), the index, atomic writes.

Uses a fake preprocessed directory (random stack, latitude-band mask, oracle) at Nside 16.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import healpy as hp
import numpy as np
import pytest
import torch

from dustpred.cutouts import extract, shards
from dustpred.cutouts.projection import gnomonic_cutouts
from dustpred.errors import ConfigError, InputError
from dustpred.models.checkpoint import load_model
from dustpred.sky import stack
from dustpred.training.job import train_unet

NSIDE, NCHAN = 16, 4
CUTOUTS = {
    "npix": 16,
    "reso_arcmin": 90.0,
    "split": "north_south",
    "n_train": 23,
    "n_test": 9,
    "max_masked_fraction": 0.7,
    "shards": 1,
    "dtype": "float32",
    "interpolation": "nearest",
}
VELOCITIES = [-60.0, -30.0, 0.0, 15.0]


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    d = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    npix = 12 * NSIDE**2
    np.save(d / "stack.npy", rng.uniform(1, 2, (npix, NCHAN + 1)).astype(np.float32))
    _, lat = hp.pix2ang(NSIDE, np.arange(npix), lonlat=True)
    np.save(d / "mask.npy", ((np.abs(lat) < 25) | ((lat > 40) & (lat < 50))).astype(np.uint8))
    np.save(d / "oracle.npy", rng.uniform(1, 2, npix).astype(np.float32))
    meta = {"nside": NSIDE, "velocities_kms": VELOCITIES, "units": {"hi": "K", "dust": "uK_RJ"}}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def write_set(prep, out, k, oracle=True, **overrides):
    """All K scatter jobs of one cutout set; returns (train paths, test paths)."""
    section = {**CUTOUTS, "shards": k, **overrides}
    train, test = [], []
    for i in range(1, k + 1):
        train.append(out / "train" / f"shard-{i}-of-{k}.h5")
        test.append(out / "test" / f"shard-{i}-of-{k}.h5")
        extract.write_shards(
            prep / "stack.npy",
            prep / "mask.npy",
            prep / "meta.json",
            prep / "oracle.npy" if oracle else None,
            {"train": train[-1], "test": test[-1]},
            cutouts=section,
            seed=42,
            scatteritem=f"{i}-of-{k}",
        )
    return train, test


@pytest.fixture(scope="module")
def one_shard(prep, tmp_path_factory):
    return write_set(prep, tmp_path_factory.mktemp("k1"), 1)


def test_k1_and_k4_give_identical_cutouts_byte_for_byte(prep, one_shard, tmp_path):
    four = write_set(prep, tmp_path, 4)
    for subset in (0, 1):
        a = shards.ShardSet(one_shard[subset]).load()
        b = shards.ShardSet(four[subset]).load()
        assert set(a) == set(b)
        for name in a:
            assert a[name].dtype == b[name].dtype
            assert a[name].tobytes() == b[name].tobytes(), name


def test_shard_layout_follows_the_contract(one_shard):
    with h5py.File(one_shard[0][0], "r") as h5:
        assert h5["inputs"].shape == (23, NCHAN, 16, 16)
        assert h5["inputs"].chunks == (1, NCHAN, 16, 16)
        assert h5["inputs"].dtype == np.float32
        for name in ("target", "mask", "oracle"):
            assert h5[name].shape == (23, 16, 16)
        assert h5["mask"].dtype == np.uint8
        for name in ("lon", "lat", "psi", "masked_fraction", "slot"):
            assert h5[name].shape == (23,)
    shard_set = shards.ShardSet([one_shard[0][0]])
    attrs = shard_set.attrs
    assert attrs["units"] == {"inputs": "K", "target": "uK_RJ", "oracle": "uK_RJ"}
    np.testing.assert_array_equal(attrs["velocities_kms"], VELOCITIES)
    assert (attrs["nside"], attrs["npix"], attrs["reso_arcmin"]) == (NSIDE, 16, 90.0)
    assert (attrs["seed"], attrs["split"], attrs["subset"]) == (42, "north_south", "train")
    assert attrs["interpolation"] == "nearest"
    np.testing.assert_array_equal(shard_set.load(["slot"])["slot"], np.arange(23))


def test_cutouts_are_the_projection_of_the_stack_with_masked_pixels_zero(prep, one_shard):
    stack = np.load(prep / "stack.npy")
    oracle = np.load(prep / "oracle.npy")
    mask = np.load(prep / "mask.npy")
    for paths in one_shard:
        d = shards.ShardSet([paths[0]]).load()
        kw = dict(npix=16, reso_arcmin=90.0)
        full = gnomonic_cutouts(stack, d["lon"], d["lat"], d["psi"], **kw)
        keep = d["mask"] == 0
        np.testing.assert_array_equal(d["inputs"], full[:, :NCHAN] * keep[:, None])
        np.testing.assert_array_equal(d["target"], full[:, NCHAN] * keep)
        ref_oracle = gnomonic_cutouts(oracle, d["lon"], d["lat"], d["psi"], **kw)
        np.testing.assert_array_equal(d["oracle"], ref_oracle * keep)
        ref_mask = gnomonic_cutouts(mask.astype(np.float32), d["lon"], d["lat"], d["psi"], **kw)
        np.testing.assert_array_equal(d["mask"], ref_mask.astype(np.uint8))
        np.testing.assert_allclose(d["masked_fraction"], d["mask"].mean(axis=(1, 2)))
        assert d["masked_fraction"].max() <= 0.7


def test_subsets_are_in_their_hemispheres(one_shard):
    train = shards.ShardSet(one_shard[0]).load(["lat"])["lat"]
    test = shards.ShardSet(one_shard[1]).load(["lat"])["lat"]
    assert train.min() > 0 and test.max() < 0


def test_no_oracle_dataset_without_an_oracle_map(prep, tmp_path):
    train, _ = write_set(prep, tmp_path, 1, oracle=False, n_train=3, n_test=2)
    shard_set = shards.ShardSet(train)
    assert "oracle" not in shard_set.fields and not shard_set.has_oracle
    assert "oracle" not in shard_set.load()


def test_float16_storage_halves_the_inputs_and_keeps_target_and_oracle_float32(
    prep, one_shard, tmp_path
):
    train, _ = write_set(prep, tmp_path, 1, dtype="float16")
    half = shards.ShardSet(train).load(["inputs", "target", "oracle"])
    full = shards.ShardSet(one_shard[0]).load(["inputs", "target", "oracle"])
    assert half["inputs"].dtype == np.float16
    np.testing.assert_array_equal(half["inputs"], full["inputs"].astype(np.float16))
    for name in ("target", "oracle"):
        assert half[name].dtype == np.float32
        np.testing.assert_array_equal(half[name], full[name])


def test_lzf_compression_is_lossless_and_smaller(prep, one_shard, tmp_path):
    train, _ = write_set(prep, tmp_path, 1, dtype="float16", compression="lzf")
    plain, _ = write_set(prep, tmp_path / "plain", 1, dtype="float16")
    packed = shards.ShardSet(train).load()
    for name, values in shards.ShardSet(plain).load().items():
        np.testing.assert_array_equal(packed[name], values)
    # Masked pixels are zero and compress; the uniform random values here barely do.
    assert train[0].stat().st_size < plain[0].stat().st_size


def test_float16_rounding_of_hi_brightness_is_far_below_the_channel_noise():
    # HI channels of the synthetic sky span ~0-100 K; float16 keeps 11 significant bits, so
    # the rounding error is at most 2**-12 of the value: 0.24 mK per K. Over a realistic
    # spread of brightness (log-uniform 0.05-50 K, where most HI channels lie) its rms (2.8 mK
    # measured) must stay below a tenth of HI4PI's 43 mK channel noise.
    t = np.exp(np.random.default_rng(1).uniform(np.log(0.05), np.log(50.0), 10**6))
    t = t.astype(np.float32)
    err = t.astype(np.float16).astype(np.float32) - t
    assert np.abs(err).max() <= 50.0 * 2.0**-11
    assert np.sqrt(np.mean(err**2)) < 0.1 * 43e-3


def test_float16_overflow_is_refused(prep, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for name in ("mask.npy", "meta.json", "oracle.npy"):
        (big / name).write_bytes((prep / name).read_bytes())
    np.save(big / "stack.npy", np.load(prep / "stack.npy") * 1e6)
    with pytest.raises(InputError, match="float16"):
        write_set(big, tmp_path / "out", 1, dtype="float16", n_train=2, n_test=1)
    assert not list((tmp_path / "out").rglob("*.h5"))


def test_bilinear_shards_match_bilinear_projection(prep, tmp_path):
    train, _ = write_set(prep, tmp_path, 1, interpolation="bilinear", n_train=5, n_test=2)
    d = shards.ShardSet(train).load()
    stack = np.load(prep / "stack.npy")
    full = gnomonic_cutouts(
        stack, d["lon"], d["lat"], d["psi"], npix=16, reso_arcmin=90.0, interpolation="bilinear"
    )
    keep = d["mask"] == 0
    np.testing.assert_array_equal(d["inputs"], full[:, :NCHAN] * keep[:, None])


def test_bilinear_oracle_matches_bilinear_projection_of_the_oracle_map(prep, tmp_path):
    train, _ = write_set(prep, tmp_path, 1, interpolation="bilinear", n_train=5, n_test=2)
    d = shards.ShardSet(train).load()
    oracle = np.load(prep / "oracle.npy")
    full = gnomonic_cutouts(
        oracle, d["lon"], d["lat"], d["psi"], npix=16, reso_arcmin=90.0, interpolation="bilinear"
    )
    np.testing.assert_array_equal(d["oracle"], full * (d["mask"] == 0))


def test_failed_job_leaves_no_shard(prep, tmp_path):
    # Nothing in the north is usable at max_masked_fraction 0: the job fails, files absent.
    with pytest.raises(InputError, match="max_masked_fraction"):
        write_set(prep, tmp_path, 1, max_masked_fraction=0.0, max_draws=3, n_train=2, n_test=1)
    assert not list(tmp_path.rglob("*.h5")) and not list(tmp_path.rglob(".*.tmp"))


def test_index_counts_checksums_and_config(one_shard, tmp_path):
    index = extract.write_index(
        tmp_path / "index.json",
        dict(zip(("train", "test"), one_shard, strict=True)),
        cutouts=CUTOUTS,
        seed=42,
        threads=2,
    )
    on_disk = json.loads((tmp_path / "index.json").read_text())
    assert on_disk == json.loads(json.dumps(index))
    assert on_disk["subsets"]["train"]["count"] == 23
    assert on_disk["subsets"]["test"]["count"] == 9
    entry = on_disk["subsets"]["train"]["shards"][0]
    assert entry["sha256"] == hashlib.sha256(one_shard[0][0].read_bytes()).hexdigest()
    assert on_disk["cutouts"]["n_train"] == 23 and on_disk["seed"] == 42
    assert on_disk["nchan"] == NCHAN


def test_index_refuses_shards_out_of_order(prep, tmp_path):
    train, test = write_set(prep, tmp_path, 2, n_train=6, n_test=4)
    with pytest.raises(InputError, match="slots"):
        extract.write_index(
            tmp_path / "index.json",
            {"train": train[::-1], "test": test},
            cutouts={**CUTOUTS, "n_train": 6, "n_test": 4},
            seed=42,
        )


def test_index_refuses_a_wrong_count(one_shard, tmp_path):
    with pytest.raises(InputError, match="n_train"):
        extract.write_index(
            tmp_path / "index.json",
            dict(zip(("train", "test"), one_shard, strict=True)),
            cutouts={**CUTOUTS, "n_train": 24},
            seed=42,
        )


@pytest.fixture(scope="module")
def three_shards(prep, tmp_path_factory):
    train, _ = write_set(prep, tmp_path_factory.mktemp("k3"), 3, n_train=7, n_test=3)
    return train


def test_shard_set_loads_selected_fields_of_all_shards_in_order(three_shards):
    shard_set = shards.ShardSet(three_shards)
    assert shard_set.counts.tolist() == [2, 2, 3] and shard_set.n == 7
    d = shard_set.load(["target", "slot"])
    assert set(d) == {"target", "slot"}
    assert d["target"].shape == (7, 16, 16)
    np.testing.assert_array_equal(d["slot"], np.arange(7))
    with pytest.raises(InputError, match="no dataset"):
        shards.ShardSet([three_shards[0]]).load(["nonexistent"])


def test_shard_set_reads_any_cutouts_across_shards_as_loaded(three_shards):
    shard_set = shards.ShardSet(three_shards)
    every = shard_set.load(["inputs", "slot"])
    picked = np.array([6, 0, 3, 2, 5])  # unsorted, from all three shards
    d = shard_set.read(["inputs", "slot"], picked)
    np.testing.assert_array_equal(d["slot"], picked)
    np.testing.assert_array_equal(d["inputs"], every["inputs"][picked])


def test_shard_set_chunks_cover_every_cutout_once_in_order(three_shards):
    shard_set = shards.ShardSet(three_shards)
    chunks = list(shard_set.iter_chunks(["slot"], chunk=2))
    assert [start for start, _ in chunks] == [0, 2, 4, 6]
    np.testing.assert_array_equal(np.concatenate([d["slot"] for _, d in chunks]), np.arange(7))


def test_shard_set_refuses_mixed_subsets(one_shard):
    with pytest.raises(InputError, match="subset"):
        shards.ShardSet([one_shard[0][0], one_shard[1][0]])


@pytest.mark.parametrize(
    "broken, match",
    [
        ("mask", "mask.npy"),
        ("meta_nside", "nside"),
        ("meta_velocities", "velocities_kms"),
    ],
)
def test_inconsistent_preprocessed_inputs_are_refused(prep, tmp_path, broken, match):
    for name in ("stack.npy", "mask.npy", "meta.json", "oracle.npy"):
        (tmp_path / name).write_bytes((prep / name).read_bytes())
    meta = json.loads((prep / "meta.json").read_text())
    if broken == "mask":
        np.save(tmp_path / "mask.npy", np.zeros(10, dtype=np.uint8))
    elif broken == "meta_nside":
        (tmp_path / "meta.json").write_text(json.dumps({**meta, "nside": 8}))
    else:
        (tmp_path / "meta.json").write_text(json.dumps({**meta, "velocities_kms": [1.0]}))
    with pytest.raises(InputError, match=match):
        stack.load_preprocessed(
            tmp_path / "stack.npy", tmp_path / "mask.npy", tmp_path / "meta.json"
        )


def test_shard_slots_partition_every_cutout_once():
    for n, k in ((10, 3), (5, 5), (3, 4), (50000, 16)):
        parts = [extract.shard_slots(n, i, k) for i in range(k)]
        np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
        assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    assert extract.parse_scatteritem("3-of-4") == (2, 4)
    with pytest.raises(InputError, match="i-of-K"):
        extract.parse_scatteritem("5-of-4")


@pytest.fixture
def indexed_copy(one_shard, tmp_path):
    """A private copy of one_shard's files with their index.json: (train, test, index)."""
    train, test = (
        [Path(shutil.copy2(p, tmp_path / f"{name}-{p.name}")) for p in paths]
        for name, paths in zip(("train", "test"), one_shard, strict=True)
    )
    index = tmp_path / "index.json"
    extract.write_index(index, {"train": train, "test": test}, cutouts=CUTOUTS, seed=42)
    return train, test, index


def test_shards_that_match_their_index_pass_the_check(indexed_copy):
    train, test, index = indexed_copy
    shards.check_against_index([*train, *test], index, threads=2)


def test_shard_overwritten_in_place_with_its_mtime_kept_is_refused(indexed_copy):
    train, _, index = indexed_copy
    stat = train[0].stat()
    with h5py.File(train[0], "r+") as f:  # same size: one value of the target changed
        f["target"][0, 0, 0] += 1.0
    os.utime(train[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert train[0].stat().st_size == stat.st_size
    with pytest.raises(
        InputError, match=rf"{train[0]}: sha256 [0-9a-f]{{64}}; {index} recorded .*Delete it"
    ):
        shards.check_against_index(train, index)


def test_shard_of_another_size_than_indexed_is_refused(indexed_copy):
    train, _, index = indexed_copy
    with open(train[0], "ab") as fh:
        fh.write(b"\0" * 10)
    with pytest.raises(InputError, match=rf"{train[0]}: \d+ bytes; {index} recorded \d+"):
        shards.check_against_index(train, index)


def test_shard_missing_from_the_index_is_refused(indexed_copy, tmp_path):
    train, _, index = indexed_copy
    stray = Path(shutil.copy2(train[0], tmp_path / "stray.h5"))
    with pytest.raises(InputError, match=rf"{stray}: not listed in {index}"):
        shards.check_against_index([stray], index)


def test_gather_removes_shards_and_temporaries_left_by_another_shard_count(prep, tmp_path):
    old_train, _ = write_set(prep, tmp_path, 3, n_train=6, n_test=4)
    killed = tmp_path / "train" / ".shard-3-of-3.h5.1234.abcd1234.tmp"
    killed.write_bytes(b"half a shard")
    train, test = write_set(prep, tmp_path, 2, n_train=6, n_test=4)
    extract.write_index(
        tmp_path / "index.json",
        {"train": train, "test": test},
        cutouts={**CUTOUTS, "n_train": 6, "n_test": 4, "shards": 2},
        seed=42,
    )
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [p.name for p in train]
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == [p.name for p in test]
    assert not killed.exists() and not old_train[2].exists()


# ----------------------------------------------------------------------------------------
# cutouts.store: indices (the shards hold stack pixels; the reader gathers the images).


@pytest.fixture(scope="module", params=["matched", "shuffled"])
def image_and_index_sets(request, prep, tmp_path_factory):
    """The same cutouts stored both ways, float16 inputs: ((train, test) images, indices)."""
    out = tmp_path_factory.mktemp(f"stores-{request.param}")
    common = {"dtype": "float16", "pairing": request.param}
    images = write_set(prep, out / "images", 2, **common)
    indices = write_set(prep, out / "indices", 2, **common, store="indices")
    return images, indices


def test_indices_store_reads_every_field_equal_to_the_images_store(image_and_index_sets):
    images, indices = image_and_index_sets
    for subset in (0, 1):
        expected = shards.ShardSet(images[subset])
        found = shards.ShardSet(indices[subset])
        assert found.store == "indices" and set(expected.fields) <= set(found.fields)
        a, b = expected.load(), found.load(expected.fields)
        for name in expected.fields:
            assert b[name].dtype == a[name].dtype, name
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def test_indices_store_chunks_and_random_reads_equal_the_images_store(image_and_index_sets):
    images, indices = image_and_index_sets
    expected, found = shards.ShardSet(images[0]), shards.ShardSet(indices[0])
    names = ["inputs", "target", "oracle", "mask", "slot"]
    picked = np.array([20, 0, 13, 7, 22, 12])  # unsorted, from both shards
    a, b = expected.read(names, picked), found.read(names, picked)
    for name in names:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    for (s1, c1), (s2, c2) in zip(
        expected.iter_chunks(["inputs", "target"], 5),
        found.iter_chunks(["inputs", "target"], 5),
        strict=True,
    ):
        assert s1 == s2
        np.testing.assert_array_equal(c2["inputs"], c1["inputs"])
        np.testing.assert_array_equal(c2["target"], c1["target"])


def test_indices_store_gathers_the_same_arrays_on_several_threads(image_and_index_sets):
    _, indices = image_and_index_sets
    names = ["inputs", "target", "oracle"]
    one = shards.ShardSet(indices[0]).load(names)
    three = shards.ShardSet(indices[0], threads=3).load(names)
    for name in names:
        assert three[name].tobytes() == one[name].tobytes(), name


def test_indices_shards_hold_pixels_instead_of_images_and_are_smaller(image_and_index_sets):
    images, indices = image_and_index_sets
    with h5py.File(indices[0][0]) as f:
        assert "inputs" not in f and "target" not in f and "oracle" not in f
        assert f["pixels"].dtype == np.int32 and f["pixels"].shape == f["mask"].shape
        assert f.attrs["store"] == "indices" and f.attrs["stack_path"].endswith("stack.npy")
        paired = "target_pixels" in f
    # Bytes per cutout pixel: float16 inputs + float32 target and oracle + mask, against one
    # int32 pixel index (two when shuffled) + mask; the vectors are the same in both.
    ratio = (4 * (1 + paired) + 1) / (2 * NCHAN + 4 + 4 + 1)
    assert stored_bytes(indices[0]) < (ratio + 0.05) * stored_bytes(images[0])


def stored_bytes(paths) -> int:
    """Bytes of every dataset's stored data in the files ``paths`` (no file headers)."""
    total = 0
    for path in paths:
        with h5py.File(path) as f:
            total += sum(f[k].id.get_storage_size() for k in f)
    return total


def test_indices_store_names_the_stack_it_cannot_find(prep, tmp_path):
    moved = tmp_path / "prep"
    shutil.copytree(prep, moved)
    train, _ = write_set(moved, tmp_path / "cut", 1, store="indices")
    (moved / "stack.npy").unlink()
    shard_set = shards.ShardSet(train)  # opens without the stack: vectors need none
    assert shard_set.load(["slot"])["slot"].size == CUTOUTS["n_train"]
    with pytest.raises(InputError, match=r"stack_path .*stack\.npy.*cutouts\.store: indices"):
        shard_set.load(["inputs"])


def test_indices_store_refuses_a_stack_of_another_shape(prep, tmp_path):
    moved = tmp_path / "prep"
    shutil.copytree(prep, moved)
    train, _ = write_set(moved, tmp_path / "cut", 1, store="indices")
    np.save(moved / "stack.npy", np.zeros((12 * 4**2, NCHAN + 1), np.float32))
    with pytest.raises(InputError, match=r"expected float32 \(3072, 5\)"):
        shards.ShardSet(train).load(["target"])


def test_indices_store_refuses_inputs_that_float16_cannot_hold_when_read(prep, tmp_path):
    moved = tmp_path / "prep"
    shutil.copytree(prep, moved)
    np.save(moved / "stack.npy", np.load(prep / "stack.npy") * 1e6)
    train, _ = write_set(moved, tmp_path / "cut", 1, dtype="float16", store="indices")
    with pytest.raises(InputError, match=r"shard-1-of-1\.h5: values in .* do not fit float16"):
        shards.ShardSet(train, threads=2).load(["inputs"])


def test_indices_store_with_bilinear_sampling_is_a_config_error():
    with pytest.raises(ConfigError, match="cutouts.store.*bilinear"):
        extract.CutoutSettings.from_config({"store": "indices", "interpolation": "bilinear"})


def test_a_unet_trained_on_indices_shards_equals_one_trained_on_image_shards(
    image_and_index_sets, tmp_path
):
    images, indices = image_and_index_sets
    params = {"variant": "residual", "widths": [4, 8], "epochs": 2, "batch_size": 8}
    weights = []
    for name, train in (("images", images[0]), ("indices", indices[0])):
        out = tmp_path / name
        train_unet(
            train,
            out / "unet.pt",
            out / "training.csv",
            params=params,
            seed=0,
            resume_path=out / "resume" / "state.pt",
        )
        net, stats, _ = load_model(out / "unet.pt", which="last")
        weights.append((net.state_dict(), stats))
    (first, first_stats), (second, second_stats) = weights
    for key, value in first.items():
        assert torch.equal(second[key], value), key
    assert repr(second_stats) == repr(first_stats)
    # The files differ in the recorded shard paths alone (equal in the workflow's one folder).
    blobs = [torch.load(tmp_path / n / "unet.pt", weights_only=True) for n in ("images", "indices")]
    differ = [k for k in blobs[0] if k.endswith("state_dict") or blobs[0][k] != blobs[1][k]]
    assert [k for k in differ if not k.endswith("state_dict")] == ["train_shards"]
