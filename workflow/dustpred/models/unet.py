"""The U-Net of the paper (Fig. 2, section 2.3), as its authors built it, and two variants.

The network maps a stack of prepared input maps (B, C, H, W) to one predicted map (B, H, W).
Inputs are prepared by :mod:`dustpred.models.inputs` (asinh + per-channel standardisation);
the model knows nothing of units.

All variants share the encoder: ``depth = len(widths)`` levels of a double convolution
(twice: 3x3 convolution without bias, stride 1, same padding; BatchNorm; ReLU; dropout), each
followed by a 2x2 max-pool, then a double convolution of width ``bottleneck`` at the bottom.
On the way up each level applies a 2x2 transposed convolution of stride 2 (with bias),
concatenates the skip of that level and applies a double convolution; a final 1x1
convolution (with bias) gives one map. The variants differ in the decoder's widths and in
the dropout:

``paper`` -- the authors' network (GitHub ``chitingchiang/unet_21cm_dust``,
``pytorch/unet.py``). Their ``UNet(n_channel_in, n_channel_first=64, n_depth=4)`` is, in
the terms here, ``widths = [64, 128, 256, 512]`` (their ``in_conv`` and the first three
``DownConv``; each width doubles) and ``bottleneck = 512`` (their last ``DownConv``, which keeps
the width). Mapping for any ``widths = [w_0, ..., w_{n-1}]`` and bottleneck ``b``:

- the transposed convolution keeps its channel count (``c -> c``, with ``c = b`` at the
  bottom);
- the double convolution of level ``j`` takes ``c + w_j`` channels and outputs ``w_{j-1}``
  (``w_0`` at the top level, ``j = 0``): for the paper's widths the decoder blocks output
  256, 128, 64, 64 from inputs of 1024, 512, 256, 128 channels;
- the dropout is ``Dropout2d`` (whole feature maps are dropped), after every convolution
  including the bottleneck and the decoder.

The authors' activation is ``LeakyReLU(negative_slope=0)``, the same function and gradient as
ReLU. The paper's widths give 14,820,097 parameters for 64 input maps
(``tests/test_models.py`` derives the number layer by layer).

``halving`` -- the decoder this package had before (issue 15): the transposed convolution of
level ``j`` maps ``c -> w_j`` channels, the double convolution ``2 w_j -> w_j``, and dropout is
element-wise (``nn.Dropout``).

``residual`` -- the ``halving`` network (same layers, same initialisation), where the last
input channel is the integrated-intensity map (linearly scaled, see
:mod:`dustpred.models.inputs`); the output is ``head(features) + scale * integrated`` with a
learnable ``scale`` (initially 1) and a zero-initialised head, so the network starts from the
integrated-intensity baseline and learns the correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from dustpred.errors import InputError

if TYPE_CHECKING:
    from dustpred.models.settings import UNetSettings

VARIANTS = ("paper", "halving", "residual")


class DoubleConv(nn.Sequential):
    """Two times (3x3 conv, same padding -> BatchNorm -> ReLU -> dropout).

    ``channel_dropout`` picks ``nn.Dropout2d`` (drops whole feature maps, as the authors do)
    instead of element-wise ``nn.Dropout``. No dropout layer when ``dropout`` is 0.
    """

    def __init__(
        self, c_in: int, c_out: int, dropout: float, channel_dropout: bool = False
    ) -> None:
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            # No conv bias: the BatchNorm that follows has its own shift.
            layers += [
                nn.Conv2d(c, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if dropout > 0:
                drop = nn.Dropout2d if channel_dropout else nn.Dropout
                layers.append(drop(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net predicting one map from ``in_channels`` maps.

    Parameters
    ----------
    in_channels : int
        Number of input maps (for the residual variant: including the integrated map, which
        must be the last channel).
    widths : sequence of int
        Feature widths of the levels, top to bottom (paper: 64, 128, 256, 512).
    bottleneck : int, optional
        Width of the bottleneck double convolution (default: ``widths[-1]``, as in the paper).
    dropout : float
        Dropout rate after every convolution (paper: 0.3).
    variant : {"paper", "halving", "residual"}
        ``"paper"``: the authors' decoder and ``Dropout2d``; ``"halving"``: channel-halving
        transposed convolutions and element-wise dropout; ``"residual"``: ``"halving"`` plus
        ``scale * x[:, -1]`` added to the output (see module docstring).

    Notes
    -----
    Input H and W must be divisible by ``2 ** len(widths)``.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (64, 128, 256, 512),
        bottleneck: int | None = None,
        dropout: float = 0.3,
        variant: str = "paper",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise InputError(
                f"config key 'unet.variant': got {variant!r}, expected one of {VARIANTS}"
            )
        if not widths or any(int(w) < 1 for w in widths):
            raise InputError(f"config key 'unet.widths': got {widths!r}, expected positive ints")
        if variant == "residual" and in_channels < 2:
            raise InputError(
                f"residual U-Net needs >= 2 input channels (maps + integrated), got {in_channels}"
            )
        widths = [int(w) for w in widths]
        bottleneck = int(bottleneck or widths[-1])
        self.in_channels = int(in_channels)
        self.widths = widths
        self.variant = variant
        self.down = nn.ModuleList()
        channel_dropout = variant == "paper"
        c = self.in_channels
        for w in widths:
            self.down.append(DoubleConv(c, w, dropout, channel_dropout))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = DoubleConv(c, bottleneck, dropout, channel_dropout)
        c = bottleneck
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        if variant == "paper":
            # The authors' UpConv: the transposed convolution keeps the channels, the block
            # outputs the width of the level above (the top level keeps widths[0]).
            outs = widths[-2::-1] + [widths[0]]
            for skip, w in zip(reversed(widths), outs, strict=True):
                self.up.append(nn.ConvTranspose2d(c, c, kernel_size=2, stride=2))
                self.dec.append(DoubleConv(c + skip, w, dropout, channel_dropout))
                c = w
        else:
            for w in reversed(widths):
                self.up.append(nn.ConvTranspose2d(c, w, kernel_size=2, stride=2))
                self.dec.append(DoubleConv(2 * w, w, dropout))
                c = w
        self.head = nn.Conv2d(c, 1, kernel_size=1)
        if variant == "residual":
            # Start exactly at the integrated-intensity baseline.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.scale = nn.Parameter(torch.ones(()))

    @property
    def divisor(self) -> int:
        """Input H and W must be multiples of this."""
        return 2 ** len(self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) inputs to (B, H, W) predictions (float32 or the autocast dtype)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"U-Net input: got shape {tuple(x.shape)}, expected (B, {self.in_channels}, H, W)"
            )
        h, w = x.shape[-2:]
        if h % self.divisor or w % self.divisor:
            raise InputError(
                f"U-Net input: got {h}x{w} pixels, expected H and W divisible by {self.divisor} "
                f"(2 ** {len(self.widths)} levels)"
            )
        skips = []
        y = x
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = self.pool(y)
        y = self.bottom(y)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            y = dec(torch.cat([up(y), skip], dim=1))
        out = self.head(y)[:, 0]
        if self.variant == "residual":
            out = out + self.scale * x[:, -1].to(out.dtype)
        return out


def build_unet(in_channels: int, settings: UNetSettings) -> UNet:
    """Build a :class:`UNet` from the ``unet`` config section's settings."""
    return UNet(
        in_channels,
        widths=settings.widths,
        bottleneck=settings.bottleneck,
        dropout=settings.dropout,
        variant=settings.variant,
    )


def forward_flops(model: UNet, height: int, width: int) -> float:
    """Floating-point operations of one forward pass of one sample (2 per multiply-add).

    Counts convolutions and transposed convolutions only (BatchNorm, ReLU, pooling and
    dropout are < 1 % of the total). Training costs about three times this.
    """
    flops = 0.0
    h, w = height, width
    for block in list(model.down) + [model.bottom]:
        for m in block:
            if isinstance(m, nn.Conv2d):
                flops += 2.0 * h * w * m.in_channels * m.out_channels * 9
        if block is not model.bottom:
            h, w = h // 2, w // 2
    for up, dec in zip(model.up, model.dec, strict=True):
        flops += 2.0 * h * w * up.in_channels * up.out_channels * 4
        h, w = 2 * h, 2 * w
        for m in dec:
            if isinstance(m, nn.Conv2d):
                flops += 2.0 * h * w * m.in_channels * m.out_channels * 9
    flops += 2.0 * h * w * model.head.in_channels
    return flops
