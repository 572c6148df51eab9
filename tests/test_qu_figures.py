"""dustpred.figures.polarisation: the r_ell^EE/BB figure and the E/B maps of a cutout."""

import numpy as np
import pandas as pd

from dustpred.figures import polarisation


def r_ell_table():
    ell = np.arange(1, 6) * 14.4
    rows = [
        {"model": m, "mode": mode, "ell": e, "r": r}
        for m, r in (("hi_channels", 0.3), ("unet", 0.4), ("oracle", 0.7))
        for mode in ("EE", "BB")
        for e in ell
    ]
    return pd.DataFrame(rows)


def test_r_ell_figure_has_an_ee_and_a_bb_panel_with_one_line_per_model():
    fig = polarisation.qu_r_ell_figure(r_ell_table())
    left, right = fig.axes
    assert "EE" in left.get_title() and "BB" in right.get_title()
    for ax in (left, right):
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 5]
        assert len(curves) == 3
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert labels == [polarisation.LABELS[m] for m in ("hi_channels", "unet", "oracle")]


def test_eb_maps_figure_shows_e_over_b_for_each_model_with_the_mask_blank():
    rng = np.random.default_rng(0)
    maps = {m: tuple(rng.normal(size=(2, 8, 8))) for m in ("target", "unet")}
    mask = np.zeros((8, 8), bool)
    mask[:2] = True
    fig = polarisation.eb_maps_figure(maps, mask)
    assert [ax.get_title() for ax in fig.axes] == [
        "E: target",
        f"E: {polarisation.LABELS['unet']}",
        "B: target",
        f"B: {polarisation.LABELS['unet']}",
    ]
    image = fig.axes[0].get_images()[0].get_array()
    assert image.mask[:2].all() and not image.mask[2:].any()
