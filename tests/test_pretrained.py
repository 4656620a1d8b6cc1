"""Tests for the offline pretrained-weights policy (darts_sr.pretrained).

ImageNet weights cannot be downloaded on the test machine, so these tests use empty temporary hub
directories and, for the load path, a randomly initialised AlexNet saved under torchvision's file name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from darts_sr import pretrained
from darts_sr.pretrained import PretrainedWeightsMissing, find_weights, load_backbone, weights_filename


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME / hub dir; returns its checkpoints dir (not created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_backbone_file_names() -> None:
    assert weights_filename("alexnet") == "alexnet-owt-7be5be79.pth"
    assert weights_filename("vgg19") == "vgg19-dcbb9e9d.pth"
    assert pretrained.BACKBONES["alexnet"] is torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    assert pretrained.BACKBONES["vgg19"] is torchvision.models.VGG19_Weights.IMAGENET1K_V1
    with pytest.raises(ValueError, match="unknown backbone"):
        weights_filename("resnet50")


def test_default_dir_follows_torch_hub(empty_hub: Path) -> None:
    assert pretrained.checkpoint_dir() == empty_hub


@pytest.mark.parametrize("backbone", ["alexnet", "vgg19"])
def test_missing_weights_raise_with_file_dir_and_url(empty_hub: Path, backbone: str) -> None:
    """Random/no backbones only: ImageNet weights cannot be downloaded here."""
    name = weights_filename(backbone)
    assert find_weights(backbone) is None
    with pytest.raises(PretrainedWeightsMissing) as info:
        load_backbone(backbone)
    msg = str(info.value)
    assert name in msg and str(empty_hub) in msg
    assert pretrained.BACKBONES[backbone].url in msg
    assert "\n" not in msg


def test_missing_weights_with_explicit_directory(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsMissing, match=str(tmp_path)):
        load_backbone("vgg19", directory=tmp_path)


def test_find_weights_vgg19_in_directory(tmp_path: Path) -> None:
    """vgg19's real-size round trip (550 MB) is too slow for a unit test; only the lookup is checked."""
    assert find_weights("vgg19", tmp_path) is None
    (tmp_path / weights_filename("vgg19")).write_bytes(b"")
    assert find_weights("vgg19", str(tmp_path)) == tmp_path / "vgg19-dcbb9e9d.pth"


def test_allow_random_warns(empty_hub: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Random backbone only because ImageNet weights cannot be downloaded here; the warning must say so."""
    with caplog.at_level(logging.WARNING, logger="darts_sr.pretrained"):
        model, is_pretrained = load_backbone("alexnet", allow_random=True)
    assert is_pretrained is False
    assert isinstance(model, torchvision.models.AlexNet)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    text = warnings[0].getMessage()
    assert "RANDOMLY INITIALISED" in text and "not the real" in text.lower()
    assert "alexnet-owt-7be5be79.pth" in text


def test_load_round_trip_alexnet(tmp_path: Path) -> None:
    """Fake-but-real-format weights: a random AlexNet saved under torchvision's file name loads exactly."""
    torch.manual_seed(0)
    source = torchvision.models.alexnet(weights=None)
    torch.save(source.state_dict(), tmp_path / weights_filename("alexnet"))
    model, is_pretrained = load_backbone("alexnet", directory=tmp_path)
    assert is_pretrained is True
    loaded = model.state_dict()
    for key, tensor in source.state_dict().items():
        assert torch.equal(loaded[key], tensor), key


def test_load_rejects_wrong_keys(tmp_path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / weights_filename("alexnet"))
    with pytest.raises(RuntimeError):
        load_backbone("alexnet", directory=tmp_path)
