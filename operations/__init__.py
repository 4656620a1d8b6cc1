"""The one table of candidate operations: name -> builder and analytic cost.

Every generator op maps C channels to C channels and keeps H x W. Costs are counted the way
thop counts them, so analytic and measured figures agree exactly:

- params: trainable parameters (weights, biases, PReLU slopes);
- MACs: multiply-accumulates of the convolutions, ``C_out * H * W * (C_in / groups) * k * k``,
  plus one per PReLU element (the slope multiply; thop's count for a model in eval mode).
  Biases, identities and pixel shuffles cost nothing.

The search space is a tuple of names, kept apart from the table (see ``GENERATOR_SEARCH_SPACE``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class OpSpec:
    """An operation: how to build it and what it costs for ``channels`` at ``height x width``."""

    build: Callable[[int], nn.Module]
    params: Callable[[int], int]
    macs: Callable[[int, int, int], int]
    parameter_free: bool = False


class ConvAct(nn.Sequential):
    """k x k conv with bias, then a single-slope PReLU (TPSR's ``conv``)."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, bias=True),
            nn.PReLU(1),
        )


class SepConvAct(nn.Sequential):
    """k x k depthwise conv without bias, PReLU, 1 x 1 conv with bias, PReLU (TPSR's ``sep``)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False),
            nn.PReLU(1),
            nn.Conv2d(channels, channels, 1, bias=True),
            nn.PReLU(1),
        )


class Zero(nn.Module):
    """The ``none`` op: contributes nothing. Exists only inside the supernet."""

    def forward(self, x):
        return x.mul(0.0)


def _conv(kernel: int, dilation: int = 1) -> OpSpec:
    return OpSpec(
        build=lambda c: ConvAct(c, kernel, dilation),
        params=lambda c: c * c * kernel * kernel + c + 1,
        macs=lambda c, h, w: conv_macs(c, c, kernel, h, w) + c * h * w,
    )


def _sep(kernel: int) -> OpSpec:
    return OpSpec(
        build=lambda c: SepConvAct(c, kernel),
        params=lambda c: c * kernel * kernel + 1 + c * c + c + 1,
        macs=lambda c, h, w: conv_macs(c, c, kernel, h, w, groups=c) + conv_macs(c, c, 1, h, w) + 2 * c * h * w,
    )


OPS: dict[str, OpSpec] = {
    "conv_3x3": _conv(3),
    "conv_5x5": _conv(5),
    "conv_7x7": _conv(7),
    "sep_3x3": _sep(3),
    "sep_5x5": _sep(5),
    "sep_7x7": _sep(7),
    "dil_3x3": _conv(3, dilation=2),
    "skip": OpSpec(build=lambda c: nn.Identity(), params=lambda c: 0, macs=lambda c, h, w: 0, parameter_free=True),
    "none": OpSpec(build=lambda c: Zero(), params=lambda c: 0, macs=lambda c, h, w: 0, parameter_free=True),
}

# Ops a derived generator may contain; ``none`` only exists while searching.
GENERATOR_OPS: tuple[str, ...] = tuple(name for name in OPS if name != "none")

# The default candidates of the generator search. Contains every op TPSR uses.
GENERATOR_SEARCH_SPACE: tuple[str, ...] = (
    "conv_3x3",
    "conv_5x5",
    "conv_7x7",
    "sep_3x3",
    "sep_5x5",
    "sep_7x7",
    "dil_3x3",
    "skip",
)


def build_op(name: str, channels: int) -> nn.Module:
    """Builds op ``name`` for ``channels`` channels; raises KeyError naming unknown ops."""
    if name not in OPS:
        raise KeyError(f"unknown operation {name!r}; known: {', '.join(OPS)}")
    return OPS[name].build(channels)


def conv_macs(c_in: int, c_out: int, kernel: int, height: int, width: int, groups: int = 1) -> int:
    """MACs of one convolution producing ``c_out x height x width``."""
    return c_out * height * width * (c_in // groups) * kernel * kernel
