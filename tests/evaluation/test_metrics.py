"""Tests for darts_sr.evaluation.metrics: PSNR/SSIM on Y by hand arithmetic, LPIPS plumbing and weight loading.

ImageNet weights cannot be downloaded here, so LPIPS is exercised with random AlexNet backbones: either the
test-only LpipsMetric.with_random_backbone, or a random AlexNet state dict saved under torchvision's file name
so that the real loading path (key mapping into lpips's slices) is tested with fake-but-real-format weights.
None of the distances computed here are LPIPS numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from darts_sr.evaluation.metrics import LpipsMetric, psnr_y, rgb_to_y, ssim_y
from darts_sr.pretrained import weights_filename


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME / hub dir; returns its checkpoints dir (not created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _rand_img(rng: np.random.Generator, h: int = 32, w: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- Y, PSNR, SSIM --------------------------------------------------------------------------------------------


def test_rgb_to_y_extremes() -> None:
    white = np.full((2, 3, 3), 255, np.uint8)
    black = np.zeros((2, 3, 3), np.uint8)
    assert rgb_to_y(white).shape == (2, 3)
    assert np.allclose(rgb_to_y(white), 235.0)
    assert np.allclose(rgb_to_y(black), 16.0)
    assert rgb_to_y(white).dtype == np.float64


def test_rgb_to_y_weights() -> None:
    img = np.zeros((1, 3, 3), np.uint8)
    img[0, 0, 0] = img[0, 1, 1] = img[0, 2, 2] = 255
    assert np.allclose(rgb_to_y(img)[0], np.array([0.299, 0.587, 0.114]) * 219 + 16)


def test_rgb_to_y_rejects_float() -> None:
    with pytest.raises(ValueError):
        rgb_to_y(np.zeros((2, 2, 3), np.float32))


@pytest.mark.parametrize("d", [1, 5, 40])
def test_psnr_constant_offset(d: int) -> None:
    hr = np.full((16, 16, 3), 100, np.uint8)
    sr = hr + np.uint8(d)
    mse = (d * 219 / 255) ** 2
    assert psnr_y(sr, hr, border=0) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert psnr_y(sr, hr, border=4) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_psnr_identical_is_inf() -> None:
    img = _rand_img(np.random.default_rng(0))
    assert psnr_y(img, img.copy(), border=2) == math.inf


def test_psnr_border_crop() -> None:
    rng = np.random.default_rng(1)
    hr = _rand_img(rng)
    sr = hr.copy()
    sr[:3] = 255 - sr[:3]
    sr[:, -3:] = 0
    assert psnr_y(sr, hr, border=3) == math.inf
    assert psnr_y(sr, hr, border=2) < 30
    # An interior error of one pixel: exact value after the crop.
    sr = hr.copy()
    sr[10, 10] = np.clip(sr[10, 10].astype(int) + 10, 0, 255).astype(np.uint8)
    diff = rgb_to_y(sr)[10, 10] - rgb_to_y(hr)[10, 10]
    mse = diff**2 / (26 * 26)
    assert psnr_y(sr, hr, border=3) == pytest.approx(10 * math.log10(255**2 / mse))


def test_psnr_shape_mismatch() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.zeros((8, 9, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*\(8, 9, 3\)"):
        psnr_y(a, b, border=0)
    with pytest.raises(ValueError):
        ssim_y(a, b, border=0)


def test_ssim() -> None:
    rng = np.random.default_rng(2)
    hr = _rand_img(rng, 40, 40)
    assert ssim_y(hr, hr.copy(), border=4) == pytest.approx(1.0)
    noise = rng.integers(-20, 21, size=hr.shape)
    sr = np.clip(hr.astype(int) + noise, 0, 255).astype(np.uint8)
    value = ssim_y(sr, hr, border=4)
    assert -1.0 <= value < 1.0


def test_lpips_create_without_weights(empty_hub: Path) -> None:
    """ImageNet weights cannot be downloaded here: create() must refuse, not fall back to a random backbone."""
    metric, reason = LpipsMetric.create()
    assert metric is None
    assert reason is not None and "alexnet-owt-7be5be79.pth" in reason and str(empty_hub) in reason
    assert "\n" not in reason


def test_lpips_random_backbone_plumbing() -> None:
    """Random backbone (ImageNet weights cannot be downloaded here): plumbing only, not LPIPS values."""
    metric = LpipsMetric.with_random_backbone()
    assert metric.random_backbone is True
    rng = np.random.default_rng(3)
    x, y = _rand_img(rng), _rand_img(rng)
    assert metric(x, x) == 0.0
    assert metric(x, y) > 0.0


def test_lpips_create_loads_cached_alexnet(empty_hub: Path) -> None:
    """Fake-but-real-format weights: a random AlexNet state dict saved under torchvision's file name in the hub
    checkpoints dir (ImageNet weights cannot be downloaded here). This tests the real loading path and the
    features.N -> sliceK.N key mapping; the distances are not LPIPS numbers."""
    torch.manual_seed(123)
    state = torchvision.models.alexnet(weights=None).state_dict()
    empty_hub.mkdir(parents=True)
    torch.save(state, empty_hub / weights_filename("alexnet"))

    metric, reason = LpipsMetric.create()
    assert reason is None and metric is not None
    assert metric.random_backbone is False
    assert metric.weights_path == empty_hub / "alexnet-owt-7be5be79.pth"

    trunk = metric.model.net
    conv_to_slice = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}  # lpips's slices of alexnet.features
    for idx, k in conv_to_slice.items():
        conv = getattr(trunk, f"slice{k}")._modules[str(idx)]
        assert torch.equal(conv.weight, state[f"features.{idx}.weight"])
        assert torch.equal(conv.bias, state[f"features.{idx}.bias"])
    assert sum(p.numel() for p in trunk.parameters()) == sum(
        v.numel() for key, v in state.items() if key.startswith("features.")
    )

    rng = np.random.default_rng(4)
    x, y = _rand_img(rng), _rand_img(rng)
    assert metric(x, x) == 0.0
    d_xy, d_yx = metric(x, y), metric(y, x)
    assert math.isfinite(d_xy) and d_xy > 0.0
    assert d_xy == pytest.approx(d_yx, rel=1e-5)
    assert metric.to("cpu") is metric


def test_lpips_create_rejects_bad_file(tmp_path: Path) -> None:
    state = torchvision.models.alexnet(weights=None).state_dict()
    state.pop("features.10.bias")
    torch.save(state, tmp_path / weights_filename("alexnet"))
    with pytest.raises(RuntimeError):
        LpipsMetric.create(tmp_path)


def test_lpips_shape_mismatch() -> None:
    metric = LpipsMetric.with_random_backbone()
    with pytest.raises(ValueError):
        metric(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))
