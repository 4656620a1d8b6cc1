"""Schedules over steps, pure functions of the step (nanoGPT's ``get_lr``): learning rates and the like."""

from __future__ import annotations

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine from ``start`` at step 0 to ``end`` at ``total`` (and after)."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def exponential(step: int, total: int, start: float, end: float) -> float:
    """Geometric from ``start`` at step 0 to ``end`` at ``total`` (and after): a temperature anneal."""
    return start * (end / start) ** (min(step, total) / max(1, total))


def warmup_cosine(step: int, total: int, warmup: int, start: float, end: float) -> float:
    """Linear from 0 to ``start`` over ``warmup`` steps, then ``cosine`` to ``end`` over the rest."""
    if step < warmup:
        return start * (step + 1) / warmup
    return cosine(step - warmup, total - warmup, start, end)


def ema_decay(updates: int, decay: float) -> float:
    """The moving average's decay after ``updates`` updates: ramped up as (1 + n) / (10 + n) (TensorFlow's
    ``num_updates`` rule), so early averages are not dominated by the random initialisation."""
    return min(decay, (1 + updates) / (10 + updates))
