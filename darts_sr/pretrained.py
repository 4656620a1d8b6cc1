"""Offline policy for ImageNet-pretrained backbones (AlexNet for LPIPS, VGG19 for the perceptual loss).

torchvision downloads these weights on first use; an offline machine cannot. This module never lets
torchvision download anything: it looks for the file torchvision would have cached (same file name, in
``torch.hub.get_dir()/checkpoints`` or a directory the caller names) and loads it with ``weights_only=True``.
When the file is missing it raises :class:`PretrainedWeightsMissing`, which says which file to put where,
unless the caller explicitly allows a randomly initialised backbone; then it logs a WARNING saying so plainly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

logger = logging.getLogger(__name__)

# Backbone name (a torchvision model builder name) -> the ImageNet weights torchvision would download for it.
BACKBONES: dict[str, WeightsEnum] = {
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1,
}


class PretrainedWeightsMissing(RuntimeError):
    """The cached ImageNet weights of a backbone are not on disk; the message says what to put where."""

    def __init__(self, backbone: str, filename: str, directory: Path, url: str) -> None:
        self.backbone = backbone
        self.filename = filename
        self.directory = directory
        self.url = url
        super().__init__(
            f"{backbone} ImageNet weights not found: put {filename} in {directory} (normally downloaded from {url})"
        )


def _weights(backbone: str) -> WeightsEnum:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}") from None


def weights_filename(backbone: str) -> str:
    """File name torchvision caches the backbone's ImageNet weights under (basename of the download URL)."""
    return os.path.basename(_weights(backbone).url)


def weights_url(backbone: str) -> str:
    """URL torchvision normally downloads the backbone's ImageNet weights from."""
    return _weights(backbone).url


def checkpoint_dir(directory: str | Path | None = None) -> Path:
    """``directory`` if given, else ``torch.hub.get_dir()/checkpoints`` (honours TORCH_HOME and hub.set_dir)."""
    if directory is not None:
        return Path(directory)
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(backbone: str, directory: str | Path | None = None) -> Path | None:
    """Path of the cached ImageNet weights of ``backbone`` in ``directory`` (default: hub checkpoints), or None."""
    path = checkpoint_dir(directory) / weights_filename(backbone)
    return path if path.is_file() else None


def load_backbone(
    backbone: str, directory: str | Path | None = None, allow_random: bool = False
) -> tuple[nn.Module, bool]:
    """Build the torchvision ``backbone`` and load its cached ImageNet weights; never downloads.

    Returns ``(model, pretrained)``. The model is returned as built (train mode, gradients on); freezing it is
    the caller's business. If the weights file is missing, raises :class:`PretrainedWeightsMissing`, unless
    ``allow_random`` is true: then a WARNING is logged and the randomly initialised model is returned with
    ``pretrained=False``. Anything computed with such a model is not the real metric or loss.
    """
    weights = _weights(backbone)
    path = find_weights(backbone, directory)
    if path is None:
        missing = PretrainedWeightsMissing(backbone, weights_filename(backbone), checkpoint_dir(directory), weights.url)
        if not allow_random:
            raise missing  # before building the model: vgg19's random init alone takes seconds
        logger.warning(
            "%s backbone is RANDOMLY INITIALISED (%s); any number computed with it is NOT the real metric/loss",
            backbone,
            missing,
        )
        return torchvision.models.get_model(backbone, weights=None), False
    model = torchvision.models.get_model(backbone, weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    logger.info("loaded %s ImageNet weights from %s", backbone, path)
    return model, True
