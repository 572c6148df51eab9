"""The polarisation stages' library (issue 28): Q/U cutouts beside the shards, the baselines'
fit and predictions, and the r^EE / r^BB tables, on fake shards and random Q/U skies."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from fake_training_shards import write_fake_shards

from dustpred.errors import InputError
from dustpred.evaluation.resampling import ErrorSettings
from dustpred.polarisation import baselines, eb, qu_cutouts, spin2
from dustpred.qu_evaluation.predict import predict_qu, read_qu_predictions
from dustpred.qu_evaluation.tables import STATS, summary_qu

NSIDE, NPIX = 32, 16


@pytest.fixture
def setup(tmp_path):
    shards = write_fake_shards(tmp_path / "shards", npix=NPIX, nside=NSIDE)
    rng = np.random.default_rng(4)
    qu, oracle = rng.normal(size=(2, 2, 12 * NSIDE**2)).astype(np.float32)
    np.save(tmp_path / "qu.npy", qu)
    np.save(tmp_path / "oracle.npy", oracle)
    return tmp_path, shards, qu, oracle


def test_qu_cutouts_are_the_spin2_cutouts_at_the_shard_centres_masked(setup):
    tmp_path, shards, qu, _ = setup
    out = tmp_path / "qu.h5"
    n = qu_cutouts.write_qu_cutouts(
        shards, tmp_path / "qu.npy", out, oracle_path=tmp_path / "oracle.npy", unit="uK_RJ"
    )
    got = qu_cutouts.read_qu_cutouts(out)
    assert n == 40 and got["q"].shape == (40, NPIX, NPIX)
    with h5py.File(shards[0]) as f:
        lon, lat, psi, mask = (f[k][()] for k in ("lon", "lat", "psi", "mask"))
    reso = 24.96 * 60 / NPIX
    q, u = spin2.cutout_qu(qu[0], qu[1], lon, lat, psi, npix=NPIX, reso_arcmin=reso)
    np.testing.assert_allclose(got["q"][:24], np.where(mask, 0, q), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["u"][:24], np.where(mask, 0, u), rtol=1e-6, atol=1e-6)
    assert "q_oracle" in got and (got["q_oracle"][:24][mask.astype(bool)] == 0).all()
    np.testing.assert_array_equal(got["lon"][:24], lon)
    e, b = eb.eb_maps(got["q"], got["u"], got["mask"])
    np.testing.assert_allclose(got["e"], e, rtol=1e-5, atol=1e-5 * np.abs(e).max())
    np.testing.assert_allclose(got["b"], b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_qu_maps_of_another_nside_are_refused_naming_the_file(setup):
    tmp_path, shards, _, _ = setup
    np.save(tmp_path / "small.npy", np.zeros((2, 12 * 16**2), np.float32))
    with pytest.raises(InputError, match=r"small\.npy.*expected \(2, 12288\).*Nside 32"):
        qu_cutouts.write_qu_cutouts(shards, tmp_path / "small.npy", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def fake_qu_file(path, q, u, mask, oracle=None):
    n = q.shape[0]
    e, b = eb.eb_maps(q, u, mask)
    with h5py.File(path, "w") as f:
        for k, v in {"q": q, "u": u, "e": e, "b": b, "mask": mask.astype(np.uint8)}.items():
            f.create_dataset(k, data=v)
        for k in qu_cutouts.VECTORS:
            f.create_dataset(k, data=np.linspace(0, 300, n) if k == "lon" else np.zeros(n))
        if oracle is not None:
            e_o, b_o = eb.eb_maps(*oracle, mask)
            for k, v in {"q": oracle[0], "u": oracle[1], "e": e_o, "b": b_o}.items():
                f.create_dataset(f"{k}_oracle", data=v)


def test_baselines_fit_the_fraction_of_a_target_made_from_a_baseline(setup):
    tmp_path, shards, _, _ = setup
    q, u = baselines.baseline_templates(shards, 2.5)["hi_channels"]
    mask = np.concatenate([h5py.File(p)["mask"][()] for p in shards]).astype(bool)
    fake_qu_file(tmp_path / "train_qu.h5", 0.12 * q, 0.12 * u, mask, oracle=(q, u))
    fractions = baselines.fit_baselines(
        shards, tmp_path / "train_qu.h5", tmp_path / "fit.json", fwhm_pix=2.5
    )
    assert abs(fractions["hi_channels"] - 0.12) < 1e-9
    assert json.loads((tmp_path / "fit.json").read_text())["fractions"] == fractions
    models = predict_qu(shards, tmp_path / "train_qu.h5", tmp_path / "fit.json", tmp_path / "p.h5")
    data, predictions = read_qu_predictions(tmp_path / "p.h5")
    assert models == ["hi_orientation", "hi_channels", "oracle"]
    # The target is 0.12 x the channel template: its fitted maps are the target's maps.
    for found, expected in zip(predictions["hi_channels"], (data["e"], data["b"]), strict=True):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(predictions["oracle"][0], eb.eb_maps(q, u, mask)[0], rtol=1e-5)


def test_qu_cutouts_out_of_step_with_the_shards_are_refused(setup):
    tmp_path, shards, _, _ = setup
    zeros = np.zeros((7, NPIX, NPIX))
    fake_qu_file(tmp_path / "short.h5", zeros, zeros, zeros.astype(bool))
    with pytest.raises(InputError, match=r"short\.h5: 7 Q/U cutouts; expected 40"):
        baselines.fit_baselines(shards, tmp_path / "short.h5", tmp_path / "f.json", fwhm_pix=2)


def per_cutout_table(values: dict[str, float], n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(0, 360, n), rng.uniform(-80, -20, n)
    rows = [
        pd.DataFrame(
            {"cutout": np.arange(n), "model": m, "lon": lon, "lat": lat}
            | {s: v + 0.01 * rng.normal(size=n) for s in STATS}
        )
        for m, v in values.items()
    ]
    return pd.concat(rows, ignore_index=True)


def test_summary_compares_every_model_with_the_best_baseline():
    table = per_cutout_table({"hi_orientation": 0.3, "hi_channels": 0.5, "oracle": 0.9})
    summary = summary_qu(table, ["hi_orientation", "hi_channels"], ErrorSettings(n_boot=50))
    assert set(summary["reference"]) == {"hi_channels"}
    oracle = summary[summary.model == "oracle"].iloc[0]
    assert oracle["wins"] == 40 and abs(oracle["gain"] - 0.4) < 0.01
    worse = summary[summary.model == "hi_orientation"].iloc[0]
    assert worse["wins"] == 0 and worse["gain"] < 0
    assert np.isnan(summary[summary.model == "hi_channels"]["gain"]).all()
