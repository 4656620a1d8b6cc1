"""Evaluation metrics: PSNR / SSIM on Y (TPSR/EDSR protocol), LPIPS and NIQE, declared once in ``METRICS``.

Inputs are uint8 numpy images (H, W, 3) RGB, i.e. network outputs already clamped to [0, 1], scaled to
0-255 and rounded, as the TPSR/EDSR evaluation does before measuring. PSNR and SSIM are computed on the
ITU-R BT.601 luma Y (16-235) after cropping ``border`` pixels on every side (the scale factor, usually).

LPIPS needs AlexNet's ImageNet weights, fetched as torchvision does unless offline (see :mod:`darts_sr.pretrained`).
:meth:`LpipsMetric.create` never falls back to a random backbone: it returns ``(None, reason)`` instead. NIQE
(:mod:`.niqe`) needs no reference and no download; lower is more natural, and it is blind to fidelity.

``METRICS`` maps a record key to its column label, digits, direction, whether it needs ground truth, and how to
create its scorer ``(sr, gt, border) -> float`` (None when it cannot run here, e.g. LPIPS without weights). The
evaluation, the tables and the validation logs read the table: adding a metric is one entry plus its function.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lpips
import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn

from darts_sr.evaluation.niqe import BLOCK_SIZE as NIQE_BLOCK
from darts_sr.evaluation.niqe import niqe
from darts_sr.pretrained import PretrainedWeightsMissing, find_weights, load_backbone

logger = logging.getLogger(__name__)


def _check_image(img: np.ndarray, name: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{name} must be a uint8 (H, W, 3) RGB array, got {desc}")


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    _check_image(sr, "sr")
    _check_image(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: sr {sr.shape} vs hr {hr.shape}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 (H, W, 3) RGB image: float64 (H, W) in [16, 235], not rounded.

    Y = (0.299 R + 0.587 G + 0.114 B) * 219 / 255 + 16 on 0-255 values (MATLAB ``rgb2ycbcr``'s Y).
    """
    _check_image(img, "img")
    rgb = img.astype(np.float64)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) * 219.0 / 255.0 + 16.0


def _y_cropped(sr: np.ndarray, hr: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    _check_pair(sr, hr)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = sr.shape[:2]
    if 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of a {h}x{w} image")
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    if border > 0:
        y_sr = y_sr[border:-border, border:-border]
        y_hr = y_hr[border:-border, border:-border]
    return y_sr, y_hr


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR in dB on Y between uint8 (H, W, 3) images after cropping ``border`` pixels per side.

    10 * log10(255^2 / MSE); ``inf`` for identical crops. Raises ValueError on differing shapes.
    """
    y_sr, y_hr = _y_cropped(sr, hr, border)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on Y (range 255) between uint8 (H, W, 3) images after cropping ``border`` pixels per side.

    MATLAB-style setting: 11x11 Gaussian window, sigma 1.5, population covariance. Result in [-1, 1];
    1 for identical crops. The cropped image must be at least 11 pixels on each side.
    """
    y_sr, y_hr = _y_cropped(sr, hr, border)
    return float(
        structural_similarity(
            y_sr, y_hr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
        )
    )


def _bare_lpips() -> lpips.LPIPS:
    """lpips v0.1 AlexNet model with its shipped linear layers and an untrained backbone.

    ``pnet_rand=True`` stops lpips from asking torchvision to download AlexNet; the linear-layer weights
    (``weights/v0.1/alex.pth``) ship inside the lpips package.
    """
    with warnings.catch_warnings():
        # lpips calls torchvision.models.alexnet(pretrained=False), which is deprecated but harmless.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    return model.eval()


def _load_alexnet_features(trunk: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision AlexNet ``features.N.*`` tensors into lpips's ``slice1..slice5`` (strict both ways).

    lpips builds ``sliceK`` by ``add_module(str(N), features[N])``, so a child named ``N`` of any slice is
    ``features[N]``; ``features.N.p`` maps to ``sliceK.N.p``.
    """
    slice_of: dict[str, str] = {}
    for k in range(1, trunk.N_slices + 1):
        for child_name, _ in getattr(trunk, f"slice{k}").named_children():
            slice_of[child_name] = f"slice{k}"
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not key.startswith("features."):
            continue  # the classifier is not part of LPIPS
        _, index, rest = key.split(".", 2)
        if index not in slice_of:
            raise ValueError(f"AlexNet weight {key} has no place in lpips's slices")
        mapped[f"{slice_of[index]}.{index}.{rest}"] = tensor
    # strict=True: every slice parameter gets a tensor and every features.* tensor is used.
    trunk.load_state_dict(mapped, strict=True)


class LpipsMetric:
    """LPIPS v0.1 (AlexNet) distance between uint8 (H, W, 3) images; lower is more similar, 0 for identical.

    Build with :meth:`create` (real ImageNet backbone or nothing). :meth:`with_random_backbone` exists for
    plumbing tests only.
    """

    def __init__(self, model: lpips.LPIPS, random_backbone: bool, weights_path: Path | None = None) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.random_backbone = random_backbone
        self.weights_path = weights_path
        self.device = torch.device("cpu")

    @classmethod
    def create(cls, directory: str | Path | None = None) -> tuple[LpipsMetric | None, str | None]:
        """``(metric, None)`` if AlexNet's ImageNet weights are in ``directory`` (default: torch hub
        checkpoints) or can be downloaded there, else ``(None, reason)`` with a one-line reason. Never uses a
        random backbone."""
        try:
            alexnet, pretrained = load_backbone("alexnet", directory, allow_random=False)
        except PretrainedWeightsMissing as err:
            reason = str(err)  # one line: the file, where it goes, and whether downloads are off or failed
            logger.warning("LPIPS disabled: %s", reason)
            return None, reason
        assert pretrained
        model = _bare_lpips()
        _load_alexnet_features(model.net, alexnet.state_dict())
        return cls(model, random_backbone=False, weights_path=find_weights("alexnet", directory)), None

    @classmethod
    def with_random_backbone(cls, seed: int = 0) -> LpipsMetric:
        """FOR PLUMBING TESTS ONLY: the same network with an untrained AlexNet backbone.

        Numbers from this metric are NOT LPIPS and must never be reported as such. Sets
        ``random_backbone = True``. ``seed`` fixes the backbone's initialisation without touching the global RNG.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _bare_lpips()
        logger.warning("LPIPS with a RANDOMLY INITIALISED AlexNet backbone: its numbers are NOT LPIPS")
        return cls(model, random_backbone=True)

    def to(self, device: str | torch.device) -> LpipsMetric:
        """Move the network to ``device``; returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @staticmethod
    def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
        # uint8 (H, W, 3) -> float (1, 3, H, W) in [-1, 1], the range lpips expects.
        t = torch.from_numpy(np.ascontiguousarray(img)).to(device)
        return t.permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        """LPIPS distance (>= 0) between two uint8 (H, W, 3) RGB images of the same shape."""
        _check_pair(sr, hr)
        self.model.eval()
        with torch.no_grad():
            d = self.model(self._to_tensor(sr, self.device), self._to_tensor(hr, self.device))
        return float(d.item())


# --- the metric table -------------------------------------------------------------------------------------------

Scorer = Callable[[np.ndarray, "np.ndarray | None", int], float]  # (sr, gt or None, border) -> value


@dataclass(frozen=True)
class MetricSettings:
    """What creating a scorer may need."""

    pretrained_dir: str | Path | None = None
    device: str | torch.device = "cpu"


@dataclass(frozen=True)
class MetricSpec:
    """One evaluation metric: its column label, digits shown, direction, whether it needs ground truth, and
    ``create(settings)`` returning its scorer, or None when it cannot run here (the reason is logged once)."""

    label: str
    digits: int
    lower_is_better: bool
    needs_reference: bool
    create: Callable[[MetricSettings], Scorer | None]


def _create_lpips(settings: MetricSettings) -> Scorer | None:
    metric, _ = LpipsMetric.create(settings.pretrained_dir)
    if metric is None:
        return None
    metric.to(settings.device)
    return lambda sr, gt, border: metric(sr, gt)


def niqe_or_nan(sr: np.ndarray, gt: np.ndarray | None, border: int) -> float:
    """NIQE of ``sr`` (no reference); NaN for an image under two 96x96 blocks after the crop, which the
    evaluation leaves out of the mean and counts."""
    h, w = sr.shape[0] - 2 * border, sr.shape[1] - 2 * border
    if (h // NIQE_BLOCK) * (w // NIQE_BLOCK) < 2:
        return math.nan
    return niqe(sr, border)


METRICS: dict[str, MetricSpec] = {
    "psnr_y": MetricSpec("Y-PSNR", 2, False, True, lambda settings: psnr_y),
    "ssim_y": MetricSpec("Y-SSIM", 4, False, True, lambda settings: ssim_y),
    "lpips": MetricSpec("LPIPS", 4, True, True, _create_lpips),
    "niqe": MetricSpec("NIQE", 2, True, False, lambda settings: niqe_or_nan),
}

DISTORTION_METRICS = ("psnr_y", "ssim_y")  # cheap, need no weights: what a search validates with


def create_scorers(
    names: tuple[str, ...] | None = None, settings: MetricSettings = MetricSettings(), table: dict | None = None
) -> dict[str, Scorer | None]:
    """Scorers of ``names`` (default: every metric of the table), None for those that cannot run here."""
    table = METRICS if table is None else table
    unknown = sorted(set(names or ()) - set(table))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(table)}")
    return {name: table[name].create(settings) for name in (names or tuple(table))}
