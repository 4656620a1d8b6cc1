"""The discriminator's op table: name -> block builder and analytic cost. Kept apart from the generator's ``OPS``.

A block maps ``c_in x H x W`` to ``c_out x ceil(H / stride) x ceil(W / stride)``: the conv(s), then the
normalisation, then LeakyReLU(0.2). Norms: ``none``; ``batch`` (BatchNorm2d after the last conv); ``spectral``
(``torch.nn.utils.parametrizations.spectral_norm`` on every conv). Convs carry a bias only when nothing after them
shifts the output anyway, i.e. for ``none`` and ``spectral``; BatchNorm's own shift makes a bias redundant.

Costs are counted the way thop counts a model in eval mode, so analytic and measured figures agree exactly:

- params: trainable parameters (conv weights and biases, BatchNorm's affine weight and bias; BatchNorm running
  statistics and spectral norm's ``u``/``v`` vectors are buffers, not parameters);
- MACs: the convolutions, ``C_out * H_out * W_out * (C_in / groups) * k * k``, plus 4 per BatchNorm output element
  (thop charges 2 per element for normalising and doubles it for the affine transform, in eval and train mode
  alike). LeakyReLU and biases cost nothing; spectral norm's sigma is computed inside the conv's forward, which
  thop does not count, and a deployed discriminator would fold it into the weight.

The search space is a tuple of names per choice, kept apart from the table: ``D_SEARCH_SPACE`` (ops per block),
``D_SEARCH_WIDTHS``, ``NORMS`` and ``HEADS`` (the classifier head, built in ``darts_sr.nets.discriminator``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from operations import conv_macs

NORMS: tuple[str, ...] = ("none", "batch", "spectral")
# pool: global average pooling and two linear layers, one logit per image; patch: a 1 x 1 conv, one logit per
# position of the last feature map (a PatchGAN-style output). Built and counted in darts_sr.nets.discriminator.
HEADS: tuple[str, ...] = ("pool", "patch")

# BatchNorm2d in thop: 2 ops per element to normalise, doubled for the affine weight and bias.
BATCHNORM_MACS_PER_ELEMENT = 4
LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class DOpSpec:
    """A discriminator block: how to build it and what it costs.

    ``build(c_in, c_out, stride, norm)``, ``params(c_in, c_out, norm)`` and
    ``macs(c_in, c_out, h_out, w_out, norm)`` where ``h_out x w_out`` is the block's output size.
    """

    build: Callable[[int, int, int, str], nn.Module]
    params: Callable[[int, int, str], int]
    macs: Callable[[int, int, int, int, str], int]


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


def _conv(
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int,
    norm: str,
    dilation: int = 1,
    groups: int = 1,
    bias: bool | None = None,
) -> nn.Module:
    # dilation * (k - 1) / 2 keeps H x W at stride 1 and gives ceil(H / 2) at stride 2 (odd k).
    padding = dilation * (kernel - 1) // 2
    if bias is None:
        bias = norm != "batch"
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, groups=groups, bias=bias)
    return spectral_norm(conv) if norm == "spectral" else conv


def _tail(c_out: int, norm: str) -> list[nn.Module]:
    # LeakyReLU not in place: a supernet sums several blocks' outputs and hooks may keep them.
    return ([nn.BatchNorm2d(c_out)] if norm == "batch" else []) + [nn.LeakyReLU(LEAKY_SLOPE)]


class ConvBlock(nn.Sequential):
    """k x k conv (optionally dilated) with stride, then norm, then LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str, dilation: int = 1):
        _check_norm(norm)
        super().__init__(_conv(c_in, c_out, kernel, stride, norm, dilation), *_tail(c_out, norm))


class SepConvBlock(nn.Sequential):
    """k x k depthwise conv with stride, 1 x 1 conv to ``c_out``, then norm, then LeakyReLU(0.2).

    The depthwise conv never has a bias: with no nonlinearity before the 1 x 1 conv, its bias would fold exactly
    into the 1 x 1 conv's bias (or BatchNorm's shift) and only add parameters.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str):
        _check_norm(norm)
        super().__init__(
            _conv(c_in, c_in, kernel, stride, norm, groups=c_in, bias=False),
            _conv(c_in, c_out, 1, 1, norm),
            *_tail(c_out, norm),
        )


def _norm_params(c_out: int, norm: str) -> int:
    """Bias of the last conv (none/spectral) or BatchNorm's affine weight and bias (batch)."""
    _check_norm(norm)
    return 2 * c_out if norm == "batch" else c_out


def _norm_macs(c_out: int, h: int, w: int, norm: str) -> int:
    _check_norm(norm)
    return BATCHNORM_MACS_PER_ELEMENT * c_out * h * w if norm == "batch" else 0


def _conv_op(kernel: int, dilation: int = 1) -> DOpSpec:
    return DOpSpec(
        build=lambda ci, co, s, norm: ConvBlock(ci, co, kernel, s, norm, dilation),
        params=lambda ci, co, norm: co * ci * kernel * kernel + _norm_params(co, norm),
        macs=lambda ci, co, h, w, norm: conv_macs(ci, co, kernel, h, w) + _norm_macs(co, h, w, norm),
    )


def _sep_op(kernel: int) -> DOpSpec:
    return DOpSpec(
        build=lambda ci, co, s, norm: SepConvBlock(ci, co, kernel, s, norm),
        params=lambda ci, co, norm: ci * kernel * kernel + co * ci + _norm_params(co, norm),
        macs=lambda ci, co, h, w, norm: (
            conv_macs(ci, ci, kernel, h, w, groups=ci) + conv_macs(ci, co, 1, h, w) + _norm_macs(co, h, w, norm)
        ),
    )


D_OPS: dict[str, DOpSpec] = {
    "conv_3x3": _conv_op(3),
    "conv_5x5": _conv_op(5),
    "sep_3x3": _sep_op(3),
    "sep_5x5": _sep_op(5),
    "dil_3x3": _conv_op(3, dilation=2),
}

# The default candidates of the discriminator search (stage 2). Per block only a dense and a separable 3 x 3: the
# kernel shape of one block changes little; what differs between the discriminators SRGAN, ESRGAN and PatchGAN
# variants use is width, normalisation and head, searched over D_SEARCH_WIDTHS, NORMS and HEADS.
D_SEARCH_SPACE: tuple[str, ...] = ("conv_3x3", "sep_3x3")
D_SEARCH_WIDTHS: tuple[int, ...] = (8, 16, 32, 64)  # base widths; SRGAN's is 64


def build_d_op(name: str, c_in: int, c_out: int, stride: int, norm: str) -> nn.Module:
    """Builds discriminator block ``name``; raises KeyError naming unknown ops, ValueError for unknown norms."""
    if name not in D_OPS:
        raise KeyError(f"unknown discriminator operation {name!r}; known: {', '.join(D_OPS)}")
    return D_OPS[name].build(c_in, c_out, stride, norm)


def out_size(size: int, stride: int) -> int:
    """Spatial size after a block with ``stride``: ``ceil(size / stride)``."""
    return -(-size // stride)
