"""Running a generator over image pairs and scoring it under the TPSR protocol.

SR outputs are clamped to [0, 255] and rounded before scoring, Y-PSNR/SSIM crop ``scale``
border pixels, and LPIPS is reported only with real ImageNet AlexNet weights (else None).
The metrics are those of ``darts_sr.evaluation.metrics.METRICS``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from darts_sr.data import ImagePair, bicubic_upscale, load_dataset, to_tensor, to_uint8
from darts_sr.evaluation.metrics import DISTORTION_METRICS, METRICS, MetricSettings, Scorer, create_scorers, psnr_y
from darts_sr.io import atomic_save_png
from darts_sr.nets.networks import load_generator

log = logging.getLogger(__name__)

PSNR_ONLY = {"psnr_y": psnr_y}  # the scorers a search needs each epoch: SSIM there would be work nobody reads


@dataclass
class DatasetScore:
    """Mean scores over the images of one dataset (metrics needing ground truth: over the images that have it);
    ``values[name]`` is None for a metric that could not run or had no image to score."""

    dataset: str
    images: int
    values: dict[str, float | None]

    def __getitem__(self, name: str) -> float | None:
        return self.values[name]

    def record(self) -> dict:
        """Flat, as ``evaluate.py --json`` writes it: ``dataset``, ``images`` and one key per metric."""
        return {"dataset": self.dataset, "images": self.images, **self.values}


@torch.no_grad()
def super_resolve(model: nn.Module, lq: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """uint8 (h, w, 3) -> quantised uint8 (sh, sw, 3)."""
    return to_uint8(model(to_tensor(lq).to(device)).cpu())


def score_images(
    results: Iterable[tuple[np.ndarray, ImagePair]], dataset: str, scale: int, scorers: dict[str, Scorer | None]
) -> DatasetScore:
    """Scores (SR or any upscaled image, its pair) one at a time with every scorer; ``scale`` border pixels
    cropped. Metrics that need ground truth skip pairs without it."""
    values: dict[str, list[float]] = {name: [] for name in scorers}
    images, unscored = 0, dict.fromkeys(scorers, 0)
    for sr, pair in results:
        images += 1
        for name, scorer in scorers.items():
            if scorer is not None and (pair.gt is not None or not METRICS[name].needs_reference):
                value = scorer(sr, pair.gt, scale)
                if math.isnan(value):
                    unscored[name] += 1  # e.g. NIQE of an image under two 96x96 blocks
                else:
                    values[name].append(value)
    for name, count in unscored.items():
        if count:
            label = METRICS[name].label
            log.warning("%s: %s left out for %d of %d images (too small or flat)", dataset, label, count, images)
    return DatasetScore(dataset, images, {name: _mean(v) for name, v in values.items()})


def score_bicubic(pairs: list[ImagePair], dataset: str, scale: int, scorers: dict[str, Scorer | None]) -> DatasetScore:
    """The bicubic baseline: each LR image upscaled by MATLAB-compatible bicubic, scored like a model's output."""
    return score_images(((bicubic_upscale(p.lq, scale), p) for p in pairs), dataset, scale, scorers)


def evaluate_pairs(
    model: nn.Module,
    pairs: list[ImagePair],
    dataset: str,
    scale: int,
    scorers: dict[str, Scorer | None] | None = None,
    device: torch.device | str = "cpu",
    save_dir: Path | None = None,
) -> DatasetScore:
    """Super-resolves every pair and scores it (default scorers: Y-PSNR and Y-SSIM). ``save_dir`` receives
    ``<name>.png`` per image."""
    scorers = create_scorers(DISTORTION_METRICS) if scorers is None else scorers
    was_training = model.training
    model.eval()

    def results() -> Iterator[tuple[np.ndarray, ImagePair]]:
        for pair in pairs:
            sr = super_resolve(model, pair.lq, device)
            if save_dir is not None:
                atomic_save_png(save_dir / f"{pair.name}.png", sr)
            yield sr, pair

    try:
        return score_images(results(), dataset, scale, scorers)
    finally:
        model.train(was_training)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def format_table(records: list[dict]) -> str:
    """A fixed-width text table of evaluation records (the metrics each record carries, in table order)."""
    names = [n for n in METRICS if any(n in r for r in records)]
    header = f"{'model':<18}{'dataset':<12}{'images':>7}" + "".join(f"{METRICS[n].label:>9}" for n in names)
    header += f"{'params':>10}{'GMACs@720p':>12}"
    lines = [header, "-" * len(header)]
    for r in records:
        cells = "".join(f"{format_value(r.get(n), METRICS[n].digits):>9}" for n in names)
        lines.append(
            f"{r.get('model', '-'):<18}{r['dataset']:<12}{r['images']:>7}{cells}"
            f"{r['params']:>10,}{r['macs_720p'] / 1e9:>12.3f}"
        )
    return "\n".join(lines)


def format_value(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


class Evaluator:
    """Named datasets (benchmarks, the holdout), loaded once, and the metric table's scorers: what experiments
    score every trained model with."""

    def __init__(self, benchmarks: list[tuple[str, str]], scale: int, device: torch.device, pretrained_dir=None):
        self.sets = {name: load_dataset(path, scale) for name, path in benchmarks}
        self.scale, self.device = scale, device
        self.scorers = create_scorers(settings=MetricSettings(pretrained_dir, device))

    def model(self, path: Path, genotype: str | None = None) -> dict[str, dict]:
        """``{dataset: record}`` of a saved model (our checkpoint, or a TPSR state dict with ``genotype``)."""
        return self.network(load_generator(path, genotype))

    def network(self, model: nn.Module) -> dict[str, dict]:
        model = model.to(self.device)
        return {
            name: evaluate_pairs(model, pairs, name, self.scale, self.scorers, self.device).record()
            for name, pairs in self.sets.items()
        }

    def bicubic(self) -> dict[str, dict]:
        return {
            name: score_bicubic(pairs, name, self.scale, self.scorers).record() for name, pairs in self.sets.items()
        }
