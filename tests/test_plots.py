"""dustpred.figures.paper: the paper's figures from the evaluation tables."""

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from fake_predictions import write_fake_predictions

from dustpred.errors import InputError
from dustpred.evaluation.evaluate import evaluate
from dustpred.evaluation.tables import MODELS, ORACLE
from dustpred.figures import comparison, paper, style

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    paths = {}
    for i, subset in enumerate(("train", "test")):
        paths[subset] = d / f"{subset}.h5"
        write_fake_predictions(paths[subset], n=12, seed=i)
    out = {name: (d / f"{name}.csv", None) for name in ("per_cutout", "r_ell", "wins")}
    result = evaluate(paths, out["per_cutout"], out["r_ell"], out["wins"])
    result["paths"] = {**{k: v[0] for k, v in out.items()}, **paths}
    return result


@pytest.fixture
def training_csv(tmp_path):
    e = np.arange(1, 6)
    path = tmp_path / "training.csv"
    pd.DataFrame(
        {
            "epoch": e,
            "lr": 1e-3,
            "train_loss": 5 / e,
            "train_l1": 0.05 / e,
            "train_corr": 5 / e - 0.05 / e,
            "val_loss": 6 / e,
            "val_l1": 0.06 / e,
            "val_corr": 6 / e - 0.06 / e,
            "train_r50": 1 - 0.3 / e,
            "train_r150": 1 - 0.4 / e,
            "val_r50": 0.9 - 0.3 / e,
            "val_r150": 0.8 - 0.3 / e,
            "samples_per_s": 50.0,
            "seconds": 2.0,
        }
    ).to_csv(path, index=False)
    return path


def assert_png_and_pdf(png, pdf):
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    assert not list(png.parent.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_every_model_has_one_colour_linestyle_and_marker():
    for model in (*MODELS, ORACLE):
        assert mcolors.is_color_like(style.PALETTE[model])
        assert model in style.LINESTYLES and model in style.MARKERS
    colours = [mcolors.to_hex(style.PALETTE[m]) for m in (*MODELS, ORACLE)]
    assert len(set(colours)) == len(colours)
    assert style.LINESTYLES[ORACLE] == "--"  # the oracle is dashed, as the brief asks


def test_fig5_uses_the_palette_and_labels_ell(tables):
    fig = paper.r_ell_figure(tables["r_ell"], split="north_south")
    left, right = fig.axes
    assert left.get_title().startswith("train: north") and right.get_title().startswith("test")
    assert "ell" in left.get_xlabel() and "r(" in left.get_ylabel()
    by_label = {line.get_label(): line for line in left.get_lines()}
    for model in (*MODELS, ORACLE):
        line = by_label[paper.MODEL_LABELS[model]]
        assert mcolors.to_hex(line.get_color()) == mcolors.to_hex(style.PALETTE[model])
        assert line.get_linestyle() == style.LINESTYLES[model]
    # one error band per model and panel
    assert len(left.collections) == 4 and len(right.collections) == 4
    style.plt.close(fig)


def test_fig5_without_oracle_has_three_curves(tables):
    r_ell = tables["r_ell"][tables["r_ell"]["model"] != ORACLE]
    fig = paper.r_ell_figure(r_ell)
    labels = {line.get_label() for line in fig.axes[0].get_lines()}
    assert paper.MODEL_LABELS[ORACLE] not in labels
    assert paper.MODEL_LABELS["unet"] in labels
    style.plt.close(fig)


def test_fig4_legend_gives_the_win_counts_with_their_errors_and_the_identity_line(tables):
    fig = paper.per_cutout_figure(tables["per_cutout"], tables["wins"])
    wins = tables["wins"].set_index(["subset", "model", "metric"])
    for ax, metric in zip(fig.axes, ("r50", "r150"), strict=True):
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        for model, label in (("unet", "U-Net"), ("linear", "linear, scale-independent")):
            w = wins.loc[("test", model, metric)]
            assert (
                f"{label}: better in {int(w['wins'])}/12 "
                f"({w['fraction']:.2f} ± {w['fraction_err']:.2f})"
            ) in texts
        assert any("y = x" in t for t in texts)
        assert "integrated" in ax.get_xlabel()
        (identity,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        x, y = identity.get_data()
        np.testing.assert_array_equal(x, y)
        colours = {mcolors.to_hex(c.get_edgecolor()[0]) for c in ax.collections}
        assert colours == {style.PALETTE["linear"], style.PALETTE["unet"]}
    style.plt.close(fig)


def test_fig3_normalises_each_map_by_its_maximum_and_greys_the_mask():
    rng = np.random.default_rng(0)
    n = 16
    mask = np.zeros((n, n), bool)
    mask[:3, :3] = True
    maps = {
        k: rng.uniform(1, 2, (n, n)) * s
        for k, s in zip(
            ("target", "integrated", "linear", "unet"), (1.0, 500.0, 2.0, 0.1), strict=True
        )
    }
    fig = paper.example_figure(maps, mask, side_deg=6.24)
    images = [ax.get_images()[0] for ax in fig.axes[:4]]
    for image, key in zip(images, ("target", "integrated", "linear", "unet"), strict=True):
        data = image.get_array()
        assert np.array_equal(np.ma.getmaskarray(data), mask)
        assert data.max() == pytest.approx(1.0)
        np.testing.assert_allclose(data.compressed(), (maps[key] / maps[key][~mask].max())[~mask])
        assert mcolors.to_hex(image.get_cmap().get_bad()) == style.MASK_COLOUR
        assert image.get_extent() == pytest.approx([-3.12, 3.12, -3.12, 3.12])
    assert fig.axes[2].get_xlabel() == "x [deg]" and fig.axes[0].get_ylabel() == "y [deg]"
    style.plt.close(fig)


def test_example_is_the_configured_or_the_least_masked_cutout():
    frac = np.array([0.3, 0.1, 0.5, 0.1])
    assert paper.choose_example(frac, None) == 1
    assert paper.choose_example(frac, 2) == 2
    with pytest.raises(InputError, match="plots.example_cutout"):
        paper.choose_example(frac, 4)


def test_plot_functions_write_png_and_pdf(tables, training_csv, tmp_path):
    p = tables["paths"]
    out = {name: (tmp_path / f"{name}.png", tmp_path / f"{name}.pdf") for name in "abcd"}
    shown = paper.plot_example(p["test"], out["a"], index=None, cmap="viridis", dpi=60)
    assert 0 <= shown < 12
    paper.plot_per_cutout(p["per_cutout"], p["wins"], out["b"], dpi=60)
    paper.plot_r_ell(p["r_ell"], out["c"], split="east_west", dpi=60)
    paper.plot_training(training_csv, out["d"], dpi=60)
    for png, pdf in out.values():
        assert_png_and_pdf(png, pdf)


def test_training_figure_has_loss_its_terms_and_r_by_epoch(training_csv):
    fig = paper.training_figure(pd.read_csv(training_csv))
    ax_loss, ax_terms, ax_r = fig.axes
    assert ax_loss.get_xlabel() == "epoch" and "loss" in ax_loss.get_ylabel()
    assert ax_loss.get_yscale() == "linear"  # 5/e over 5 epochs: less than a decade
    labels = [t.get_text() for t in ax_r.get_legend().get_texts()]
    assert labels == ["r50", "r150", "train", "validation"]
    term_labels = [t.get_text() for t in ax_terms.get_legend().get_texts()]
    assert term_labels[0].startswith("mean") and term_labels[1].startswith(r"$\lambda")
    assert ax_terms.get_yscale() == "log"  # the terms differ 100-fold here
    style.plt.close(fig)


def test_training_figure_of_a_table_without_loss_terms_has_no_terms_panel(training_csv):
    table = pd.read_csv(training_csv).drop(columns=["train_l1", "train_corr", "val_l1"])
    fig = paper.training_figure(table)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss (eq. 2.3)", r"mean $r$ (U-Net)"]
    style.plt.close(fig)


def test_training_loss_spanning_decades_is_on_a_log_scale(training_csv):
    table = pd.read_csv(training_csv)
    table["train_loss"] = 100.0 / table["epoch"] ** 2
    fig = paper.training_figure(table)
    assert fig.axes[0].get_yscale() == "log"
    style.plt.close(fig)


def test_training_log_without_required_columns_raises(tmp_path):
    path = tmp_path / "training.csv"
    pd.DataFrame({"epoch": [1], "train_loss": [1.0]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="val_loss"):
        paper.plot_training(path, [tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


def test_unknown_colormap_raises_input_error_naming_the_key():
    maps = {k: np.ones((8, 8)) for k in ("target", "integrated", "linear", "unet")}
    with pytest.raises(InputError, match="plots.cmap"):
        paper.example_figure(maps, np.zeros((8, 8), bool), side_deg=3.12, cmap="no-such-map")


def _shifted(r_ell, model, delta):
    out = r_ell.copy()
    out.loc[out["model"] == model, "r_mean"] += delta
    return out


def test_fig6_has_one_seed_averaged_curve_per_lambda(tables):
    base = tables["r_ell"]
    curves = {30.0: [base], 0.0: [_shifted(base, "unet", -0.2), _shifted(base, "unet", -0.1)]}
    fig = comparison.lambda_sweep_figure(curves)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    lam0 = lines[r"U-Net, $\lambda$ = 0 (2 seeds)"]
    expected = base[(base.subset == "test") & (base.model == "unet")].sort_values("ell")
    np.testing.assert_allclose(lam0.get_ydata(), expected["r_mean"] - 0.15)
    assert r"U-Net, $\lambda$ = 30" in lines
    assert "ell" in ax.get_xlabel()
    ref = lines[paper.MODEL_LABELS["integrated"]]
    assert mcolors.to_hex(ref.get_color()) == style.PALETTE["integrated"]
    style.plt.close(fig)


def test_fig6_shows_both_loss_terms_of_the_last_epoch_per_lambda(tables, training_csv):
    t = pd.read_csv(training_csv)  # last epoch: val_l1 0.012, val_corr 1.188
    doubled = t.assign(val_l1=2 * t["val_l1"])
    fig = comparison.lambda_sweep_figure(
        {0.0: [tables["r_ell"]], 30.0: [tables["r_ell"]]}, {0.0: [t], 30.0: [t, doubled]}
    )
    _, ax_terms = fig.axes
    lines = {line.get_label(): line for line in ax_terms.get_lines()}
    l1 = lines[paper.TERM_STYLE["l1"][1]].get_ydata()
    corr = lines[paper.TERM_STYLE["corr"][1]].get_ydata()
    np.testing.assert_allclose(l1, [0.012, 0.018])  # lambda 30: mean of two seeds
    np.testing.assert_allclose(corr, [1.188, 1.188])
    assert [tick.get_text() for tick in ax_terms.get_xticklabels()] == ["0", "30"]
    style.plt.close(fig)


def test_seed_ensemble_draws_every_seed_and_their_mean(tables):
    base = tables["r_ell"]
    by_seed = {0: base, 1: _shifted(base, "unet", 0.02), 2: _shifted(base, "unet", -0.05)}
    pc = {s: tables["per_cutout"] for s in by_seed}
    fig = comparison.seed_ensemble_figure(by_seed, pc)
    ax, ax_pts = fig.axes
    thin = [line for line in ax.get_lines() if line.get_label().startswith("_")]
    assert len(thin) == 3
    mean = next(line for line in ax.get_lines() if "mean of 3 seeds" in line.get_label())
    expected = base[(base.subset == "test") & (base.model == "unet")].sort_values("ell")
    np.testing.assert_allclose(mean.get_ydata(), expected["r_mean"] - 0.01)
    assert "seeds 0, 1, 2" in fig._suptitle.get_text()
    style.plt.close(fig)


def test_plot_lambda_sweep_and_seed_ensemble_write_files(tables, training_csv, tmp_path):
    p = tables["paths"]
    comparison.plot_lambda_sweep(
        [p["r_ell"], p["r_ell"]], [0.0, 30.0], [tmp_path / "f6.png"], dpi=60
    )
    comparison.plot_lambda_sweep(
        [p["r_ell"]] * 2,
        [0.0, 30.0],
        [tmp_path / "f6t.png"],
        training_paths=[training_csv] * 2,
        dpi=60,
    )
    comparison.plot_seed_ensemble(
        [p["r_ell"]] * 2, [p["per_cutout"]] * 2, [0, 1], [tmp_path / "e.png"], dpi=60
    )
    for name in ("f6.png", "f6t.png", "e.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(InputError, match="lambdas"):
        comparison.plot_lambda_sweep([p["r_ell"]], [0.0, 1.0], [tmp_path / "x.png"])


def test_seed_average_of_r_ell_tables(tables):
    base = tables["r_ell"]
    avg = paper.seed_averaged_r_ell([base, _shifted(base, "unet", 0.1)])
    assert list(avg.columns) == list(base.columns)
    unet = avg[(avg.model == "unet")].set_index(["subset", "ell"])["r_mean"]
    ref = base[(base.model == "unet")].set_index(["subset", "ell"])["r_mean"]
    np.testing.assert_allclose(unet.loc[ref.index], ref + 0.05)
    sem = avg[(avg.model == "unet")]["r_err"]
    np.testing.assert_allclose(sem, np.std([0.0, 0.1], ddof=1) / np.sqrt(2))
    assert paper.seed_averaged_r_ell([base]) is base


def test_fig7_labels_east_and_west(tables, tmp_path):
    p = tables["paths"]
    comparison.plot_east_west(
        [p["r_ell"], p["r_ell"]], [tmp_path / "f7.png"], experiment="ew", dpi=60
    )
    assert (tmp_path / "f7.png").read_bytes()[:8] == PNG_MAGIC
    fig = paper.r_ell_figure(tables["r_ell"], split="east_west", title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("train: east") and titles[1].startswith("test: west")
    style.plt.close(fig)
