"""Objectives of the generator and discriminator: pixel, perceptual (VGG19) and relativistic adversarial.

Images are float tensors in [0, 1], (B, 3, H, W) RGB. Discriminator outputs are raw logits, (B, 1).

The generator's loss terms are declared once, in ``LOSSES`` (as ``operations.OPS`` declares ops): config name ->
BasicSR log name (``l_g_pix``, ``l_g_percep``, ``l_g_gan``), default weight (ESRGAN's fine-tuning recipe), the
function, and a builder for a term that needs a network (VGG19). ``LossConfig`` gets one weight per entry, and
``GeneratorLoss`` sums the weighted terms in table order: adding a loss is one entry plus its function. The
discriminator's terms are ``l_d_real`` and ``l_d_fake``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darts_sr.pretrained import load_backbone

logger = logging.getLogger(__name__)


def _vgg19_conv_indices() -> dict[str, int]:
    """``conv<stage>_<i>`` -> index of that Conv2d in torchvision's ``vgg19().features``.

    Each conv is followed by a ReLU (2 modules), each of the 5 stages by a max pool (1 module).
    """
    indices, index = {}, 0
    for stage, convs in enumerate((2, 2, 4, 4, 4), start=1):
        for i in range(1, convs + 1):
            indices[f"conv{stage}_{i}"] = index
            index += 2
        index += 1
    return indices


VGG19_CONV_INDEX: dict[str, int] = _vgg19_conv_indices()

# ImageNet statistics torchvision's VGG19 was trained with, for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """L1 distance between VGG19 features of SR and HR, taken before the ReLU of ``layer`` (ESRGAN's choice).

    The backbone is frozen and stays in eval mode whatever the parent does. Without cached ImageNet weights this
    raises ``darts_sr.pretrained.PretrainedWeightsMissing`` unless ``allow_random`` is true; ``pretrained`` says
    which it got, and a loss from a random backbone is not the perceptual loss ESRGAN means.
    """

    def __init__(
        self, layer: str = "conv5_4", pretrained_dir: str | os.PathLike | None = None, allow_random: bool = False
    ):
        super().__init__()
        if layer not in VGG19_CONV_INDEX:
            raise ValueError(f"unknown VGG19 layer {layer!r}; known: {', '.join(VGG19_CONV_INDEX)}")
        vgg, self.pretrained = load_backbone("vgg19", pretrained_dir, allow_random)
        self.layer = layer
        # Up to and including the conv, not its ReLU: pre-activation features are denser and keep brightness
        # information the ReLU would clip (ESRGAN, Sec. 3.3). The classifier is dropped (most of VGG19's weights).
        self.features = vgg.features[: VGG19_CONV_INDEX[layer] + 1]
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.train(False)
        logger.info(
            "perceptual loss: VGG19 %s (pre-ReLU), %s backbone", layer, "ImageNet" if self.pretrained else "RANDOM"
        )

    def train(self, mode: bool = True) -> PerceptualLoss:
        # A frozen feature extractor: always eval, so a parent's .train() never changes it.
        return super().train(False)

    def _features(self, x: Tensor) -> Tensor:
        return self.features((x - self.mean) / self.std)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        """sr, hr: (B, 3, H, W) in [0, 1], H and W >= 16 for conv5_*; returns a scalar. Gradients reach sr only."""
        with torch.no_grad():
            target = self._features(hr)
        return F.l1_loss(self._features(sr), target)


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def relativistic_discriminator_terms(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """RaGAN discriminator terms (ESRGAN), named as in BasicSR; the loss is their mean.

    ``l_d_real`` = BCE(real - mean(fake), 1): real looks more real than the average fake;
    ``l_d_fake`` = BCE(fake - mean(real), 0). Logits (B, 1). Both terms keep the gradient through the mean of the
    other side, as ESRGAN's own code does (BasicSR detaches it to run two backward passes). For the D step pass
    logits of ``sr.detach()``. Unlike BasicSR's, these terms are not pre-halved.
    """
    return {
        "l_d_real": _bce(real_logits - fake_logits.mean(), 1.0),
        "l_d_fake": _bce(fake_logits - real_logits.mean(), 0.0),
    }


def relativistic_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The discriminator's loss (the mean of the two RaGAN terms) and the terms by name; logits (B, 1)."""
    terms = relativistic_discriminator_terms(real_logits, fake_logits)
    return (terms["l_d_real"] + terms["l_d_fake"]) / 2, terms


def relativistic_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """(BCE(real - mean(fake), 0) + BCE(fake - mean(real), 1)) / 2; logits (B, 1) -> scalar.

    The generator gets gradient from both terms through ``fake_logits``; pass ``real_logits`` detached (or with
    the discriminator frozen) so the G step does not build a graph into D for the HR batch.
    """
    return (_bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0)) / 2


# --- the generator's loss terms, declared once ---------------------------------------------------------------------


class LossInputs(NamedTuple):
    """What a loss term may look at: SR and ground truth (B, 3, H, W) in [0, 1], D's logits (B, 1) of both, and D's
    block outputs of both (for feature matching; the real ones carry no gradient)."""

    sr: Tensor
    gt: Tensor
    real_logits: Tensor | None
    fake_logits: Tensor | None
    real_features: list[Tensor] | None = None
    fake_features: list[Tensor] | None = None


@dataclass(frozen=True)
class LossTerm:
    """One generator loss term. ``fn(inputs, module)`` returns the unweighted scalar; ``module`` is what ``build``
    made from the loss settings (a ``LossConfig``), or None for a term without one."""

    log_name: str
    default_weight: float
    fn: Callable[[LossInputs, nn.Module | None], Tensor]
    build: Callable[[Any], nn.Module] | None = None
    needs_discriminator: bool = False
    needs_features: bool = False  # the discriminator's block outputs of SR and HR (LossInputs.*_features)


def _pixel(x: LossInputs, _: None) -> Tensor:
    return F.l1_loss(x.sr, x.gt)


def _perceptual(x: LossInputs, vgg: PerceptualLoss) -> Tensor:
    return vgg(x.sr, x.gt)


def _adversarial(x: LossInputs, _: None) -> Tensor:
    return relativistic_generator_loss(x.real_logits, x.fake_logits)


def _feature_matching(x: LossInputs, _: None) -> Tensor:
    """pix2pixHD's feature matching: the mean over the discriminator's blocks of the L1 distance between its features
    of SR and of HR. It needs no ImageNet weights, so it stands in for the VGG term offline; the discriminator's
    features move as it trains, which VGG's do not."""
    pairs = list(zip(x.fake_features, x.real_features))
    return sum(F.l1_loss(fake, real.detach()) for fake, real in pairs) / len(pairs)


def _build_perceptual(settings: Any) -> PerceptualLoss:
    loss = PerceptualLoss(settings.perceptual_layer, settings.pretrained_dir, settings.allow_random_backbone)
    if not loss.pretrained:
        logger.warning("the perceptual loss uses a RANDOMLY INITIALISED VGG19 (loss.allow_random_backbone=true)")
    return loss


# Default weights: ESRGAN's perceptual-adversarial fine-tuning (L1 pixel 1e-2, VGG19 conv5_4 1.0, RaGAN 5e-3).
LOSSES: dict[str, LossTerm] = {
    "pixel": LossTerm("l_g_pix", 1e-2, _pixel),
    "perceptual": LossTerm("l_g_percep", 1.0, _perceptual, build=_build_perceptual),
    "adversarial": LossTerm("l_g_gan", 5e-3, _adversarial, needs_discriminator=True),
    # Not in ESRGAN's recipe (weight 0 by default): an offline stand-in for the perceptual term.
    "feature_matching": LossTerm("l_g_fm", 0.0, _feature_matching, needs_discriminator=True, needs_features=True),
}


class LossWeights(Mapping[str, float]):
    """The weight of each term of a loss table (missing names weigh 0); a term with weight 0 is not computed."""

    def __init__(self, weights: Mapping[str, float] | None = None, table: Mapping[str, LossTerm] = LOSSES, **kw):
        given = {**(weights or {}), **kw}
        unknown = sorted(set(given) - set(table))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; known: {sorted(table)}")
        for name, value in given.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"loss weight {name!r} must be a finite number >= 0, got {value!r}")
        self._weights = {name: float(given.get(name, 0.0)) for name in table}
        if not any(self._weights.values()):
            raise ValueError("all loss weights are 0: nothing to optimise")

    @classmethod
    def from_config(cls, config: Any, table: Mapping[str, LossTerm] = LOSSES) -> LossWeights:
        return cls({name: getattr(config, name) for name in table}, table)

    def __getitem__(self, name: str) -> float:
        return self._weights[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __repr__(self) -> str:
        return "LossWeights(" + ", ".join(f"{k}={v:g}" for k, v in self._weights.items()) + ")"


ESRGAN_WEIGHTS = LossWeights({name: term.default_weight for name, term in LOSSES.items()})


class GeneratorLoss(nn.Module):
    """Weighted sum of a loss table's terms; returns the total and the weighted terms by their log names."""

    def __init__(
        self,
        weights: LossWeights,
        modules: Mapping[str, nn.Module] | None = None,
        table: Mapping[str, LossTerm] = LOSSES,
    ):
        super().__init__()
        modules = dict(modules or {})
        for name, term in table.items():
            if weights[name] > 0 and term.build is not None and name not in modules:
                raise ValueError(f"loss term {name!r} has weight {weights[name]} but no module was given")
        self.weights, self.table = weights, dict(table)
        self.terms = nn.ModuleDict(modules)

    @classmethod
    def from_config(cls, config: Any, table: Mapping[str, LossTerm] = LOSSES) -> GeneratorLoss:
        """The loss a ``LossConfig`` describes, building the networks of the terms it weighs."""
        weights = LossWeights.from_config(config, table)
        modules = {n: t.build(config) for n, t in table.items() if weights[n] > 0 and t.build is not None}
        return cls(weights, modules, table)

    def without(self, *names: str) -> GeneratorLoss:
        """The same loss with ``names`` weighted 0, sharing this loss's networks."""
        weights = LossWeights({k: 0.0 if k in names else v for k, v in self.weights.items()}, self.table)
        return GeneratorLoss(weights, dict(self.terms.items()), self.table)

    @property
    def needs_discriminator(self) -> bool:
        """Whether ``forward`` needs discriminator logits (a weighted term reads them)."""
        return any(self.weights[n] > 0 and t.needs_discriminator for n, t in self.table.items())

    @property
    def needs_features(self) -> bool:
        """Whether ``forward`` needs the discriminator's block outputs (a weighted term reads them)."""
        return any(self.weights[n] > 0 and t.needs_features for n, t in self.table.items())

    @property
    def perceptual_pretrained(self) -> bool | None:
        """Whether the VGG19 of the perceptual term has ImageNet weights; None when the term is off."""
        vgg = self.terms["perceptual"] if "perceptual" in self.terms else None
        return None if vgg is None else vgg.pretrained

    def forward(
        self,
        sr: Tensor,
        gt: Tensor,
        real_logits: Tensor | None = None,
        fake_logits: Tensor | None = None,
        real_features: list[Tensor] | None = None,
        fake_features: list[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """sr, gt: (B, 3, H, W) in [0, 1]; logits (B, 1) of D(gt) and D(sr), and D's block outputs of both where a
        term needs them. Returns (total, {log name: weighted term}). Only terms with weight > 0 are computed and
        appear in the dict."""
        inputs = LossInputs(sr, gt, real_logits, fake_logits, real_features, fake_features)
        terms: dict[str, Tensor] = {}
        for name, term in self.table.items():
            weight = self.weights[name]
            if weight <= 0:
                continue
            if term.needs_discriminator and (real_logits is None or fake_logits is None):
                raise ValueError(f"loss term {name!r} needs real_logits and fake_logits")
            if term.needs_features and (real_features is None or fake_features is None):
                raise ValueError(f"loss term {name!r} needs the discriminator's features of SR and HR")
            module = self.terms[name] if name in self.terms else None
            terms[term.log_name] = weight * term.fn(inputs, module)
        return sum(terms.values()), terms


def cost_penalty(
    macs: Tensor, target: float, form: str, weight: float, loss: Tensor | None = None, dead_zone: float = 0.0
) -> tuple[Tensor, dict[str, float]]:
    """The cost term added to an architecture loss, and what to log of it.

    ``log_ratio`` (two-sided): ``weight * loss * max(0, |log(macs / target)| - log(1 + dead_zone))`` with the loss
    detached: its gradient is ``weight * loss / macs * d macs``, scale-free in MACs and proportional to the loss,
    so one weight serves any target and any loss level (FBNet's multiplicative idea). ``hinge`` / ``abs`` /
    ``square``: ``weight * f(macs / target - 1)``, one-sided for hinge; ``none``: zero.
    """
    ratio = macs / target
    if form == "log_ratio":
        if loss is None:
            raise ValueError("the log_ratio cost penalty scales with the loss: pass loss")
        excess = torch.relu(ratio.log().abs() - math.log1p(dead_zone))
        penalty = weight * loss.detach() * excess
    else:
        excess = ratio - 1
        term = {"none": excess * 0, "hinge": torch.relu(excess), "abs": excess.abs(), "square": excess.square()}[form]
        penalty = weight * term
    return penalty, {"penalty/cost": float(penalty.detach()), "cost/macs_ratio": float(ratio.detach())}
