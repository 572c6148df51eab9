"""Prediction files: every model on every cutout, in the layout the evaluation reads."""

import h5py
import numpy as np
import pytest
import torch
from fake_training_shards import fit_and_train, write_fake_shards

from dustpred.cutouts.shards import ShardSet
from dustpred.errors import InputError
from dustpred.evaluation.predict import predict_shards
from dustpred.models.checkpoint import load_model
from dustpred.models.inputs import prepare_inputs
from dustpred.models.linear import predict_linear, read_weights

PARAMS = {
    "variant": "residual",
    "widths": [4, 8],
    "epochs": 2,
    "batch_size": 8,
    "validation_fraction": 0.25,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    train = write_fake_shards(root / "train", n_per_shard=(24, 8), seed=1)
    test = write_fake_shards(root / "test", n_per_shard=(10, 6), seed=2)
    fit_and_train(train, root, PARAMS)
    predict_shards(
        test,
        root / "linear.csv",
        root / "unet.pt",
        root / "test.h5",
        linear_sd_csv=root / "linear_sd.csv",
    )
    return root, test


def _read(paths, name):
    return ShardSet(paths).load([name])[name]


def test_prediction_file_has_every_map_and_coordinate(trained):
    root, test = trained
    with h5py.File(root / "test.h5", "r") as f:
        for name in ("target", "integrated", "linear", "linear_sd", "unet", "oracle"):
            assert f[name].shape == (16, 16, 16) and f[name].dtype == np.float32, name
        assert f["mask"].dtype == np.uint8
        for name in ("lon", "lat", "psi", "masked_fraction"):
            np.testing.assert_array_equal(f[name][...], _read(test, name))
        assert f.attrs["npix"] == 16 and f.attrs["reso_arcmin"] == pytest.approx(93.6)
        assert f.attrs["unet_weights"] == "best"


def test_predicted_maps_are_zero_where_masked_and_match_each_model(trained):
    root, test = trained
    inputs, mask = _read(test, "inputs"), _read(test, "mask")
    with h5py.File(root / "test.h5", "r") as f:
        maps = {k: f[k][...] for k in ("target", "integrated", "linear", "linear_sd", "unet")}
        np.testing.assert_array_equal(f["mask"][...], mask)
    for name, m in maps.items():
        assert np.all(m[mask == 1] == 0), name
    np.testing.assert_allclose(maps["integrated"], inputs.sum(axis=1), rtol=1e-5, atol=1e-5)
    linear = predict_linear(inputs, read_weights(root / "linear.csv"), side_deg=24.96)
    np.testing.assert_allclose(maps["linear"], linear, rtol=1e-5, atol=1e-5)
    linear_sd = predict_linear(inputs, read_weights(root / "linear_sd.csv"), side_deg=24.96)
    np.testing.assert_allclose(maps["linear_sd"], linear_sd * (mask == 0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(maps["linear_sd"], maps["linear"], atol=1e-3)  # two models
    net, stats, meta = load_model(root / "unet.pt", which="best")
    with torch.no_grad():
        unet = net(prepare_inputs(inputs, mask, stats)).numpy() * stats.target_scale
    np.testing.assert_allclose(maps["unet"], unet * (mask == 0), rtol=1e-5, atol=1e-5)
    with h5py.File(root / "test.h5", "r") as f:
        assert f.attrs["unet_best_epoch"] == meta["best_epoch"]


def test_shards_without_oracle_give_no_oracle_map(trained, tmp_path):
    root, _ = trained
    plain = write_fake_shards(tmp_path / "plain", n_per_shard=(5,), oracle=False)
    predict_shards(plain, root / "linear.csv", root / "unet.pt", tmp_path / "p.h5")
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert "oracle" not in f and "unet" in f
        assert "linear_sd" not in f  # no scale-dependent weights given


def test_shards_with_another_channel_count_are_rejected(trained, tmp_path):
    root, _ = trained
    other = write_fake_shards(tmp_path / "other", n_per_shard=(4,), channels=3)
    with pytest.raises(InputError, match="channels"):
        predict_shards(other, root / "linear.csv", root / "unet.pt", tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


def test_prediction_file_does_not_depend_on_the_thread_count(trained, tmp_path):
    # chunks of 4 of the 16 test cutouts: four chunks whose linear maps run 3 at a time
    root, test = trained
    kwargs = {"linear_sd_csv": root / "linear_sd.csv", "chunk": 4}
    for threads in (1, 3):
        out = tmp_path / f"t{threads}.h5"
        predict_shards(test, root / "linear.csv", root / "unet.pt", out, threads=threads, **kwargs)
    with h5py.File(tmp_path / "t1.h5", "r") as one, h5py.File(tmp_path / "t3.h5", "r") as three:
        assert sorted(one) == sorted(three)
        for name in one:
            assert one[name][...].tobytes() == three[name][...].tobytes(), name


def test_a_model_trained_with_other_settings_is_refused(trained, tmp_path):
    root, test = trained
    other = {**PARAMS, "loss_lambda": 1.0}
    with pytest.raises(
        InputError, match=r"unet.pt: trained with other unet settings .*loss_lambda"
    ):
        predict_shards(
            test, root / "linear.csv", root / "unet.pt", tmp_path / "p.h5", unet_settings=other
        )
    assert not (tmp_path / "p.h5").exists()


def test_a_model_trained_with_the_experiments_settings_is_accepted(trained, tmp_path):
    root, test = trained
    out = tmp_path / "p.h5"
    predict_shards(test, root / "linear.csv", root / "unet.pt", out, unet_settings=PARAMS)
    assert out.exists()


def test_keep_last_predicts_with_the_last_epochs_weights(trained, tmp_path, monkeypatch):
    from dustpred.evaluation import predict as predict_module

    root, test = trained
    asked = []
    real = predict_module.load_model

    def recording(path, **kwargs):
        asked.append(kwargs["which"])
        return real(path, **{**kwargs, "expected": None})

    monkeypatch.setattr(predict_module, "load_model", recording)
    out = tmp_path / "p.h5"
    predict_shards(
        test, root / "linear.csv", root / "unet.pt", out, unet_settings={**PARAMS, "keep": "last"}
    )
    assert asked == ["last"]
    with h5py.File(out, "r") as f:
        assert f.attrs["unet_weights"] == "last"
