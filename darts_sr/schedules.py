"""Schedules over steps, pure functions of the step (nanoGPT's ``get_lr``): learning rates and the like."""

from __future__ import annotations

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine from ``start`` at step 0 to ``end`` at ``total`` (and after)."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def exponential(step: int, total: int, start: float, end: float) -> float:
    """Geometric from ``start`` at step 0 to ``end`` at ``total`` (and after): a temperature anneal."""
    return start * (end / start) ** (min(step, total) / max(1, total))
