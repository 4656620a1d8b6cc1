"""Objectives of the generator and discriminator: pixel, perceptual (VGG19) and relativistic adversarial.

Images are float tensors in [0, 1], (B, 3, H, W) RGB. Discriminator outputs are raw logits, (B, 1). Every loss term
has a named weight (``LossWeights``) and a BasicSR name in the loss dict: ``l_g_pix``, ``l_g_percep``, ``l_g_gan``
for the generator, ``l_d_real``, ``l_d_fake`` for the discriminator.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darts_sr.pretrained import load_backbone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossWeights:
    """Weight of each generator loss term; a term with weight 0 is not computed at all."""

    pixel: float
    perceptual: float
    adversarial: float

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"loss weight {f.name!r} must be a finite number >= 0, got {value!r}")
        if self.pixel == self.perceptual == self.adversarial == 0:
            raise ValueError("all loss weights are 0: nothing to optimise")


# ESRGAN's perceptual-adversarial fine-tuning recipe (L1 pixel 1e-2, VGG19 conv5_4 1.0, RaGAN 5e-3).
ESRGAN_WEIGHTS = LossWeights(pixel=1e-2, perceptual=1.0, adversarial=5e-3)
# PSNR-oriented pretraining: L1 only.
PIXEL_ONLY = LossWeights(pixel=1.0, perceptual=0.0, adversarial=0.0)


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


def relativistic_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """(BCE(real - mean(fake), 1) + BCE(fake - mean(real), 0)) / 2; logits (B, 1) -> scalar."""
    terms = relativistic_discriminator_terms(real_logits, fake_logits)
    return (terms["l_d_real"] + terms["l_d_fake"]) / 2


def relativistic_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """(BCE(real - mean(fake), 0) + BCE(fake - mean(real), 1)) / 2; logits (B, 1) -> scalar.

    The generator gets gradient from both terms through ``fake_logits``; pass ``real_logits`` detached (or with
    the discriminator frozen) so the G step does not build a graph into D for the HR batch.
    """
    return (_bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0)) / 2


class GeneratorLoss(nn.Module):
    """Weighted sum of L1 pixel, perceptual and RaGAN terms; returns the total and the weighted terms by name."""

    def __init__(self, weights: LossWeights, perceptual: PerceptualLoss | None):
        super().__init__()
        if weights.perceptual > 0 and perceptual is None:
            raise ValueError(f"perceptual weight is {weights.perceptual} but no PerceptualLoss was given")
        self.weights = weights
        self.perceptual = perceptual

    @property
    def needs_discriminator(self) -> bool:
        """Whether ``forward`` needs discriminator logits (adversarial weight > 0)."""
        return self.weights.adversarial > 0

    def forward(
        self, sr: Tensor, hr: Tensor, real_logits: Tensor | None = None, fake_logits: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """sr, hr: (B, 3, H, W) in [0, 1]; logits (B, 1) of D(hr) and D(sr). Returns (total, {name: weighted term}).

        Only terms with weight > 0 are computed and appear in the dict.
        """
        w = self.weights
        terms: dict[str, Tensor] = {}
        if w.pixel > 0:
            terms["l_g_pix"] = w.pixel * F.l1_loss(sr, hr)
        if w.perceptual > 0:
            terms["l_g_percep"] = w.perceptual * self.perceptual(sr, hr)
        if w.adversarial > 0:
            if real_logits is None or fake_logits is None:
                raise ValueError("adversarial weight > 0: forward needs real_logits and fake_logits")
            terms["l_g_gan"] = w.adversarial * relativistic_generator_loss(real_logits, fake_logits)
        return sum(terms.values()), terms


def cost_penalty(expected_macs: Tensor, budget: float, form: str, weight: float) -> tuple[Tensor, dict[str, float]]:
    """``weight * f(E[MACs] / budget - 1)`` with f = hinge (only above budget), abs or square."""
    excess = expected_macs / budget - 1
    term = {
        "none": excess * 0,
        "hinge": torch.relu(excess),
        "abs": excess.abs(),
        "square": excess.square(),
    }[form]
    penalty = weight * term
    return penalty, {
        "penalty/cost": float(penalty.detach()),
        "cost/expected_gmacs": float(expected_macs.detach()) / 1e9,
    }
