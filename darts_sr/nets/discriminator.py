"""Discriminator genotypes and the Discriminator built from them.

A discriminator genotype names one op (from ``operations.discriminator.D_OPS``) per block, a base width, a
normalisation and a head. The layout is SRGAN's: block ``i`` (0-based) has stride 2 when ``i`` is odd and
``base_width * 2 ** (i // 2)`` output channels, capped at ``base_width * 8``; block 0 has no normalisation (SRGAN's
first conv has none). The head (``operations.discriminator.HEADS``) follows:

- ``pool`` (SRGAN's, the default): global average pooling -> Linear(c_last, 16 * base_width) -> LeakyReLU(0.2)
  -> Linear(.., 1); one logit per image, (B, 1).
- ``patch`` (PatchGAN-style): a 1 x 1 conv from c_last to one channel; one logit per position of the last feature
  map, flattened to (B, N) with N = ceil(H / 2**k) * ceil(W / 2**k) for k stride-2 blocks. The logits are *kept*
  per patch, not averaged: averaging a 1 x 1 conv's output equals the pool head without its hidden layer, whereas
  per-patch logits make the relativistic losses of ``darts_sr.losses`` compare every patch with the mean over all
  patches of the other side (their BCE is taken per entry and averaged), which is what makes a patch
  discriminator judge local texture.

The head is not normalised under any norm (SRGAN's dense layers have none). Images are float tensors in [0, 1],
(B, 3, H, W) RGB, as everywhere in darts_sr; the output is raw logits, (B, 1) or (B, N), for the relativistic losses.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from darts_sr.nets.genotype import GenotypeError, _check_keys, _typed, load_genotype
from operations.discriminator import (
    D_OPS,
    D_SEARCH_SPACE,
    D_SEARCH_WIDTHS,
    HEADS,
    LEAKY_SLOPE,
    NORMS,
    build_d_op,
    out_size,
)

IMAGE_CHANNELS = 3
MAX_WIDTH_FACTOR = 8  # SRGAN stops doubling at 512 = 8 * 64 channels
HEAD_WIDTH_FACTOR = 16  # SRGAN's dense layer: 1024 = 16 * 64 units


@dataclass(frozen=True)
class DiscriminatorGenotype:
    """A derived discriminator: one op name per block, the base width, the normalisation and the head."""

    blocks: tuple[str, ...]
    base_width: int = 64
    norm: str = "batch"
    head: str = "pool"

    def __post_init__(self):
        if isinstance(self.blocks, str) or not isinstance(self.blocks, tuple | list):
            raise GenotypeError(f"'blocks' must be a list of op names, got {self.blocks!r}")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        _validate_discriminator(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "discriminator",
            "base_width": self.base_width,
            "norm": self.norm,
            "head": self.head,
            "blocks": list(self.blocks),
        }

    @classmethod
    def from_dict(cls, data: Any) -> DiscriminatorGenotype:
        if not isinstance(data, dict):
            raise GenotypeError("a discriminator genotype must be a JSON object")
        _check_keys(data, required={"blocks"}, optional={"kind", "base_width", "norm", "head"}, where="genotype")
        if data.get("kind", "discriminator") != "discriminator":
            raise GenotypeError(f"kind is {data['kind']!r}, expected 'discriminator'")
        raw_blocks = data["blocks"]
        if not isinstance(raw_blocks, list):
            raise GenotypeError("'blocks' must be a list of op names")
        return cls(
            blocks=tuple(_typed(b, str, f"block {i} op") for i, b in enumerate(raw_blocks)),
            base_width=_typed(data.get("base_width", 64), int, "'base_width'"),
            norm=_typed(data.get("norm", "batch"), str, "'norm'"),
            # Genotypes written before the head was searched have no "head": they had the pool head.
            head=_typed(data.get("head", "pool"), str, "'head'"),
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
        lines = [
            f"discriminator, {len(self.blocks)} blocks, base width {self.base_width}, norm {self.norm}, "
            f"head {self.head}"
        ]
        for i, (op, (c_in, c_out, stride)) in enumerate(zip(self.blocks, layout)):
            lines.append(f"block {i}: {op} {c_in}->{c_out} stride {stride} norm {block_norm(i, self.norm)}")
        c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * self.base_width
        if self.head == "pool":
            lines.append(f"head: global average pool -> linear {c_last}->{hidden} -> LeakyReLU -> linear {hidden}->1")
        else:
            lines.append(f"head: conv 1x1 {c_last}->1, one logit per position of the last feature map (patch logits)")
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
    if g.head not in HEADS:
        raise GenotypeError(f"unknown head {g.head!r}; known: {', '.join(HEADS)}")


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


def head_params(head: str, c_last: int, base_width: int) -> int:
    """Trainable parameters of a head on ``c_last`` channels."""
    if head == "pool":
        hidden = HEAD_WIDTH_FACTOR * base_width
        return (c_last * hidden + hidden) + (hidden + 1)
    if head == "patch":
        return c_last + 1
    raise ValueError(f"unknown head {head!r}; known: {', '.join(HEADS)}")


def head_macs(head: str, c_last: int, height: int, width: int, base_width: int) -> int:
    """MACs of a head on a ``c_last x height x width`` feature map, as thop counts them.

    pool: one add per input element and one divide per channel (thop's rule for the average pool), then
    in_features * out_features per Linear (biases free); patch: the 1 x 1 conv, ``c_last`` per position.
    """
    if head == "pool":
        hidden = HEAD_WIDTH_FACTOR * base_width
        return (c_last * height * width + c_last) + c_last * hidden + hidden
    if head == "patch":
        return c_last * height * width
    raise ValueError(f"unknown head {head!r}; known: {', '.join(HEADS)}")


class Discriminator(nn.Module):
    """A discriminator built from a genotype: (B, 3, H, W) in [0, 1] -> logits, for any H, W >= 1.

    Logits are (B, 1) for the pool head and (B, N) per-patch logits for the patch head (module docstring).
    """

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
        if genotype.head == "pool":
            # SRGAN flattens a fixed 512 x 6 x 6 map (96 x 96 patches) into its dense layer; global average pooling
            # makes the head independent of the patch size, so training and search may use any crop.
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(c_last, hidden), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(hidden, 1)
            )
        else:
            self.pool = nn.Identity()
            self.head = nn.Sequential(nn.Conv2d(c_last, 1, 1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        # The image goes in as-is, in [0, 1], like BasicSR's discriminators: block 0's conv has a bias that absorbs
        # the offset, BatchNorm follows from block 1 on, and rescaling would be uncounted work for no gain.
        x = self.blocks(x)  # (B, C_last, ceil(H / 2**k), ceil(W / 2**k)) for k stride-2 blocks
        return self.head(self.pool(x))  # pool: (B, 1); patch: (B, ceil(H / 2**k) * ceil(W / 2**k))

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The logits and every block's output (for feature matching), from one pass."""
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(self.pool(x)), features


def discriminator_params(genotype: DiscriminatorGenotype) -> int:
    """Trainable parameters of ``Discriminator(genotype)``, by formula."""
    layout = block_layout(len(genotype.blocks), genotype.base_width)
    blocks = sum(
        D_OPS[op].params(c_in, c_out, block_norm(i, genotype.norm))
        for i, (op, (c_in, c_out, _)) in enumerate(zip(genotype.blocks, layout))
    )
    return blocks + head_params(genotype.head, layout[-1][1], genotype.base_width)


def discriminator_macs(genotype: DiscriminatorGenotype, height: int, width: int) -> int:
    """MACs of ``Discriminator(genotype)`` on one ``height x width`` image, as thop counts the eval-mode model.

    Blocks as in ``operations.discriminator``, the head as in ``head_macs``.
    """
    layout = block_layout(len(genotype.blocks), genotype.base_width)
    total, h, w = 0, height, width
    for i, (op, (c_in, c_out, stride)) in enumerate(zip(genotype.blocks, layout)):
        h, w = out_size(h, stride), out_size(w, stride)
        total += D_OPS[op].macs(c_in, c_out, h, w, block_norm(i, genotype.norm))
    return total + head_macs(genotype.head, layout[-1][1], h, w, genotype.base_width)


# SRGAN's discriminator (Ledig et al., 2017), used by ESRGAN and as stage 1's fixed discriminator.
SRGAN_DISCRIMINATOR = DiscriminatorGenotype(blocks=("conv_3x3",) * 8, base_width=64, norm="batch")

# ESRGAN's discriminator body (Wang et al., 2018, VGG-style for 128-px crops): ten conv 3x3 blocks, 64 -> 512
# channels, stride 2 on every second, batch norm but on the first; five halvings take 128 px to 4. Its head here is
# the space's pool head (global pool, 1024 units); ESRGAN flattens the 4x4x512 map into 100 units instead.
ESRGAN_BODY_DISCRIMINATOR = DiscriminatorGenotype(blocks=("conv_3x3",) * 10, base_width=64, norm="batch")

BUILTIN_DISCRIMINATORS: dict[str, DiscriminatorGenotype] = {
    "reference": SRGAN_DISCRIMINATOR,
    "esrgan_body": ESRGAN_BODY_DISCRIMINATOR,
}


def load_discriminator_genotype(spec: str | os.PathLike) -> DiscriminatorGenotype:
    """A built-in name (``reference``: SRGAN's, ``esrgan_body``: ESRGAN's body) or a JSON file. Errors name the
    file."""
    return load_genotype(spec, BUILTIN_DISCRIMINATORS, DiscriminatorGenotype.from_dict)


def random_discriminator_genotypes(
    count: int,
    seed: int = 0,
    blocks: int = 8,
    ops: Sequence[str] = D_SEARCH_SPACE,
    base_widths: Sequence[int] = D_SEARCH_WIDTHS,
    norms: Sequence[str] = NORMS,
    heads: Sequence[str] = HEADS,
) -> list[DiscriminatorGenotype]:
    """``count`` distinct genotypes drawn uniformly from the space (an op per block, a width, a norm, a head).

    Every genotype of the space is equally likely and none repeats (sampling without replacement); the same seed
    gives the same list. Raises ValueError for an empty or repeating candidate list, an unknown candidate, or a
    count the space cannot hold.
    """
    choices = {"ops": ops, "base_widths": base_widths, "norms": norms, "heads": heads}
    known = {"ops": tuple(D_OPS), "norms": NORMS, "heads": HEADS}
    for name, options in choices.items():
        if isinstance(options, str) or not options or len(set(options)) != len(options):
            raise ValueError(f"{name} must list distinct candidates, got {options!r}")
        # Checked up front, so that a bad candidate fails every call, not only the draws that happen to pick it.
        unknown = [o for o in options if o not in known[name]] if name in known else []
        if name == "base_widths":
            unknown = [w for w in options if not isinstance(w, int) or isinstance(w, bool) or w < 1]
        if unknown:
            raise ValueError(f"{name}: unknown or invalid candidate(s) {unknown}")
    if blocks < 1:
        raise ValueError(f"a discriminator needs at least one block, got blocks={blocks}")
    ops, base_widths, norms, heads = (tuple(v) for v in choices.values())
    size = len(ops) ** blocks * len(base_widths) * len(norms) * len(heads)
    if not 0 <= count <= size:
        raise ValueError(f"cannot draw {count} distinct genotypes from a space of {size}")
    rng = random.Random(seed)

    def make(block_ops: Sequence[str], width: int, norm: str, head: str) -> DiscriminatorGenotype:
        return DiscriminatorGenotype(tuple(block_ops), base_width=width, norm=norm, head=head)

    if 2 * count > size:
        # Most of the space is wanted: rejection would spin on repeats; sample the enumerated space instead.
        space = list(itertools.product(itertools.product(ops, repeat=blocks), base_widths, norms, heads))
        return [make(*entry) for entry in rng.sample(space, count)]
    drawn: dict[DiscriminatorGenotype, None] = {}
    while len(drawn) < count:
        genotype = make(
            [rng.choice(ops) for _ in range(blocks)], rng.choice(base_widths), rng.choice(norms), rng.choice(heads)
        )
        drawn.setdefault(genotype, None)
    return list(drawn)
