"""Running a generator over image pairs and scoring it under the TPSR protocol.

SR outputs are clamped to [0, 255] and rounded before scoring, Y-PSNR/SSIM crop ``scale``
border pixels, and LPIPS is reported only with real ImageNet AlexNet weights (else None).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from darts_sr.data import ImagePair, to_tensor, to_uint8
from darts_sr.io import atomic_save_png
from darts_sr.metrics import psnr_y, ssim_y

log = logging.getLogger(__name__)


@dataclass
class DatasetScore:
    """Mean scores over the images of one dataset that have ground truth."""

    dataset: str
    images: int
    psnr_y: float | None
    ssim_y: float | None
    lpips: float | None


@torch.no_grad()
def super_resolve(model: nn.Module, lr: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """uint8 (h, w, 3) -> quantised uint8 (sh, sw, 3)."""
    return to_uint8(model(to_tensor(lr).to(device)).cpu())


def evaluate_pairs(
    model: nn.Module,
    pairs: list[ImagePair],
    dataset: str,
    scale: int,
    lpips_metric=None,
    device: torch.device | str = "cpu",
    save_dir: Path | None = None,
) -> DatasetScore:
    """Super-resolves every pair; scores those with HR. ``save_dir`` receives ``<name>.png`` per image."""
    was_training = model.training
    model.eval()
    psnrs, ssims, lpipses = [], [], []
    for pair in pairs:
        sr = super_resolve(model, pair.lr, device)
        if save_dir is not None:
            atomic_save_png(save_dir / f"{pair.name}.png", sr)
        if pair.hr is None:
            continue
        psnrs.append(psnr_y(sr, pair.hr, border=scale))
        ssims.append(ssim_y(sr, pair.hr, border=scale))
        if lpips_metric is not None:
            lpipses.append(lpips_metric(sr, pair.hr))
    model.train(was_training)
    return DatasetScore(
        dataset=dataset,
        images=len(pairs),
        psnr_y=_mean(psnrs),
        ssim_y=_mean(ssims),
        lpips=_mean(lpipses),
    )


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of evaluation records."""
    header = f"{'dataset':<16}{'images':>7}{'Y-PSNR':>9}{'Y-SSIM':>9}{'LPIPS':>8}{'params':>10}{'GMACs@720p':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['dataset']:<16}{r['images']:>7}{_fmt(r['psnr_y'], 2):>9}{_fmt(r['ssim_y'], 4):>9}"
            f"{_fmt(r['lpips'], 4):>8}{r['params']:>10,}{r['macs_720p'] / 1e9:>12.3f}"
        )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"
