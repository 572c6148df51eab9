"""Baselines, U-Net and input normalisation."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_training_shards import SIDE_DEG, write_fake_shards

from dustpred.cutouts.shards import ShardSet
from dustpred.errors import ConfigError, InputError
from dustpred.metrics import bin_edges, ell_grid
from dustpred.models.checkpoint import load_model, save_model
from dustpred.models.inputs import fit_input_stats, prepare_inputs
from dustpred.models.integrated import integrated_intensity
from dustpred.models.linear import (
    TABLE_COLUMNS,
    NormalEquations,
    accumulate_shards,
    fit_linear,
    predict_linear,
    read_weights,
    solve_normal_equations,
    weights_table,
)
from dustpred.models.settings import UNetSettings
from dustpred.models.unet import VARIANTS, UNet, forward_flops
from dustpred.training.resident import ResidentData, dihedral_permutations

# --- integrated and linear -------------------------------------------------------------------


def test_integrated_intensity_is_the_channel_sum():
    x = np.random.default_rng(0).normal(size=(3, 5, 8, 8)).astype(np.float32)
    ref = x.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(integrated_intensity(x), ref, rtol=1e-6, atol=1e-7)


def _fourier_design(x, t, npix, lo, hi):
    """Direct least-squares design: real and imaginary parts of every full-plane FFT mode with
    lo <= ell < hi (both k and -k), one row each."""
    ell = ell_grid((npix, npix), SIDE_DEG)
    sel = (ell >= lo) & (ell < hi)
    f = np.fft.fft2(x)[:, :, sel]  # (n, C, m)
    ft = np.fft.fft2(t)[:, sel]
    c = x.shape[1]
    design = np.concatenate(
        [f.real.transpose(0, 2, 1).reshape(-1, c), f.imag.transpose(0, 2, 1).reshape(-1, c)]
    )
    return design, np.concatenate([ft.real.ravel(), ft.imag.ravel()])


def _random_problem(seed=1, n=7, c=5, npix=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, npix, npix))
    t = np.tensordot(rng.normal(size=c), x, axes=([0], [1])) + rng.normal(size=(n, npix, npix))
    return x, t


def test_linear_weights_equal_a_direct_least_squares_solve():
    x, t = _random_problem()
    eq = NormalEquations.empty(x.shape[1], 16, SIDE_DEG)
    eq.add(x[:3], t[:3])
    eq.add(x[3:], t[3:])  # accumulating in pieces must not matter
    table = weights_table(eq, np.arange(x.shape[1]))
    edges = bin_edges(16, SIDE_DEG)
    design, rhs = _fourier_design(x, t, 16, edges[0], edges[-1])
    ref, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    np.testing.assert_allclose(table["weight"].to_numpy(), ref, rtol=1e-10, atol=1e-12)


def test_scale_dependent_weights_equal_per_bin_least_squares():
    x, t = _random_problem(seed=2, n=20, c=3)
    eq = NormalEquations.empty(3, 16, SIDE_DEG)
    eq.add(x, t)
    table = weights_table(eq, np.arange(3), scale_dependent=True)
    edges = bin_edges(16, SIDE_DEG)
    assert len(table) == 3 * (len(edges) - 1)
    for j in (0, 3, len(edges) - 2):
        design, rhs = _fourier_design(x, t, 16, edges[j], edges[j + 1])
        ref, *_ = np.linalg.lstsq(design, rhs, rcond=None)
        got = table[np.isclose(table["ell_lo"], edges[j])].sort_values("channel")["weight"]
        np.testing.assert_allclose(got.to_numpy(), ref, rtol=1e-9)


def test_ridge_solution_equals_the_regularised_closed_form():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(6, 4))
    a, b = m.T @ m, rng.normal(size=4)
    ridge = 0.1
    expected = np.linalg.solve(a + ridge * np.trace(a) / 4 * np.eye(4), b)
    np.testing.assert_allclose(solve_normal_equations(a, b, ridge), expected, rtol=1e-10)


def test_collinear_channels_give_a_finite_solution():
    x, t = _random_problem(seed=4, c=2)
    x = np.concatenate([x, x[:, :1]], axis=1)  # channel 2 duplicates channel 0
    eq = NormalEquations.empty(3, 16, SIDE_DEG)
    eq.add(x, t)
    w = weights_table(eq, np.arange(3))["weight"].to_numpy()
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w[0], w[2], rtol=1e-6)  # minimum norm splits the weight


def test_fit_linear_writes_the_weights_table(tmp_path):
    paths = write_fake_shards(tmp_path / "shards", channels=4)
    table = fit_linear(paths, tmp_path / "linear.csv").scale_independent
    back = read_weights(tmp_path / "linear.csv")
    assert list(back.columns) == TABLE_COLUMNS
    assert back["channel"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(back["velocity_kms"], ShardSet(paths).velocities_kms)
    np.testing.assert_allclose(back["weight"], table["weight"], rtol=1e-8)


def test_normal_equations_do_not_depend_on_the_thread_count(tmp_path):
    # 40 cutouts in chunks of 4: ten chunks summed in order whether 1 or 3 run at once
    shards = ShardSet(write_fake_shards(tmp_path / "shards", channels=4))
    one = accumulate_shards(shards, chunk=4, nthreads=1)
    three = accumulate_shards(shards, chunk=4, nthreads=3)
    assert one.a.tobytes() == three.a.tobytes() and one.b.tobytes() == three.b.tobytes()


def test_fit_linear_writes_both_models_from_the_same_normal_equations(tmp_path):
    paths = write_fake_shards(tmp_path / "shards", channels=4)
    fitted = fit_linear(paths, tmp_path / "linear.csv", tmp_path / "linear_sd.csv")
    eq = NormalEquations.empty(4, 16, SIDE_DEG)
    data = ShardSet(paths).load(["inputs", "target"])
    eq.add(data["inputs"], data["target"])
    velocities = ShardSet(paths).velocities_kms
    for path, table, sd in (
        ("linear.csv", fitted.scale_independent, False),
        ("linear_sd.csv", fitted.scale_dependent, True),
    ):
        expected = weights_table(eq, velocities, scale_dependent=sd)
        back = read_weights(tmp_path / path)
        np.testing.assert_allclose(back["weight"], expected["weight"], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(back["weight"], table["weight"], rtol=1e-8)
    nbins = len(bin_edges(16, SIDE_DEG)) - 1
    assert len(read_weights(tmp_path / "linear_sd.csv")) == 4 * nbins  # one vector per bin
    assert len(read_weights(tmp_path / "linear.csv")) == 4


def test_scale_independent_prediction_is_the_weighted_channel_sum():
    x, _ = _random_problem(c=3)
    table = pd.DataFrame(
        {
            "channel": [0, 1, 2],
            "velocity_kms": [0.0, 1.0, 2.0],
            "weight": [0.5, -1.0, 2.0],
            "ell_lo": 14.4,
            "ell_hi": 130.0,
        }
    )
    got = predict_linear(x, table, side_deg=SIDE_DEG)
    np.testing.assert_allclose(got, 0.5 * x[:, 0] - x[:, 1] + 2 * x[:, 2], rtol=1e-5, atol=1e-5)


def test_scale_dependent_prediction_with_equal_bins_is_the_weighted_sum_minus_the_mean():
    x, t = _random_problem(c=3)
    eq = NormalEquations.empty(3, 16, SIDE_DEG)
    eq.add(x, t)
    table = weights_table(eq, np.arange(3), scale_dependent=True)
    table["weight"] = np.tile([0.5, -1.0, 2.0], len(table) // 3)
    got = predict_linear(x, table, side_deg=SIDE_DEG)
    direct = 0.5 * x[:, 0] - x[:, 1] + 2 * x[:, 2]
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-4)


# --- U-Net -----------------------------------------------------------------------------------


def n_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def double_conv_parameters(c_in: int, c_out: int) -> int:
    # Two 3x3 convolutions without bias, each followed by a BatchNorm (weight and bias).
    return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out


def test_unet_variant_names():
    assert VARIANTS == ("paper", "halving", "residual")
    with pytest.raises(InputError, match="unet.variant.*'unet'.*expected one of"):
        UNet(3, widths=(4, 8), variant="unet")


def test_paper_unet_parameter_count_at_the_papers_widths():
    # The authors' network (chitingchiang/unet_21cm_dust, pytorch/unet.py) on the paper's 64
    # velocity maps: encoder 64-128-256-512, bottleneck 512; each decoder level is a 2x2
    # transposed convolution c -> c (weights 4 c^2, bias c) and a double convolution from
    # c + skip channels to 256, 128, 64, 64; a 1x1 head 64 -> 1 with bias.
    encoder = sum(
        double_conv_parameters(a, b)
        for a, b in [(64, 64), (64, 128), (128, 256), (256, 512), (512, 512)]
    )
    decoder = sum(
        4 * c * c + c + double_conv_parameters(c + skip, out)
        for c, skip, out in [(512, 512, 256), (256, 256, 128), (128, 128, 64), (64, 64, 64)]
    )
    head = 64 + 1
    assert encoder + decoder + head == 14_820_097
    net = UNet(64, widths=(64, 128, 256, 512), bottleneck=512, variant="paper")
    assert n_parameters(net) == 14_820_097


def test_halving_unet_parameter_count_at_the_papers_widths():
    # The former decoder: transposed convolution c -> w (4 c w + w), double convolution 2w -> w.
    encoder = sum(
        double_conv_parameters(a, b)
        for a, b in [(64, 64), (64, 128), (128, 256), (256, 512), (512, 512)]
    )
    decoder = sum(
        4 * c * w + w + double_conv_parameters(2 * w, w)
        for c, w in [(512, 512), (512, 256), (256, 128), (128, 64)]
    )
    assert encoder + decoder + 65 == 20_584_961
    net = UNet(64, widths=(64, 128, 256, 512), bottleneck=512, variant="halving")
    assert n_parameters(net) == 20_584_961


def test_paper_unet_decoder_keeps_channels_in_its_transposed_convolutions():
    # Widths that do not double, so that the mapping of the module docstring is visible.
    net = UNet(3, widths=(4, 6, 10), bottleneck=12, variant="paper")
    assert [(m.in_channels, m.out_channels) for m in net.up] == [(12, 12), (6, 6), (4, 4)]
    dec_convs = [[m for m in block if isinstance(m, torch.nn.Conv2d)] for block in net.dec]
    assert [(c[0].in_channels, c[0].out_channels) for c in dec_convs] == [(22, 6), (12, 4), (8, 4)]
    assert all(m.bias is not None for m in net.up) and net.head.in_channels == 4


@pytest.mark.parametrize(
    ("variant", "kind"), [("paper", torch.nn.Dropout2d), ("halving", torch.nn.Dropout)]
)
def test_unet_dropout_type_after_every_convolution(variant, kind):
    net = UNet(3, widths=(4, 8), dropout=0.3, variant=variant)
    convs = [m for m in net.modules() if type(m) is torch.nn.Conv2d and m.kernel_size == (3, 3)]
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d)]
    assert len(drops) == len(convs) == 2 * (2 + 1 + 2)
    assert all(type(m) is kind and m.p == 0.3 for m in drops)
    assert all(m.bias is None for m in convs)


def test_paper_unet_dropout_zeroes_whole_feature_maps():
    # Dropout2d: in training mode each (sample, channel) map is either all zero or all kept.
    torch.manual_seed(0)
    drop = UNet(3, widths=(4, 8), dropout=0.5, variant="paper").down[0][3]
    y = drop(torch.ones(8, 4, 16, 16))
    per_map = y.flatten(2)
    assert ((per_map == 0).all(-1) | (per_map == 2.0).all(-1)).all()
    assert (per_map == 0).all(-1).any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_unet_forward_backward_at_the_default_configs_widths(variant):
    # config/config.yaml: 64 velocity maps (+ the integrated map for residual), 64x64 pixels,
    # widths 8-16-32-64 and the bottleneck = last width.
    torch.manual_seed(0)
    c = 64 + (variant == "residual")
    net = UNet(c, widths=(8, 16, 32, 64), bottleneck=None, dropout=0.3, variant=variant)
    x = torch.randn(2, c, 64, 64)
    out = net(x)
    assert out.shape == (2, 64, 64)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [16, 32])
def test_unet_forward_backward(variant, size):
    torch.manual_seed(0)
    net = UNet(5, widths=(4, 8, 16), bottleneck=16, dropout=0.3, variant=variant)
    x = torch.randn(3, 5, size, size)
    out = net(x)
    assert out.shape == (3, size, size)
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unet_rejects_sizes_not_divisible_by_two_to_the_depth():
    net = UNet(2, widths=(4, 8))
    with pytest.raises(InputError, match="divisible by 4"):
        net(torch.randn(1, 2, 18, 18))


def test_residual_unet_starts_at_the_integrated_channel():
    net = UNet(3, widths=(4, 8), variant="residual").eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net(x), x[:, -1])


def test_forward_flops_of_the_paper_network():
    # 64 input maps of 64x64, widths 64-128-256-512, bottleneck 512, the authors' decoder:
    # 4.287 GFLOP (2 per multiply-add; 3x3 convs 18 h w c_in c_out, transposed 8 h w c^2 at
    # the input's h w, head 2 h w 64), which times 3 (forward + backward) times
    # 50,000 x 40 samples is ~26 PFLOP.
    encoder = sum(
        18 * s * s * (a * b + b * b)
        for s, a, b in [(64, 64, 64), (32, 64, 128), (16, 128, 256), (8, 256, 512), (4, 512, 512)]
    )
    decoder = sum(
        8 * (s // 2) ** 2 * c * c + 18 * s * s * ((c + c) * out + out * out)
        for s, c, out in [(8, 512, 256), (16, 256, 128), (32, 128, 64), (64, 64, 64)]
    )
    assert encoder + decoder + 2 * 64 * 64 * 64 == 4_287_102_976
    net = UNet(64, widths=(64, 128, 256, 512), bottleneck=512, variant="paper")
    assert forward_flops(net, 64, 64) == 4_287_102_976


def test_forward_flops_of_the_halving_network():
    net = UNet(64, widths=(64, 128, 256, 512), bottleneck=512, variant="halving")
    assert forward_flops(net, 64, 64) == pytest.approx(5.973e9, rel=1e-3)


def test_model_file_round_trip(tmp_path):
    from dustpred.models.checkpoint import TrainResult
    from dustpred.models.inputs import InputStats

    torch.manual_seed(1)
    net = UNet(3, widths=(4, 8), variant="residual")
    with torch.no_grad():
        net.head.weight.normal_()
    best = {
        k: v.clone() + (0.01 if v.is_floating_point() else 0) for k, v in net.state_dict().items()
    }
    stats = InputStats("cube", "residual", [0.0, 1.0], 1.0, [0.0, 0.0], [1.0, 1.0], 2.0, 3.0)
    settings = UNetSettings.from_config({"dropout": 0.3, "bottleneck": None})
    result = TrainResult([], 1, 0.5, best)
    save_model(tmp_path / "unet.pt", net, result, settings=settings, stats=stats, seed=4, meta={})
    x = torch.randn(2, 3, 16, 16)
    last, stats2, meta = load_model(tmp_path / "unet.pt", which="last")
    assert stats2 == stats and meta["seed"] == 4 and "torch" in meta["versions"]
    torch.testing.assert_close(last(x), net.eval()(x), rtol=0, atol=0)
    loaded_best, _, _ = load_model(tmp_path / "unet.pt", which="best")
    net.load_state_dict(best)
    torch.testing.assert_close(loaded_best(x), net.eval()(x), rtol=0, atol=0)


class _RunsCode:
    """Pickles as a call of ``Path.touch``: loading it with pickle would create the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_model_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": "dustpred-unet", "payload": _RunsCode(marker)}, tmp_path / "unet.pt")
    with pytest.raises(InputError, match=rf"{tmp_path / 'unet.pt'}: cannot be read as a U-Net"):
        load_model(tmp_path / "unet.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04 truncated zip"])
def test_a_damaged_model_file_gives_one_error_naming_it(tmp_path, content):
    (tmp_path / "unet.pt").write_bytes(content)
    with pytest.raises(InputError, match="unet.pt: cannot be read as a U-Net model file"):
        load_model(tmp_path / "unet.pt")


def test_load_model_rejects_other_files(tmp_path):
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a dustpred U-Net"):
        load_model(tmp_path / "other.pt")


# --- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["mean_abs", "none", 25.0])
def test_target_scale_setting_sets_the_target_divisor_and_keeps_the_base_on_its_scale(
    tmp_path, setting
):
    paths = write_fake_shards(tmp_path / "s", channels=4, n_per_shard=(20,))
    shards = ShardSet(paths)
    d = shards.read(["inputs", "target", "mask"], np.arange(shards.n))
    good = d["mask"] == 0
    mean_abs_t = np.abs(d["target"][good].astype(np.float64)).mean()
    stats = fit_input_stats(
        shards, np.arange(shards.n), input_kind="cube", variant="residual", target_scale=setting
    )
    expected = {"mean_abs": mean_abs_t, "none": 1.0, 25.0: 25.0}[setting]
    np.testing.assert_allclose(stats.target_scale, expected, rtol=1e-6)
    # The residual's integrated channel has the mean |.| of the scaled target.
    base = prepare_inputs(d["inputs"], d["mask"], stats).numpy()[:, -1]
    np.testing.assert_allclose(np.abs(base[good]).mean(), mean_abs_t / expected, rtol=1e-4)


def test_unknown_target_scale_is_a_config_error(tmp_path):
    shards = ShardSet(write_fake_shards(tmp_path / "s", channels=4, n_per_shard=(8,)))
    with pytest.raises(ConfigError, match="'unet.target_scale': found 'max'"):
        fit_input_stats(
            shards, np.arange(shards.n), input_kind="cube", variant="paper", target_scale="max"
        )


@pytest.mark.parametrize("kind,nf", [("cube", 4), ("moments", 3), ("integrated", 1)])
def test_prepared_inputs_are_standardised_and_zero_where_masked(tmp_path, kind, nf):
    paths = write_fake_shards(tmp_path / "s", channels=4, n_per_shard=(20,))
    shards = ShardSet(paths)
    stats = fit_input_stats(shards, np.arange(shards.n), input_kind=kind, variant="residual")
    d = shards.read(["inputs", "mask"], np.arange(shards.n))
    x = prepare_inputs(d["inputs"], d["mask"], stats).numpy()
    assert x.shape == (20, nf + 1, 16, 16)
    good = d["mask"] == 0
    assert np.all(x.transpose(1, 0, 2, 3)[:, ~good] == 0)
    feats = x[:, :nf].transpose(1, 0, 2, 3)[:, good]
    np.testing.assert_allclose(feats.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(feats.std(axis=1), 1, rtol=1e-3)
    np.testing.assert_allclose(
        x[:, -1][good].mean() * stats.base_scale, d["inputs"].sum(axis=1)[good].mean(), rtol=1e-4
    )


def test_moment_features_recover_velocity_of_single_channel_emission():
    from dustpred.models.inputs import InputStats

    v = [-10.0, 0.0, 5.0]
    cube = np.zeros((1, 3, 8, 8), np.float32)
    cube[0, 2] = 7.0  # all emission at +5 km/s: mean velocity 5, dispersion 0
    stats = InputStats("moments", "paper", v, 1.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    x = prepare_inputs(cube, np.zeros((1, 8, 8), np.uint8), stats).numpy()
    np.testing.assert_allclose(x[0, 0], np.arcsinh(7.0), rtol=1e-6)
    np.testing.assert_allclose(x[0, 1], 5.0, rtol=1e-6)
    np.testing.assert_allclose(x[0, 2], 0.0, atol=1e-3)


def test_dihedral_permutations_are_the_rotations_and_flips():
    img = torch.arange(36.0).view(6, 6)
    perms = dihedral_permutations(6)
    got = {tuple(img.flatten()[p].tolist()) for p in perms}
    expected = {
        tuple(torch.rot90(a, k).flatten().tolist()) for a in (img, img.flip(-1)) for k in range(4)
    }
    assert got == expected and len(got) == 8


def test_augmented_batches_agree_between_storage_layouts_and_gather_paths():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 3, 8, 8, generator=g)
    target, mask = torch.randn(5, 8, 8, generator=g), torch.rand(5, 8, 8, generator=g) > 0.8
    base = torch.randn(5, 8, 8, generator=g)
    nchw = ResidentData(feats, base, target, mask, nhwc=False)
    nhwc = ResidentData(feats.permute(0, 2, 3, 1).contiguous(), base, target, mask, nhwc=True)
    idx, aug = torch.tensor([3, 0, 4]), torch.tensor([1, 5, 7])
    per_sample = nchw.batch(idx, aug)  # CPU path: one rot90/flip per sample
    per_sample_nhwc = nhwc.batch(idx, aug)
    gather = nchw._assemble(*_gather_batch(nchw, idx, aug))  # the CUDA path, run on CPU
    for u, v, w in zip(per_sample, per_sample_nhwc, gather, strict=True):
        assert torch.equal(u, v) and torch.equal(u, w)
    x, t, m = per_sample
    k = 1  # element 1 is rot90 once: applies to features, base channel, target and mask alike
    assert torch.equal(x[0, :3], torch.rot90(feats[3], k, dims=(-2, -1)))
    assert torch.equal(x[0, 3], torch.rot90(base[3], k))
    assert torch.equal(t[0], torch.rot90(target[3], k))
    assert torch.equal(m[0], torch.rot90(mask[3], k))


def _gather_batch(data, idx, aug):
    """The gather-based batch of ResidentData.batch (used on CUDA), forced on CPU tensors."""
    perm = dihedral_permutations(data.npix)[aug]
    b, hw = len(idx), data.npix**2
    f = data.features[idx].reshape(b, -1, hw)
    f = f.gather(2, perm[:, None, :].expand(b, f.shape[1], hw)).view(b, -1, data.npix, data.npix)

    def g2(a):
        return a[idx].reshape(b, hw).gather(1, perm).view(b, data.npix, data.npix)

    return f, g2(data.base), g2(data.target), g2(data.mask)
