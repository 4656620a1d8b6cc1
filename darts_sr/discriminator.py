"""Discriminator genotypes and the Discriminator built from them.

A discriminator genotype names one op (from ``operations.discriminator.D_OPS``) per block. The layout is SRGAN's:
block ``i`` (0-based) has stride 2 when ``i`` is odd and ``base_width * 2 ** (i // 2)`` output channels, capped at
``base_width * 8``; block 0 has no normalisation (SRGAN's first conv has no BatchNorm). A classifier head follows:
global average pooling -> Linear(c_last, 16 * base_width) -> LeakyReLU(0.2) -> Linear(.., 1).

Images are float tensors in [0, 1], (B, 3, H, W) RGB, as everywhere in darts_sr; the output is one raw logit per
image, (B, 1), meant for the relativistic losses in ``darts_sr.losses``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from darts_sr.genotype import GenotypeError, _check_keys, _typed, load_genotype
from operations.discriminator import D_OPS, LEAKY_SLOPE, NORMS, build_d_op, out_size

IMAGE_CHANNELS = 3
MAX_WIDTH_FACTOR = 8  # SRGAN stops doubling at 512 = 8 * 64 channels
HEAD_WIDTH_FACTOR = 16  # SRGAN's dense layer: 1024 = 16 * 64 units


@dataclass(frozen=True)
class DiscriminatorGenotype:
    """A derived discriminator: one op name per block, the base width and the normalisation."""

    blocks: tuple[str, ...]
    base_width: int = 64
    norm: str = "batch"

    def __post_init__(self):
        if isinstance(self.blocks, str) or not isinstance(self.blocks, tuple | list):
            raise GenotypeError(f"'blocks' must be a list of op names, got {self.blocks!r}")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        _validate_discriminator(self)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "discriminator", "base_width": self.base_width, "norm": self.norm, "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, data: Any) -> DiscriminatorGenotype:
        if not isinstance(data, dict):
            raise GenotypeError("a discriminator genotype must be a JSON object")
        _check_keys(data, required={"blocks"}, optional={"kind", "base_width", "norm"}, where="genotype")
        if data.get("kind", "discriminator") != "discriminator":
            raise GenotypeError(f"kind is {data['kind']!r}, expected 'discriminator'")
        raw_blocks = data["blocks"]
        if not isinstance(raw_blocks, list):
            raise GenotypeError("'blocks' must be a list of op names")
        return cls(
            blocks=tuple(_typed(b, str, f"block {i} op") for i, b in enumerate(raw_blocks)),
            base_width=_typed(data.get("base_width", 64), int, "'base_width'"),
            norm=_typed(data.get("norm", "batch"), str, "'norm'"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DiscriminatorGenotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"not valid JSON ({e})") from None
        return cls.from_dict(data)

    def describe(self) -> str:
        """One line per block plus the head, readable in logs and TensorBoard."""
        layout = block_layout(len(self.blocks), self.base_width)
        lines = [f"discriminator, {len(self.blocks)} blocks, base width {self.base_width}, norm {self.norm}"]
        for i, (op, (c_in, c_out, stride)) in enumerate(zip(self.blocks, layout)):
            lines.append(f"block {i}: {op} {c_in}->{c_out} stride {stride} norm {block_norm(i, self.norm)}")
        c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * self.base_width
        lines.append(f"head: global average pool -> linear {c_last}->{hidden} -> LeakyReLU -> linear {hidden}->1")
        return "\n".join(lines)


def _validate_discriminator(g: DiscriminatorGenotype) -> None:
    if not g.blocks:
        raise GenotypeError("a discriminator needs at least one block")
    for i, op in enumerate(g.blocks):
        if not isinstance(op, str) or op not in D_OPS:
            raise GenotypeError(f"block {i}: unknown op {op!r}; known: {', '.join(D_OPS)}")
    if not isinstance(g.base_width, int) or isinstance(g.base_width, bool) or g.base_width < 1:
        raise GenotypeError(f"base_width must be a positive integer, got {g.base_width!r}")
    if g.norm not in NORMS:
        raise GenotypeError(f"unknown norm {g.norm!r}; known: {', '.join(NORMS)}")


def block_layout(num_blocks: int, base_width: int) -> tuple[tuple[int, int, int], ...]:
    """``(c_in, c_out, stride)`` of each block in SRGAN's layout (k3n64s1, k3n64s2, k3n128s1, ... k3n512s2)."""
    layout, c_in = [], IMAGE_CHANNELS
    for i in range(num_blocks):
        c_out = base_width * min(2 ** (i // 2), MAX_WIDTH_FACTOR)
        layout.append((c_in, c_out, 2 if i % 2 else 1))
        c_in = c_out
    return tuple(layout)


def block_norm(index: int, norm: str) -> str:
    """The normalisation block ``index`` uses: none on block 0 (SRGAN's first conv has none), ``norm`` elsewhere."""
    return "none" if index == 0 else norm


class Discriminator(nn.Module):
    """A discriminator built from a genotype: (B, 3, H, W) in [0, 1] -> (B, 1) logits, for any H, W >= 1."""

    def __init__(self, genotype: DiscriminatorGenotype):
        super().__init__()
        self.genotype = genotype
        layout = block_layout(len(genotype.blocks), genotype.base_width)
        self.blocks = nn.Sequential(
            *(
                build_d_op(op, c_in, c_out, stride, block_norm(i, genotype.norm))
                for i, (op, (c_in, c_out, stride)) in enumerate(zip(genotype.blocks, layout))
            )
        )
        c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * genotype.base_width
        # SRGAN flattens a fixed 512 x 6 x 6 map (96 x 96 patches) into its dense layer; global average pooling
        # makes the head independent of the patch size, so training and search may use any crop.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_last, hidden), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        # The image goes in as-is, in [0, 1], like BasicSR's discriminators: block 0's conv has a bias that absorbs
        # the offset, BatchNorm follows from block 1 on, and rescaling would be uncounted work for no gain.
        x = self.blocks(x)  # (B, C_last, ceil(H / 2**k), ceil(W / 2**k)) for k stride-2 blocks
        return self.head(self.pool(x))  # (B, 1)


def discriminator_params(genotype: DiscriminatorGenotype) -> int:
    """Trainable parameters of ``Discriminator(genotype)``, by formula."""
    layout = block_layout(len(genotype.blocks), genotype.base_width)
    blocks = sum(
        D_OPS[op].params(c_in, c_out, block_norm(i, genotype.norm))
        for i, (op, (c_in, c_out, _)) in enumerate(zip(genotype.blocks, layout))
    )
    c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * genotype.base_width
    return blocks + (c_last * hidden + hidden) + (hidden + 1)


def discriminator_macs(genotype: DiscriminatorGenotype, height: int, width: int) -> int:
    """MACs of ``Discriminator(genotype)`` on one ``height x width`` image, as thop counts the eval-mode model.

    Blocks as in ``operations.discriminator``; the global average pool costs one add per input element and one
    divide per channel (thop's rule); each Linear costs in_features * out_features (biases free).
    """
    layout = block_layout(len(genotype.blocks), genotype.base_width)
    total, h, w = 0, height, width
    for i, (op, (c_in, c_out, stride)) in enumerate(zip(genotype.blocks, layout)):
        h, w = out_size(h, stride), out_size(w, stride)
        total += D_OPS[op].macs(c_in, c_out, h, w, block_norm(i, genotype.norm))
    c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * genotype.base_width
    return total + (c_last * h * w + c_last) + c_last * hidden + hidden


# SRGAN's discriminator (Ledig et al., 2017), used by ESRGAN and as stage 1's fixed discriminator.
SRGAN_DISCRIMINATOR = DiscriminatorGenotype(blocks=("conv_3x3",) * 8, base_width=64, norm="batch")

BUILTIN_DISCRIMINATORS: dict[str, DiscriminatorGenotype] = {"reference": SRGAN_DISCRIMINATOR}


def load_discriminator_genotype(spec: str | os.PathLike) -> DiscriminatorGenotype:
    """A built-in name (``reference``) or a JSON file. Errors name the file."""
    return load_genotype(spec, BUILTIN_DISCRIMINATORS, DiscriminatorGenotype.from_dict)
