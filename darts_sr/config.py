"""Typed configuration: dataclasses, YAML presets, ``--set key=value`` overrides.

A config file or override naming a key that does not exist, or giving a value of the wrong
type, is an error that names the key (a typo must never silently fall back to a default).
YAML is parsed with ``yaml.safe_load``: plain data only, no object tags.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from darts_sr.errors import UserError
from darts_sr.losses import LOSSES, LossTerm
from operations import GENERATOR_SEARCH_SPACE
from operations.discriminator import D_SEARCH_SPACE, D_SEARCH_WIDTHS, HEADS, NORMS

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A bad config file, key or value; the message names it."""


def from_dict(cls: type[T], data: Any, where: str = "config", base: T | None = None) -> T:
    """Builds dataclass ``cls`` from nested plain data, checking keys and types.

    Keys not given keep the values of ``base`` (default: ``cls()``), section by section, so a
    nested section's own defaults survive a partial override.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    base = cls() if base is None else base
    values = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            values[name] = from_dict(hints[name], value, f"{where}.{name}", getattr(base, name))
        else:
            values[name] = _convert(hints[name], value, f"{where}.{name}")
    return dataclasses.replace(base, **values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "2e9" as a string; a number is what anyone writing it means.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint}")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested data (tuples as lists), ready for YAML or a checkpoint."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    return data or {}


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """``section.key=value`` into nested ``data``; the value is parsed as YAML (``3``, ``1e-3``, ``[a, b]``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: list[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML file, then ``key=value`` overrides; validated."""
    data = read_yaml(path) if path else {}
    for assignment in overrides:
        apply_override(data, assignment)
    where = str(path) if path else "config"
    return from_dict(cls, data, where)


# --- the configuration of a search -----------------------------------------------------------
# Defaults are the full GPU recipe's; configs/*.yaml override them per preset.


@dataclasses.dataclass
class DataConfig:
    train: tuple[str, ...] = ("builtin",)  # folders (HR images or benchmark layout) or builtin; split in halves
    val: str = "builtin"  # images for validation PSNR (builtin: its val split)
    scale: int = 4
    patch_size: int = 32  # LR patch side
    batch_size: int = 16
    val_crop: int = 0  # LR centre crop side for validation images; 0 = whole images
    skip_small: bool = False  # leave out training images smaller than the patch (else they are an error)


@dataclasses.dataclass
class SupernetConfig:
    nodes: int = 10
    channels: int = 16
    ops: tuple[str, ...] = GENERATOR_SEARCH_SPACE
    input_window: int | None = None  # a node reads the stem or one of the last k nodes; None = any earlier node
    max_skip_nodes: int | None = 2  # collapse guard at derivation (P-DARTS); None = no cap
    # NHWC tensors for the supernet and the discriminator during the search: the same arithmetic, and on CPU the
    # sep ops' depthwise convolutions run about twice as fast; a search step 12% faster (bench/search_step.py)
    channels_last: bool = True
    # How architecture parameters become the computation (search/relaxation.py): mixed = DARTS's softmax mixture of
    # every op; sampled = hard Gumbel paths with straight-through gradients, one op per node per step. Why mixed is
    # the default: README, "The search ablation".
    strategy: typing.Literal["mixed", "sampled"] = "mixed"
    # Affine-free search BN on the stem and every op, output = gate-weighted mean x a learnable gain, so that the
    # input and output weights cannot act as amplitude knobs (darts_sr.search.supernet).
    normalize: bool = True
    tau_start: float = 2.0  # sampled: Gumbel temperature when the architecture starts to move...
    tau_end: float = 0.2  # ...annealed exponentially to this at the last step


@dataclasses.dataclass
class DeriveConfig:
    # argmax: each node takes its most probable op and input (within the MACs window, darts_sr.search.supernet);
    # perturbation: DARTS-PT's selection by measurement, each node takes the op and the input whose removal raises
    # the supernet's validation loss most (on fixed batches of the architecture half), within the same window.
    method: typing.Literal["argmax", "perturbation"] = "argmax"
    batches: int = 4  # perturbation: fixed validation batches (of data.batch_size patches) the loss is measured on


@dataclasses.dataclass
class CostConfig:
    target_macs: float | None = None  # MACs at 720p output; None = TPSR's at this scale
    # log_ratio: weight * loss * max(0, |log(MACs / target)| - log(1 + dead_zone)), two-sided and scaled by the
    # loss so its gradient stays commensurate with the loss's; hinge/abs/square: weight * f(MACs / target - 1).
    penalty: typing.Literal["none", "hinge", "abs", "square", "log_ratio"] = "log_ratio"
    weight: float = 1.0
    # derived: the argmax network's exact MACs (straight-through gradient), i.e. what derivation will cost;
    # expected: E[MACs] with soft liveness, which sits far below the derived cost while the search is undecided.
    measure: typing.Literal["derived", "expected"] = "derived"
    dead_zone: float = 0.01  # log_ratio: no penalty within +-1% of the target
    tolerance: float = 0.03  # derivation must land within target * (1 +- tolerance); above it the repair fires
    # What the cost counts (darts_sr.search.cost): macs = MACs at 720p toward target_macs; latency = milliseconds of
    # a latency lookup table (darts-sr latency-table) at supernet.channels and the scale's 720p LR size, toward
    # target_ms, its correction applied when the table marks it used. Same penalty, measure and window rule.
    unit: typing.Literal["macs", "latency"] = "macs"
    target_ms: float | None = None  # latency: required, in the table's (corrected) milliseconds
    latency_table: str | None = None  # latency: required; with macs it only reports the derived network's ms
    # penalty: the `penalty` term above; dual: weight * loss * lambda * log(cost / target) with a signed Lagrange
    # multiplier (two-sided: the equality constraint's), lambda <- lambda + dual_lr * log(cost / target) after each
    # architecture step, clamped to +-dual_max (no wind-up); `penalty` must not be none, its form is not used.
    # dual_lr 10: Adam normalises the architecture gradient, so lambda sets mostly the sign and its lag. On a toy
    # (bench/cost_control.py: cost alone or against a pull toward big/small ops) the argmax landed with median
    # |error| 3-8% at 10, 20-28% at 0.5; the penalty 1-11%, it has the offset under a pull that dual removes.
    control: typing.Literal["penalty", "dual"] = "penalty"
    dual_lr: float = 10.0
    dual_max: float = 10.0

    def __post_init__(self):
        if self.unit == "latency":
            for key in ("target_ms", "latency_table"):
                if getattr(self, key) is None:
                    raise ConfigError(f"cost.{key}: required with cost.unit: latency")
            if self.target_macs is not None:
                raise ConfigError("cost.target_macs: not used with cost.unit: latency (the target is cost.target_ms)")
        elif self.target_ms is not None:
            raise ConfigError("cost.target_ms: only used with cost.unit: latency (the MACs target is cost.target_macs)")
        for key in ("target_ms", "target_macs"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"cost.{key}: expected a positive number, got {value}")
        if self.control == "dual":
            if self.penalty == "none":
                raise ConfigError("cost.control: dual steers the cost; it contradicts cost.penalty: none")
            for key in ("dual_lr", "dual_max"):
                if not getattr(self, key) > 0:
                    raise ConfigError(f"cost.{key}: expected a positive number, got {getattr(self, key)}")


def make_loss_config(table: dict[str, LossTerm]) -> type:
    """The loss section of a config: one weight per term of ``table`` (default: its ESRGAN weight), then the
    perceptual term's settings. Built from the table, so a new loss is a config key without touching this file."""
    weights = [(name, float, dataclasses.field(default=term.default_weight)) for name, term in table.items()]
    settings = [
        ("perceptual_layer", str, dataclasses.field(default="conv5_4")),
        # only for runs without ImageNet VGG19; logged loudly
        ("allow_random_backbone", bool, dataclasses.field(default=False)),
        # where the VGG19 weights lie; None = torch hub cache
        ("pretrained_dir", str | None, dataclasses.field(default=None)),
    ]
    config_class = dataclasses.make_dataclass("LossConfig", weights + settings)
    config_class.__module__ = __name__
    return config_class


LossConfig = make_loss_config(LOSSES)


@dataclasses.dataclass
class DiscriminatorConfig:
    genotype: str = "reference"  # built-in name or JSON file
    base_width: int | None = None  # overrides the genotype's width
    lr: float = 1e-4


@dataclasses.dataclass
class OptimConfig:
    epochs: int = 50
    steps_per_epoch: int = 500
    warmup_epochs: int = 5  # architecture frozen while the weights warm up
    weight_lr: float = 1e-3
    weight_lr_min: float = 1e-5  # cosine schedule floor
    arch_lr: float = 3e-3
    arch_lr_min: float | None = 3e-4  # cosine decay of the architecture learning rate after the warm-up; None = flat
    arch_weight_decay: float = 1e-3
    # adamw: decoupled decay (the default); adam: L2 added to the gradient, which against the tiny L1 gradients of
    # SR holds |alpha| near 0 so the op probabilities never leave uniform (kept for ablation)
    arch_optimizer: typing.Literal["adam", "adamw"] = "adamw"
    # second: DARTS's unrolled step, its virtual weight step preconditioned like the weight optimizer's Adam step
    order: typing.Literal["first", "second"] = "first"
    grad_clip: float | None = 5.0


@dataclasses.dataclass
class RunConfig:
    seed: int = 0
    device: str = "cpu"
    samples: int = 2  # SR samples shown in TensorBoard per epoch
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    log_every: int = 10


def _search_objective() -> LossConfig:
    # ESRGAN's balance of L1 and VGG19 features, no adversarial term; a random-feature VGG19 offline (labelled).
    return LossConfig(pixel=1e-2, perceptual=1.0, adversarial=0.0, allow_random_backbone=True)


@dataclasses.dataclass
class DiscriminatorSearchConfig:
    """Stage 2: a discriminator supernet searched against a fixed tiny generator (``data``, ``loss`` and ``run``
    are shared with stage 1; ``loss`` is the generator's training loss, with ``adversarial`` below as its
    adversarial weight during this stage)."""

    generator: str | None = None  # generator genotype (JSON or built-in); None = this run's genotype_generator.json
    generator_weights: str | None = None  # generator checkpoint to start from; None = pixel pretraining
    pretrain_steps: int = 2000  # L1 pretraining of the generator before the search (skipped with weights)
    pretrain_lr: float = 2e-4
    blocks: int = 8  # SRGAN layout: stride 2 on every second block, widths x2 per pair
    # The candidates; one value: configured, several: searched (search/discriminator_supernet.py: widths by channel
    # masking, norms sharing each op's convolutions).
    ops: tuple[str, ...] = D_SEARCH_SPACE
    base_widths: tuple[int, ...] = D_SEARCH_WIDTHS
    norms: tuple[str, ...] = NORMS  # of none/batch/spectral
    heads: tuple[str, ...] = HEADS  # pool: GAP + MLP, one logit per image; patch: 1x1 conv, one logit per patch
    # The generator's adversarial weight during stage 2 (the GAN step and the unrolled steps); None = loss.
    # adversarial. The retraining's ESRGAN 0.005 against pixel 1 barely moves the generator in a step, so the
    # discriminator would hardly change what it trains.
    adversarial: float | None = 0.05
    # generator: alpha_D follows `objective` (the generator's val loss) after `unroll_steps` virtual generator
    # steps under the adversarial loss; adversarial: alpha_D follows D's own val loss.
    d_objective: typing.Literal["generator", "adversarial"] = "generator"
    # The generator's validation objective that steers alpha_D: pixel and perceptual weights, adversarial must be 0.
    # The perceptual term is VGG19 features (ImageNet weights when they can be found or fetched; with
    # allow_random_backbone and no weights, a randomly initialised VGG19, logged and summarised as RANDOM VGG19).
    # Its pretrained_dir: null = loss.pretrained_dir.
    objective: LossConfig = dataclasses.field(default_factory=_search_objective)
    arch_batches: int = 4  # hypergradients (each on its own train and val batches) averaged per architecture step
    unroll_steps: int = 1  # virtual generator steps, each on its own train batch, before the objective
    # Virtual steps: sgd = w - xi * g (DARTS); adam = w - xi * g / (sqrt(v_hat) + eps) with the generator optimizer's
    # second moments, the size of the real Adam step. sgd by measurement: at demo sizes its hypergradient had twice
    # the per-batch signal-to-noise ratio of adam's, and a second unrolled step did not raise it (twice the cost).
    unroll_optimizer: typing.Literal["sgd", "adam"] = "sgd"
    xi: float | None = None  # unrolled step size; None = the generator's current learning rate
    epochs: int = 20
    steps_per_epoch: int = 500
    warmup_epochs: int = 2  # architecture frozen while the discriminator's weights warm up
    generator_lr: float = 1e-4
    generator_lr_min: float = 1e-6  # cosine schedule floor
    d_lr: float = 1e-4
    arch_lr: float = 1e-3
    arch_weight_decay: float = 1e-3  # decoupled (AdamW), so it does not swamp the tiny hypergradient
    # Adam's eps for alpha_D. The hypergradient scales with xi * adversarial (~1e-9 with plain SGD steps at demo
    # sizes) and Adam is otherwise invariant to the gradient's scale; the usual 1e-8 would swamp it.
    arch_eps: float = 1e-16
    grad_clip: float | None = 5.0  # generator gradient norm clip
    penalty: typing.Literal["none", "hinge", "abs", "square"] = "none"  # MACs penalty on the discriminator
    penalty_weight: float = 0.0
    budget_macs: float | None = None  # D MACs at macs_size; None = all-conv_3x3 SRGAN layout at the widest width
    macs_size: int = 128  # HR patch side at which discriminator MACs are counted (ESRGAN's crop)
    # How stage 2 answers: search = the supernet above; race = successive halving over discrete discriminators, each
    # a short GAN fine-tune of the pixel-pretrained generator scored on data.val (darts_sr.search.race).
    method: typing.Literal["search", "race"] = "search"
    race_candidates: tuple[str, ...] = ("reference",)  # built-in names or genotype JSON files (e.g. a search's pick)
    race_random: int = 5  # more candidates drawn uniformly from this section's blocks, ops, base_widths and norms
    race_eta: int = 2  # rung r fine-tunes for race_min_steps * race_eta ** r steps; the best 1/race_eta go on
    race_min_steps: int = 1000
    # Fine-tunes per candidate per rung (seeds run.seed, run.seed + 1, ...), ranked by their mean scores: on one
    # seed, 100-200 GAN steps of the CPU recipe rank differences smaller than a fine-tune's seed-to-seed spread.
    race_seeds: int = 1
    # What a rung adds: steps (rung r fine-tunes for race_min_steps * race_eta ** r), or seeds (every rung is a full
    # race_min_steps fine-tune with race_seeds new seeds, ranked by the mean over all of a candidate's seeds so far):
    # with seeds, the race judges the fine-tune it chooses for, and survivors' means get tighter as the field narrows.
    race_grow: typing.Literal["steps", "seeds"] = "steps"
    race_psnr_margin: float = 1.0  # dB under the pixel model's val Y-PSNR at which a candidate is dropped
    # The fine-tune the race chooses for, as a retraining recipe (a preset such as gan_finetune_cpu, or a YAML file)
    # with race_recipe_set's key=value overrides: every fine-tune is that recipe's GAN phase (its data, loss, learning
    # rates, EMA, discriminator section, val_every and keep rule, so a candidate is scored by the model the rule
    # keeps), only the steps are the rung's; the run section's seed and device are this config's. Then the race's
    # pick is judged by compare-discriminators on the same recipe. None = the recipe built from this section.
    race_recipe: str | None = None
    race_recipe_set: tuple[str, ...] = ()
    # auto: LPIPS where its AlexNet weights exist, else NIQE; ties go to the other one, then to higher Y-PSNR
    race_metric: typing.Literal["auto", "niqe", "lpips"] = "auto"


@dataclasses.dataclass
class SearchConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    supernet: SupernetConfig = dataclasses.field(default_factory=SupernetConfig)
    cost: CostConfig = dataclasses.field(default_factory=CostConfig)
    derive: DeriveConfig = dataclasses.field(default_factory=DeriveConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    stage2: DiscriminatorSearchConfig = dataclasses.field(default_factory=DiscriminatorSearchConfig)


# --- the configuration of a retraining (train.py) ---------------------------------------------


def _pixel_loss() -> LossConfig:
    return LossConfig(**{name: 0.0 for name in LOSSES} | {"pixel": 1.0})


@dataclasses.dataclass
class PhaseConfig:
    """One training phase: steps, a cosine learning-rate schedule and its loss weights."""

    steps: int = 0
    lr: float = 2e-4
    lr_min: float = 1e-6
    loss: LossConfig = dataclasses.field(default_factory=_pixel_loss)
    warmup_steps: int = 0  # linear warm-up of the learning rate from 0, then the cosine over the remaining steps
    ema: float | None = None  # decay of an exponential moving average of the weights, validated and kept; None = off
    # Which validated model the phase keeps (fixed before training, judged on data.val only): default = the pixel
    # phase's best Y-PSNR and the GAN phase's last; lowest_niqe = the lowest NIQE among validations with Y-PSNR >=
    # psnr_floor (dB), none if no validation reaches the floor.
    keep: typing.Literal["default", "best_psnr", "last", "lowest_niqe"] = "default"
    psnr_floor: float | None = None

    def __post_init__(self):
        if self.keep == "lowest_niqe" and self.psnr_floor is None:
            raise ConfigError("psnr_floor: required with keep: lowest_niqe (the Y-PSNR a kept model must reach)")


def _gan_phase() -> PhaseConfig:
    return PhaseConfig(steps=0, lr=1e-4, lr_min=1e-6, loss=LossConfig())


@dataclasses.dataclass
class TrainConfig:
    """Retraining from scratch: phase A (pixel) then phase B (perceptual-adversarial fine-tuning)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    pixel_phase: PhaseConfig = dataclasses.field(default_factory=lambda: PhaseConfig(steps=100_000, lr=2e-4))
    gan_phase: PhaseConfig = dataclasses.field(default_factory=_gan_phase)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
    val_every: int = 1000  # steps between validations (Y-PSNR, LPIPS where available) and checkpoints
    grad_clip: float | None = None
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
