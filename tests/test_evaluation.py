"""dustpred.evaluation.evaluate: tables of r50/r150 per cutout, mean r(ell), wins and the
summary."""

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from fake_predictions import write_fake_predictions

from dustpred.config import experiment_settings
from dustpred.errors import InputError
from dustpred.evaluation.evaluate import Predictions, evaluate, wins_table
from dustpred.evaluation.summary import (
    SUMMARY_BY_EXPERIMENT_COLUMNS,
    SUMMARY_COLUMNS,
    seed_spread,
    summarize,
)
from dustpred.evaluation.tables import (
    PER_CUTOUT_COLUMNS,
    R_ELL_COLUMNS,
    WINS_COLUMNS,
    model_label,
    model_order,
)
from dustpred.metrics import r50_r150, r_ell


def run_evaluate(tmp_path, **fake):
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = {}
    arrays = {}
    for i, subset in enumerate(("train", "test")):
        paths[subset] = tmp_path / f"{subset}.h5"
        arrays[subset] = write_fake_predictions(paths[subset], seed=i, **fake)
    out = {
        name: (tmp_path / f"tables/{name}.csv", tmp_path / f"tables/{name}.parquet")
        for name in ("per_cutout", "r_ell", "wins")
    }
    tables = evaluate(paths, out["per_cutout"], out["r_ell"], out["wins"])
    return tables, out, arrays


def test_tables_have_the_documented_columns_in_csv_and_parquet(tmp_path):
    tables, out, _ = run_evaluate(tmp_path)
    for name, columns in (
        ("per_cutout", PER_CUTOUT_COLUMNS),
        ("r_ell", R_ELL_COLUMNS),
        ("wins", WINS_COLUMNS),
    ):
        csv, parquet = out[name]
        assert list(pd.read_csv(csv).columns) == columns
        pd.testing.assert_frame_equal(pd.read_parquet(parquet), tables[name])


def test_per_cutout_values_are_the_metric_on_the_masked_maps(tmp_path):
    tables, _, arrays = run_evaluate(tmp_path)
    test = arrays["test"]
    r50, r150 = r50_r150(test["target"], test["unet"], side_deg=24.96)
    pc = tables["per_cutout"]
    sel = pc[(pc.subset == "test") & (pc.model == "unet")].sort_values("cutout")
    np.testing.assert_allclose(sel["r50"], r50, rtol=1e-12)
    np.testing.assert_allclose(sel["r150"], r150, rtol=1e-12)
    np.testing.assert_allclose(sel["masked_fraction"], test["mask"].mean(axis=(1, 2)))
    np.testing.assert_allclose(sel["lon"], test["lon"])
    assert set(pc["model"]) == {"integrated", "linear", "linear_sd", "unet", "oracle"}
    assert len(pc) == 2 * 5 * 20


def test_masked_pixels_are_zeroed_even_if_the_file_has_values_there(tmp_path):
    path = tmp_path / "p.h5"
    data = write_fake_predictions(path, n=4)
    with h5py.File(path, "r+") as f:
        target = f["target"][...]
        target[data["mask"] == 1] = 99.0
        f["target"][...] = target
    r = Predictions(path).read()
    assert np.all(r["target"][r["mask"]] == 0)
    np.testing.assert_array_equal(r["target"], data["target"])


def test_r_ell_table_is_the_mean_and_error_on_the_mean(tmp_path):
    tables, _, arrays = run_evaluate(tmp_path)
    train = arrays["train"]
    ell, r = r_ell(train["target"], train["linear"], side_deg=24.96)
    tab = tables["r_ell"]
    sel = tab[(tab.subset == "train") & (tab.model == "linear")]
    np.testing.assert_allclose(sel["ell"], ell)
    np.testing.assert_allclose(sel["r_mean"], r.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sel["r_err_naive"], r.std(axis=0, ddof=1) / np.sqrt(20), rtol=1e-12)
    np.testing.assert_allclose(sel["ell_hi"] - sel["ell_lo"], 360 / 24.96)
    assert (sel["n"] == 20).all()


def test_rescaled_models_give_identical_tables(tmp_path):
    """r is invariant to a positive rescaling of each prediction (integrated intensity has
    other units than dust)."""
    a, _, _ = run_evaluate(tmp_path / "a")
    b, _, _ = run_evaluate(tmp_path / "b", scale={"integrated": 1e3, "unet": 0.01})
    pd.testing.assert_frame_equal(a["per_cutout"], b["per_cutout"], atol=1e-5)


def test_wins_count_cutouts_with_strictly_larger_r_than_integrated():
    pc = pd.DataFrame(
        {
            "subset": "test",
            "cutout": [0, 1, 2, 0, 1, 2],
            "model": ["integrated"] * 3 + ["unet"] * 3,
            "r50": [0.5, 0.6, 0.7, 0.6, 0.6, 0.8],
            "r150": [0.1, 0.2, 0.3, 0.0, 0.0, 0.0],
        }
    )
    w = wins_table(pc).set_index("metric")
    assert w.loc["r50", "wins"] == 2 and w.loc["r50", "n"] == 3  # a tie is not a win
    assert w.loc["r50", "fraction"] == pytest.approx(2 / 3)
    assert w.loc["r150", "wins"] == 0


def test_known_ranking_shows_in_wins_and_means(tmp_path):
    tables, _, _ = run_evaluate(tmp_path, n=40)
    w = tables["wins"].set_index(["subset", "model", "metric"])
    assert w.loc[("test", "unet", "r150"), "fraction"] > 0.8
    assert w.loc[("test", "oracle", "r50"), "fraction"] > 0.8
    means = tables["per_cutout"].groupby("model")["r150"].mean()
    assert means["oracle"] > means["unet"] > means["integrated"]


def test_oracle_is_optional(tmp_path):
    tables, _, _ = run_evaluate(tmp_path, oracle=False)
    assert "oracle" not in set(tables["per_cutout"]["model"])
    assert set(tables["wins"]["model"]) == {"linear", "linear_sd", "unet"}


def test_missing_model_raises_input_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.h5"
    write_fake_predictions(path, n=3)
    with h5py.File(path, "r+") as f:
        del f["unet"]
    with pytest.raises(InputError, match=r"bad\.h5.*unet"):
        Predictions(path)


def test_shape_mismatch_raises_input_error(tmp_path):
    path = tmp_path / "bad.h5"
    write_fake_predictions(path, n=3)
    with h5py.File(path, "r+") as f:
        del f["linear"]
        f["linear"] = np.zeros((3, 16, 16), dtype=np.float32)
    with pytest.raises(InputError, match="'linear' has shape"):
        Predictions(path)


def test_non_finite_prediction_raises_input_error(tmp_path):
    path = tmp_path / "bad.h5"
    data = write_fake_predictions(path, n=3)
    with h5py.File(path, "r+") as f:
        unet = f["unet"][...]
        unet[1][data["mask"][1] == 0] = np.nan
        f["unet"][...] = unet
    with pytest.raises(InputError, match="non-finite"):
        Predictions(path).correlations()


def test_reading_in_chunks_gives_the_same_correlations(tmp_path):
    path = tmp_path / "p.h5"
    write_fake_predictions(path, n=11)
    pred = Predictions(path)
    whole = pred.correlations(chunk=100)
    pieces = pred.correlations(chunk=4)
    for model in pred.models:
        for key in ("r50", "r150", "r_ell"):
            np.testing.assert_allclose(pieces.by_model[model][key], whole.by_model[model][key])


def test_summary_has_one_row_per_experiment_seed_model_and_text(tmp_path):
    per_cutout = {}
    for exp, seed in (("baseline", 0), ("baseline", 1), ("lam0", 0)):
        d = tmp_path / exp / f"seed{seed}"
        d.mkdir(parents=True)
        paths = {}
        for subset in ("train", "test"):
            paths[subset] = d / f"{subset}.h5"
            write_fake_predictions(paths[subset], n=10, seed=seed + 10 * (subset == "test"))
        outs = [(d / f"{n}.csv", None) for n in ("per_cutout", "r_ell", "wins")]
        evaluate(paths, *outs)
        per_cutout[(exp, seed)] = d / "per_cutout.csv"
    settings = {
        "baseline": {
            "split": "north_south",
            "velocity_kms": [-64.5, 17.0],
            "unet": {"loss_lambda": 30.0, "input_kind": "cube"},
        },
        "lam0": {
            "split": "north_south",
            "velocity_kms": [-64.5, 17.0],
            "unet": {"loss_lambda": 0.0, "input_kind": "cube"},
        },
    }
    by_exp = (tmp_path / "by_experiment.csv", tmp_path / "by_experiment.parquet")
    table = summarize(
        per_cutout,
        tmp_path / "summary.csv",
        tmp_path / "summary.txt",
        by_experiment=by_exp,
        settings={name: experiment_settings(resolved) for name, resolved in settings.items()},
    )
    assert list(pd.read_csv(tmp_path / "summary.csv").columns) == SUMMARY_COLUMNS
    assert set(table.loc[table.experiment == "lam0", "loss_lambda"]) == {0.0}
    assert set(table["velocity_kms"]) == {"-64.5..17"}
    by_experiment = pd.read_parquet(by_exp[1])
    assert list(by_experiment.columns) == SUMMARY_BY_EXPERIMENT_COLUMNS
    assert len(by_experiment) == 2 * 5
    row = by_experiment[(by_experiment.experiment == "baseline") & (by_experiment.model == "unet")]
    seeds = table[(table.experiment == "baseline") & (table.model == "unet")]
    assert row["wins_r150_mean"].iloc[0] == pytest.approx(seeds["wins_r150"].astype(float).mean())
    assert row["r50_test_sd"].iloc[0] == pytest.approx(seeds["r50_test"].std(ddof=1))
    assert row["loss_lambda"].iloc[0] == 30.0
    assert len(table) == 3 * 5
    assert table[["experiment", "seed", "model"]].duplicated().sum() == 0
    text = (tmp_path / "summary.txt").read_text()
    row = table[(table.experiment == "lam0") & (table.model == "unet")].iloc[0]
    assert f"{row['wins_r50']}/10 (r50), {row['wins_r150']}/10 (r150)" in text
    assert "U-Net beats integrated intensity" in text and "oracle" in text
    assert "mean +- sd over seeds" in text  # baseline has two seeds
    spread = seed_spread(table).set_index(["experiment", "model"])
    assert spread.loc[("baseline", "unet"), "n_seeds"] == 2
    assert np.isnan(spread.loc[("lam0", "unet"), "r50_test_sd"])


def test_the_seed_mean_carries_the_block_error_and_the_seed_spread_in_quadrature():
    from dustpred.evaluation.summary import SUMMARY_COLUMNS, seed_spread_lines

    rows = []
    for seed, gain in enumerate([0.04, 0.06, 0.08]):  # sd over seeds 0.02
        row = dict.fromkeys(SUMMARY_COLUMNS, 0.0)
        row.update(experiment="baseline", seed=seed, model="unet", gain_r50=gain)
        row.update(gain_r50_err=0.01 if seed else 0.013)  # block errors, mean 0.011
        rows.append(row)
    spread = seed_spread(pd.DataFrame(rows)).iloc[0]
    assert spread["gain_r50_sd"] == pytest.approx(0.02)
    assert spread["gain_r50_err_total"] == pytest.approx((0.011**2 + 0.02**2 / 3) ** 0.5)
    line = seed_spread_lines(seed_spread(pd.DataFrame(rows)))[1]
    assert "gain r50 = +0.060 +- 0.020 [0.016]" in line


def test_summary_lists_missing_table_by_name(tmp_path):
    with pytest.raises(InputError, match="nope.csv"):
        summarize({("x", 0): tmp_path / "nope.csv"}, tmp_path / "s.csv", tmp_path / "s.txt")


def test_r_ell_and_wins_errors_are_region_block_bootstraps(tmp_path):
    from dustpred.evaluation import resampling
    from dustpred.evaluation.resampling import ErrorSettings

    errors = ErrorSettings(region_nside=1, n_boot=200, seed=3)
    paths = {}
    for i, subset in enumerate(("train", "test")):
        paths[subset] = tmp_path / f"{subset}.h5"
        arrays = write_fake_predictions(paths[subset], n=30, seed=i)
    outs = [(tmp_path / f"{n}.csv", None) for n in ("per_cutout", "r_ell", "wins")]
    tables = evaluate(paths, *outs, errors=errors)
    labels = resampling.region_labels(arrays["lon"], arrays["lat"], 1)
    _, r = r_ell(arrays["target"], arrays["unet"], side_deg=24.96)
    tab = tables["r_ell"]
    sel = tab[(tab.subset == "test") & (tab.model == "unet")]
    expected = resampling.block_bootstrap(r, labels, n_boot=200, seed=3)
    np.testing.assert_allclose(sel["r_err"], expected, rtol=1e-12)
    assert sel["n_patches"].iloc[0] == pytest.approx(resampling.effective_patches(labels))
    pc = tables["per_cutout"]
    robust = pc[(pc.subset == "test") & (pc.model == "unet")]["r50_robust"]
    r50, _ = r50_r150(
        arrays["target"], arrays["unet"], side_deg=24.96, mask=arrays["mask"], robust=True
    )
    np.testing.assert_allclose(robust, r50, rtol=1e-10)
    w = tables["wins"].set_index(["subset", "model", "metric"]).loc[("test", "unet", "r50")]
    u = pc[(pc.subset == "test") & (pc.model == "unet")]["r50"].to_numpy()
    ref = pc[(pc.subset == "test") & (pc.model == "integrated")]["r50"].to_numpy()
    expected_w = resampling.win_fraction(u, ref, labels, n_boot=200, seed=3)
    assert w["fraction_err"] == pytest.approx(expected_w.block_error, rel=1e-12)


def test_summary_prints_mean_plus_minus_error_and_effective_patches(tmp_path):
    from dustpred.evaluation.summary import summarize

    _, out, _ = run_evaluate(tmp_path)
    summarize({("baseline", 0): out["per_cutout"][0]}, tmp_path / "s.csv", tmp_path / "s.txt")
    text = (tmp_path / "s.txt").read_text()
    assert "effective patches" in text and " ± " in text and "gain over integrated" in text


def test_every_gain_and_win_line_gives_the_robust_value_beside_the_papers(tmp_path):
    import pandas as pd

    from dustpred.evaluation.summary import summarize

    _, out, _ = run_evaluate(tmp_path)
    summarize({("baseline", 0): out["per_cutout"][0]}, tmp_path / "s.csv", tmp_path / "s.txt")
    lines = (tmp_path / "s.txt").read_text().splitlines()
    unet = pd.read_csv(tmp_path / "s.csv").set_index("model").loc["unet"]
    gains = [line for line in lines if "gain over integrated:" in line]
    wins = [line for line in lines if "beats integrated intensity in" in line]
    assert gains and wins and all("; robust r: " in line for line in gains + wins)
    assert f"robust r: r50 = {unet.gain_r50_robust:+.3f} ± {unet.gain_r50_robust_err:.3f}" in (
        "\n".join(gains)
    )


def test_realisation_spread_is_mean_and_sd_of_gains_over_runs():
    from dustpred.evaluation.summary import SUMMARY_COLUMNS
    from dustpred.realisations.spread import REALISATION_COLUMNS, realisation_spread

    def table(gain):
        row = dict.fromkeys(SUMMARY_COLUMNS, 0.0)
        row.update(experiment="baseline", seed=0, model="unet", gain_r50=gain, gain_r50_err=0.1)
        return pd.DataFrame([row])

    out = realisation_spread({0: table(0.1), 1: table(0.3), 2: table(0.2)})
    assert list(out.columns) == REALISATION_COLUMNS
    assert out["gain_r50_mean"].iloc[0] == pytest.approx(0.2)
    assert out["gain_r50_sd"].iloc[0] == pytest.approx(0.1)
    assert out["n_realisations"].iloc[0] == 3
    # sd over skies 0.1 against a within-sky error of 0.1: the errors describe the scatter.
    assert out["gain_r50_ratio"].iloc[0] == pytest.approx(1.0)
    assert np.isnan(out["gain_r150_ratio"].iloc[0])  # no error to compare with


def test_realisation_spread_adds_the_training_seed_spread_to_the_block_error():
    from dustpred.evaluation.summary import SUMMARY_COLUMNS
    from dustpred.realisations.spread import realisation_spread

    def table(gains):  # one sky, one row per training seed
        rows = []
        for seed, gain in enumerate(gains):
            row = dict.fromkeys(SUMMARY_COLUMNS, 0.0)
            row.update(experiment="baseline", seed=seed, model="unet", gain_r50=gain)
            row.update(gain_r50_err=0.03)
            rows.append(row)
        return pd.DataFrame(rows)

    # Seeds differ by 0.04 * sqrt(2) on each sky: seed sd 0.04; with the block error 0.03 in
    # quadrature, 0.05.
    d = 0.04 * 2**0.5
    out = realisation_spread({0: table([0.1, 0.1 + d]), 1: table([0.3, 0.3 + d])})
    row = out.iloc[0]
    assert row["gain_r50_seed_sd"] == pytest.approx(0.04)
    assert row["gain_r50_err_total"] == pytest.approx(0.05)
    assert row["gain_r50_ratio_total"] == pytest.approx(row["gain_r50_sd"] / 0.05)
    assert row["gain_r50_ratio"] == pytest.approx(row["gain_r50_sd"] / 0.03)


def test_one_seed_per_sky_gives_no_seed_spread():
    from dustpred.evaluation.summary import SUMMARY_COLUMNS
    from dustpred.realisations.spread import realisation_lines, realisation_spread

    row = dict.fromkeys(SUMMARY_COLUMNS, 0.0)
    row.update(experiment="baseline", seed=0, model="unet", gain_r50=0.1, gain_r50_err=0.1)
    out = realisation_spread({0: pd.DataFrame([row]), 1: pd.DataFrame([{**row, "gain_r50": 0.2}])})
    assert np.isnan(out["gain_r50_seed_sd"].iloc[0]) and np.isnan(
        out["gain_r50_ratio_total"].iloc[0]
    )
    assert not any("training-seed" in line for line in realisation_lines(out))


def test_seeds_per_sky_give_each_realisation_its_own_block_of_training_seeds():
    from dustpred.realisations.runs import realisation_config

    assert realisation_config(3, False, own_seeds=True, seeds_per_sky=2)["seeds"] == [6, 7]
    assert realisation_config(0, False, own_seeds=True, seeds_per_sky=2)["seeds"] == [0, 1]


def test_own_seeds_give_each_realisation_its_sampling_and_training_seed():
    from dustpred.realisations.runs import realisation_config

    assert realisation_config(3, False) == {"synthetic": {"realisation": 3}}
    layer = realisation_config(3, True, own_seeds=True)
    assert layer == {
        "synthetic": {"realisation": 3},
        "data": {"source": "synthetic"},
        "seed": 3,
        "seeds": [3],
    }


def test_unknown_models_are_listed_last_by_name():
    from dustpred.evaluation.tables import model_label, model_order

    assert model_order(["residual", "unet", "integrated"]) == ["integrated", "unet", "residual"]
    assert model_label("residual") == "residual"


# --- the headline: every model on the same test cutouts --------------------------------------


def default_settings():
    """Experiment -> summary settings of config/config.yaml's experiments."""
    from conftest import REPO

    from dustpred.config import resolve_experiment

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    return {
        name: experiment_settings(resolve_experiment(config, name))
        for name in config["experiments"]
    }


def fake_run(root, experiment, seed=0, data_seed=0, n=12, **fake):
    """Evaluate fake predictions of one run; returns its per-cutout CSV. Runs with the same
    ``data_seed`` and noise share every map but those whose noise differs."""
    d = root / experiment / f"seed{seed}"
    d.mkdir(parents=True)
    paths = {s: d / f"{s}.h5" for s in ("train", "test")}
    for i, path in enumerate(paths.values()):
        write_fake_predictions(path, n=n, seed=data_seed + 10 * i, **fake)
    evaluate(paths, *[(d / f"{t}.csv", None) for t in ("per_cutout", "r_ell", "wins")])
    return d / "per_cutout.csv"


def headline(text):
    return text.split("every run")[0]


def test_scale_dependent_linear_model_is_a_row_of_the_summary_table(tmp_path):
    path = fake_run(tmp_path, "baseline")
    table = summarize({("baseline", 0): path}, tmp_path / "s.csv", tmp_path / "s.txt")
    sd = table[table.model == "linear_sd"]
    assert len(sd) == 1 and np.isfinite(sd["r50_test"].iloc[0])
    pc = pd.read_csv(path)
    expected = pc[(pc.subset == "test") & (pc.model == "linear_sd")]["r50"].mean()
    assert sd["r50_test"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert "linear, scale-dependent" in (tmp_path / "s.txt").read_text()


def test_headline_lists_all_six_models_of_the_default_experiments(tmp_path):
    from fake_predictions import NOISE

    settings = default_settings()
    assert set(settings) == {"baseline", "paper_unet"}
    paths = {
        ("baseline", 0): fake_run(tmp_path, "baseline"),
        ("paper_unet", 0): fake_run(tmp_path, "paper_unet", noise={**NOISE, "unet": 0.6}),
    }
    table = summarize(paths, tmp_path / "s.csv", tmp_path / "s.txt", settings=settings)
    text = headline((tmp_path / "s.txt").read_text())
    assert "split north_south, HI -64.5..17 km/s, seed 0: experiments baseline, paper_unet" in text
    labels = [
        "integrated intensity",
        "linear, scale-independent",
        "linear, scale-dependent",
        "U-Net (residual)",
        "U-Net (paper)",
        "oracle (HI-traced dust)",
    ]
    # The model lines: "label  r50 = m ± e [naive]   r150 = ...", one per model.
    rows = [line.strip() for line in text.splitlines() if "] " in line and " r50 = " in line]
    assert [next(lab for lab in labels if row.startswith(lab)) for row in rows] == labels
    for experiment, label in (("baseline", "U-Net (residual)"), ("paper_unet", "U-Net (paper)")):
        unet = table[(table.experiment == experiment) & (table.model == "unet")].iloc[0]
        row = next(r for r in rows if r.startswith(label))
        assert f"r50 = {unet['r50_test']:.3f} ± {unet['r50_test_err']:.3f}" in row
        assert f"{label} beats integrated intensity in {unet['wins_r50']}/12 (r50)" in text
    assert set(table["variant"]) == {"residual", "paper"}


def test_headline_refuses_runs_that_do_not_share_their_cutouts(tmp_path):
    paths = {
        ("baseline", 0): fake_run(tmp_path, "baseline"),
        ("paper_unet", 0): fake_run(tmp_path, "paper_unet", data_seed=5),  # other cutouts
    }
    with pytest.raises(InputError, match="integrated intensity differs between the runs"):
        summarize(paths, tmp_path / "s.csv", tmp_path / "s.txt", settings=default_settings())


def test_headline_lists_linear_models_per_experiment_where_they_differ(tmp_path):
    from fake_predictions import NOISE

    from dustpred.evaluation.summary import combine_runs

    tables = {
        "a": pd.read_csv(fake_run(tmp_path, "a")),
        "b": pd.read_csv(fake_run(tmp_path, "b", noise={**NOISE, "linear": 0.5})),
    }
    combined = combine_runs(tables, {"a": "residual", "b": "paper"})
    assert model_order(combined["model"].unique()) == [
        "integrated",
        "linear:a",
        "linear:b",
        "linear_sd",
        "unet:residual",
        "unet:paper",
        "oracle",
    ]


def test_unet_tags_are_variants_with_the_experiment_where_a_variant_repeats():
    from dustpred.evaluation.summary import unet_tags

    settings = {"baseline": {"variant": "paper"}, "lambda_0": {"variant": "paper"}, "r": {}}
    tags = unet_tags(["baseline", "lambda_0", "r"], settings)
    assert tags == {"baseline": "paper, baseline", "lambda_0": "paper, lambda_0", "r": "r"}
    assert model_label(f"unet:{tags['lambda_0']}") == "U-Net (paper, lambda_0)"


def test_runs_of_other_cutouts_or_seeds_form_their_own_headline_groups():
    from dustpred.evaluation.summary import headline_groups

    settings = {
        "baseline": {"split": "north_south", "velocity_kms": "-64.5..17"},
        "paper_unet": {"split": "north_south", "velocity_kms": "-64.5..17"},
        "east_west": {"split": "east_west", "velocity_kms": "-64.5..17"},
        "null": {"split": "north_south", "pairing": "shuffled", "velocity_kms": "-64.5..17"},
    }
    runs = [("baseline", 0), ("paper_unet", 0), ("east_west", 0), ("baseline", 1), ("null", 0)]
    groups = headline_groups(runs, settings)
    assert list(groups.values()) == [
        [("baseline", 0), ("paper_unet", 0)],
        [("east_west", 0)],
        [("baseline", 1)],
        [("null", 0)],
    ]
    assert list(headline_groups(runs[:2], None).values()) == [
        [("baseline", 0)],
        [("paper_unet", 0)],
    ]


def test_correlations_do_not_depend_on_the_thread_count(tmp_path):
    path = tmp_path / "p.h5"
    write_fake_predictions(path, n=10)
    pred = Predictions(path)
    one = pred.correlations(chunk=3, nthreads=1)
    three = pred.correlations(chunk=3, nthreads=3)  # four chunks, three at a time
    np.testing.assert_array_equal(three.masked_fraction, one.masked_fraction)
    for model, values in one.by_model.items():
        for key, value in values.items():
            assert three.by_model[model][key].tobytes() == value.tobytes(), (model, key)


def test_correlations_of_several_models_equal_one_model_at_a_time(tmp_path):
    from dustpred.metrics import r_ell_r50_r150

    path = tmp_path / "p.h5"
    write_fake_predictions(path, n=6)
    pred = Predictions(path)
    data = pred.read()
    corr = pred.correlations()
    for model in pred.models:
        _, r, r50, r150 = r_ell_r50_r150(
            data["target"], data[model], side_deg=pred.side_deg, mask=data["mask"], robust=True
        )
        np.testing.assert_array_equal(corr.by_model[model]["r_ell_robust"], r)
        np.testing.assert_array_equal(corr.by_model[model]["r50_robust"], r50)
        np.testing.assert_array_equal(corr.by_model[model]["r150_robust"], r150)


def test_realisation_options_after_n_reach_the_runner_not_snakemake(monkeypatch, tmp_path):
    from dustpred.realisations import runs

    calls = []
    monkeypatch.setattr(runs, "run_realisation", lambda k, *a, **kw: calls.append((k, a, kw)))
    monkeypatch.setattr(
        "dustpred.realisations.spread.summarize_realisations", lambda *a, **kw: None
    )
    (tmp_path / "realisations.txt").write_text("")
    argv = ["2", "--configfile", "a.yaml", "b.yaml", "--own-seeds", "--outdir", str(tmp_path)]
    runs.main([*argv, "--", "--cores", "3"])
    assert sorted(k for k, _, _ in calls) == [0, 1]
    _, (outdir, configfiles), options = calls[0]
    assert configfiles == ["a.yaml", "b.yaml"] and options["own_seeds"]
    assert options["snakemake_args"] == ["--cores", "3"]
