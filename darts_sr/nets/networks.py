"""Discrete networks built from genotypes, and import of published TPSR weights.

``Generator`` takes and returns images in [0, 1]; inside, it works on 0-255 values around
TPSR's mean, so published TPSR weights load unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from darts_sr.errors import UserError
from darts_sr.io import load_checkpoint
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, GenotypeError, load_generator_genotype
from operations import OPS, build_op, conv_macs

# DIV2K RGB mean, as in EDSR/TPSR's MeanShift (std 1).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
PIXEL_RANGE = 255.0

# Our checkpoints hold the generator's state dict and genotype under these keys.
CHECKPOINT_GENERATOR_KEY = "generator"
CHECKPOINT_GENOTYPE_KEY = "generator_genotype"

# 720p output: the reference size at which MACs are reported, per scale (LR height, width).
REFERENCE_LR_SIZE = {2: (360, 640), 3: (240, 427), 4: (180, 320)}


class UpsampleStage(nn.Module):
    """3x3 conv to ``3 * factor**2`` channels, then PixelShuffle(factor)."""

    def __init__(self, in_channels: int, factor: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3 * factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


def upsample_factors(scale: int) -> tuple[int, ...]:
    """x4 is two x2 stages as in TPSR; x2 and x3 one stage."""
    return (2, 2) if scale == 4 else (scale,)


class Upsampler(nn.ModuleList):
    """TPSR's upsampler: the first stage reads the body's channels, later ones the 3 channels before them."""

    def __init__(self, channels: int, scale: int):
        factors = upsample_factors(scale)
        super().__init__(UpsampleStage(channels if i == 0 else 3, f) for i, f in enumerate(factors))

    def forward(self, x: Tensor) -> Tensor:
        for stage in self:
            x = stage(x)
        return x


class MeanShift(nn.Module):
    """[0, 1] RGB <-> 0-255 values centred on ``RGB_MEAN``; a fixed buffer, not a trained layer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1) * PIXEL_RANGE, persistent=False)

    def to_model(self, x: Tensor) -> Tensor:
        return x * PIXEL_RANGE - self.mean

    def from_model(self, x: Tensor) -> Tensor:
        return (x + self.mean) / PIXEL_RANGE


class Generator(nn.Module):
    """A tiny SR generator from a genotype: (B, 3, H, W) in [0, 1] -> (B, 3, sH, sW), about [0, 1] (not clamped)."""

    def __init__(self, genotype: GeneratorGenotype):
        super().__init__()
        self.genotype = genotype
        c = genotype.channels
        self.mean_shift = MeanShift()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.nodes = nn.ModuleList(build_op(node.op, c) for node in genotype.nodes)
        self.output_act = nn.PReLU(1)
        self.upsampler = Upsampler(c, genotype.scale)

    def forward(self, x: Tensor) -> Tensor:
        states = [self.stem(self.mean_shift.to_model(x))]  # (B, C, H, W) each
        for node, op in zip(self.genotype.nodes, self.nodes):
            states.append(op(states[node.input]))
        body = self.output_act(sum(states[k] for k in self.genotype.outputs))
        return self.mean_shift.from_model(self.upsampler(body))


def upsampler_params(channels: int, scale: int) -> int:
    total, c_in = 0, channels
    for f in upsample_factors(scale):
        total += c_in * 3 * f * f * 9 + 3 * f * f
        c_in = 3
    return total


def upsampler_macs(channels: int, scale: int, height: int, width: int) -> int:
    total, c_in = 0, channels
    for f in upsample_factors(scale):
        total += conv_macs(c_in, 3 * f * f, 3, height, width)
        c_in, height, width = 3, height * f, width * f
    return total


def stem_params(channels: int) -> int:
    return 3 * channels * 9 + channels


def generator_params(genotype: GeneratorGenotype) -> int:
    """Trainable parameters of ``Generator(genotype)``, by formula."""
    c = genotype.channels
    nodes = sum(OPS[n.op].params(c) for n in genotype.nodes)
    return stem_params(c) + nodes + 1 + upsampler_params(c, genotype.scale)


def generator_macs(genotype: GeneratorGenotype, lr_height: int | None = None, lr_width: int | None = None) -> int:
    """MACs of ``Generator(genotype)`` for one LR input, by formula; default size gives a 720p output."""
    default_h, default_w = REFERENCE_LR_SIZE[genotype.scale]
    h, w = lr_height or default_h, lr_width or default_w
    c = genotype.channels
    nodes = sum(OPS[n.op].macs(c, h, w) for n in genotype.nodes)
    output_act = c * h * w
    return conv_macs(3, c, 3, h, w) + nodes + output_act + upsampler_macs(c, genotype.scale, h, w)


# --- TPSR checkpoint import -------------------------------------------------------------------

_TPSR_NODE_KEY = re.compile(
    r"^(early_layers|middle_main_layers|middle_side_layers|skip_layer)\."
    r"Node_(\d+)_Operation_0_type_(Conv2d|Sep2d)_(\d)x\d\.model\.(\d)\.(weight|bias)$"
)
_TPSR_FIXED_KEYS = {
    "first_layer.weight": "stem.weight",
    "first_layer.bias": "stem.bias",
    "merge_op_act.weight": "output_act.weight",
}
_TPSR_UP_KEY = re.compile(r"^up_mod\.(\d+)\.extend\.(weight|bias)$")


class WeightsMismatch(UserError, ValueError):
    """Weights that do not fit a genotype; the message says which key and why."""


def is_tpsr_state_dict(state: Mapping[str, Tensor]) -> bool:
    return "first_layer.weight" in state and "merge_op_act.weight" in state


def import_tpsr_state_dict(state: Mapping[str, Tensor], genotype: GeneratorGenotype) -> dict[str, Tensor]:
    """Maps a TPSR-format state dict onto ``Generator(genotype)``'s keys, every key accounted for.

    TPSR names node k-1 where we name node k and spells the op in the key; both are checked
    against the genotype. The fixed mean-shift convs must hold the standard mean, which our
    ``MeanShift`` builds in.
    """
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(("sub_mean.", "add_mean.")):
            _check_mean_shift(key, value)
            continue
        if key in _TPSR_FIXED_KEYS:
            mapped[_TPSR_FIXED_KEYS[key]] = value
            continue
        if m := _TPSR_UP_KEY.match(key):
            mapped[f"upsampler.{m[1]}.conv.{m[2]}"] = value
            continue
        m = _TPSR_NODE_KEY.match(key)
        if not m:
            raise WeightsMismatch(f"TPSR key {key!r} has no counterpart in our Generator")
        node = int(m[2]) + 1
        if node > len(genotype.nodes):
            raise WeightsMismatch(f"TPSR key {key!r} is for node {node}, but the genotype has {len(genotype.nodes)}")
        op = ("conv_" if m[3] == "Conv2d" else "sep_") + f"{m[4]}x{m[4]}"
        if genotype.nodes[node - 1].op != op:
            raise WeightsMismatch(
                f"TPSR key {key!r} is a {op}, but genotype node {node} is {genotype.nodes[node - 1].op}"
            )
        mapped[f"nodes.{node - 1}.{m[5]}.{m[6]}"] = value
    for prefix in ("sub_mean", "add_mean"):
        if f"{prefix}.weight" not in state or f"{prefix}.bias" not in state:
            raise WeightsMismatch(f"TPSR state dict lacks {prefix}.weight/bias")
    return mapped


def _check_mean_shift(key: str, value: Tensor) -> None:
    sign = -1.0 if key.startswith("sub_mean") else 1.0
    expected = torch.eye(3).view(3, 3, 1, 1) if key.endswith("weight") else sign * PIXEL_RANGE * torch.tensor(RGB_MEAN)
    if value.shape != expected.shape or not torch.allclose(value.float(), expected, atol=1e-3):
        raise WeightsMismatch(f"TPSR key {key!r} is not the standard mean shift {RGB_MEAN}; cannot import")


def load_generator_weights(model: Generator, state: Mapping[str, Tensor]) -> None:
    """Loads our own or a TPSR-format state dict, strictly; mismatches raise WeightsMismatch naming the key."""
    if is_tpsr_state_dict(state):
        state = import_tpsr_state_dict(state, model.genotype)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' …' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' …' if len(unexpected) > 3 else ''}")
        raise WeightsMismatch("weights do not fit the genotype: " + "; ".join(parts))
    for key, value in state.items():
        if own[key].shape != value.shape:
            shapes = f"{tuple(value.shape)}, expected {tuple(own[key].shape)}"
            raise WeightsMismatch(f"weights do not fit the genotype: {key} has shape {shapes}")
    model.load_state_dict(state, strict=True)


def load_generator(
    weights: str | os.PathLike, genotype: GeneratorGenotype | str | os.PathLike | None = None
) -> Generator:
    """A Generator (on the CPU, in training mode) from our checkpoint, which carries its genotype, or from a
    TPSR-format state dict.

    ``genotype`` is a ``GeneratorGenotype``, a built-in name (``"tpsr"``) or a genotype JSON file. It is required for
    a bare state dict and, when given with our checkpoint, must match the checkpoint's.
    """
    if genotype is not None and not isinstance(genotype, GeneratorGenotype):
        genotype = load_generator_genotype(genotype)
    state = load_checkpoint(weights)
    if not isinstance(state, dict):
        raise WeightsMismatch(f"{weights}: not a state dict or checkpoint")
    if CHECKPOINT_GENERATOR_KEY in state:
        try:
            stored = GeneratorGenotype.from_dict(state.get(CHECKPOINT_GENOTYPE_KEY))
        except GenotypeError as e:
            raise GenotypeError(f"{weights}: stored genotype: {e}") from None
        if genotype is not None and genotype != stored:
            raise WeightsMismatch(f"{weights}: the checkpoint's genotype differs from the one given")
        genotype, state = stored, state[CHECKPOINT_GENERATOR_KEY]
    elif genotype is None:
        raise WeightsMismatch(f"{weights}: a bare state dict carries no genotype; give its genotype too (tpsr or JSON)")
    model = Generator(genotype)
    try:
        load_generator_weights(model, state)
    except WeightsMismatch as e:
        raise WeightsMismatch(f"{weights}: {e}") from None
    return model


# --- the MACs target -----------------------------------------------------------------------------------------------


def default_target_macs(scale: int) -> float:
    """TPSR's MACs@720p for TPSR's wiring at ``scale``: the target when none is given (search, compare, rank_check)."""
    return float(generator_macs(replace(TPSR, scale=scale)))


class _Band:
    """``target`` ± ``tolerance`` (a fraction): what every cost window shares."""

    target: float
    tolerance: float

    @property
    def low(self) -> float:
        return self.target * (1 - self.tolerance)

    @property
    def high(self) -> float:
        return self.target * (1 + self.tolerance)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class MacsWindow(_Band):
    """The cost a genotype must land at: ``target_macs`` (MACs@720p) ± ``tolerance`` (a fraction). The search's
    derivation, the random genotypes of compare and rank_check and the calibration ladders all use this one type."""

    target_macs: float
    tolerance: float = 0.03

    @classmethod
    def around(cls, target_macs: float | None, scale: int, tolerance: float = 0.03) -> MacsWindow:
        """``target_macs``, or TPSR's at ``scale`` when None."""
        return cls(default_target_macs(scale) if target_macs is None else float(target_macs), tolerance)

    @property
    def target(self) -> float:
        return self.target_macs

    def record(self) -> dict:
        """As records and summaries write it."""
        return {"target_macs_720p": self.target_macs, "tolerance": self.tolerance}

    def __str__(self) -> str:
        return f"{self.target_macs / 1e9:.3f} GMACs ± {self.tolerance:.0%}"


@dataclass(frozen=True)
class LatencyWindow(_Band):
    """The latency a genotype must land at: ``target_ms`` (milliseconds, as a latency table predicts or a timing
    measures them) ± ``tolerance`` (a fraction); ``MacsWindow``'s interface. compare's random genotypes of matched
    latency use it (``compare --target-ms``)."""

    target_ms: float
    tolerance: float = 0.05

    @property
    def target(self) -> float:
        return self.target_ms

    def record(self) -> dict:
        """As records and summaries write it."""
        return {"target_ms": self.target_ms, "tolerance": self.tolerance}

    def __str__(self) -> str:
        return f"{self.target_ms:.3f} ms ± {self.tolerance:.0%}"
