"""Inference: upscale images of any size with memory bounded by the tile size.

(Not ``darts_sr/upscale.py``: a submodule of that name would shadow the function ``darts_sr.upscale``.)

``upscale(model, image)`` is the library's one-call inference: a uint8 (H, W, 3) array, an image file or a PIL image
in, a quantised uint8 (sH, sW, 3) array out (the pixels ``darts-sr evaluate --save-images`` writes).
``upscale_tiled`` works on float tensors in [0, 1], (B, 3, H, W) RGB, as everywhere in darts_sr.

A generator's output pixel depends only on LR pixels within its receptive radius (``receptive_radius``), so tiles
that carry at least that many LR pixels of context on every side they share with a neighbour give the same output as
one pass over the whole image, up to float rounding.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch
from torch import Tensor, nn

from darts_sr.data import load_image, to_tensor, to_uint8
from darts_sr.nets.genotype import GeneratorGenotype
from darts_sr.nets.networks import upsample_factors
from operations import build_op

log = logging.getLogger(__name__)

# Context for a model without a genotype to compute it from: the receptive radius of the deepest generator the
# default search space allows (ten chained conv_7x7 at x4: stem 1 + 10 * 3 + upsampler 2 = 33 LR pixels).
FALLBACK_OVERLAP = 33

STEM_RADIUS = 1  # the stem is a 3x3 conv

# LR pixels per tile side for upscale() and `darts-sr upscale`: a 256x256 core plus the context is a few tens of MB of
# activations for the default search space's generators, and large enough that the context costs little.
DEFAULT_TILE = 256


def upscale(
    model: nn.Module,
    image: np.ndarray | str | os.PathLike,
    tile: int | None = DEFAULT_TILE,
    overlap: int | None = None,
    scale: int | None = None,
) -> np.ndarray:
    """Super-resolves one image: uint8 (H, W, 3) RGB array, image file or PIL image -> uint8 (sH, sW, 3).

    Runs on the model's device, tile by tile (``upscale_tiled``: ``tile`` LR pixels per side, None for one pass over
    the whole image); the output is clamped and rounded as evaluation does, and equals the whole-image output up to
    float rounding. ``scale`` is needed only for a model without a generator genotype.
    """
    if isinstance(image, str | os.PathLike):
        image = load_image(image)
    elif not isinstance(image, np.ndarray) and hasattr(image, "convert"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    genotype = getattr(model, "genotype", None)
    if scale is None:
        if not isinstance(genotype, GeneratorGenotype):
            raise ValueError("the model has no generator genotype to take the scale from; pass scale=")
        scale = genotype.scale
    return to_uint8(upscale_tiled(model, to_tensor(image), scale, tile=tile, overlap=overlap))


def op_radius(op: str) -> int:
    """LR pixels an op reaches on each side: ``dilation * (k - 1) / 2`` summed over its convs, which run in series
    in every op of the table (conv + PReLU; depthwise k x k + 1 x 1)."""
    radius = 0
    for module in build_op(op, 1).modules():
        if isinstance(module, nn.Conv2d):
            radius += max(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
    return radius


def receptive_radius(genotype: GeneratorGenotype) -> int:
    """How many LR pixels on each side of an output pixel's LR position ``floor(y / s), floor(x / s)`` can change it.

    The stem's 3x3 conv (1), the ops along the deepest path from the stem to an output, then one 3x3 conv per
    upsampler stage: a radius-1 conv at ``f`` times the LR resolution reaches ``ceil(1 / f) = 1`` LR pixel further.
    """
    reach = [STEM_RADIUS]  # reach[k]: radius of node k's output; 0 is the stem
    for node in genotype.nodes:
        reach.append(reach[node.input] + op_radius(node.op))
    body = max(reach[k] for k in genotype.outputs)
    upsampler, factor = 0, 1
    for f in upsample_factors(genotype.scale):
        upsampler += math.ceil(1 / factor)
        factor *= f
    return body + upsampler


def upscale_tiled(
    model: nn.Module, lr: Tensor, scale: int, tile: int | None = 256, overlap: int | None = None
) -> Tensor:
    """Runs ``model`` ((B, 3, h, w) -> (B, 3, s*h, s*w)) over ``lr`` (B, 3, H, W) in [0, 1] tile by tile.

    ``tile`` is the largest LR block a tile contributes to the output (its core); the model sees the core plus up to
    ``overlap`` LR pixels of context on each side, so memory is bounded by ``(tile + 2 * overlap) ** 2`` pixels per
    image. Cores split the image evenly (sizes differ by at most one pixel), and each output pixel comes from the
    tile whose core holds it, i.e. where it lies farthest from the tile's border: the context is cropped away.
    ``overlap=None`` takes ``receptive_radius(model.genotype)`` when the model has a generator genotype (then the
    result equals one whole-image pass up to float rounding), else ``FALLBACK_OVERLAP``. ``tile=None``, or an image
    no larger than one tile, runs whole.

    Runs under ``torch.no_grad()`` with the model in eval mode (its mode is restored afterwards), tiles on the
    model's device and dtype; returns (B, 3, s*H, s*W) on ``lr``'s device.
    """
    _check_arguments(lr, scale, tile, overlap)
    genotype = getattr(model, "genotype", None)
    needed = receptive_radius(genotype) if isinstance(genotype, GeneratorGenotype) else None
    if overlap is None:
        overlap = FALLBACK_OVERLAP if needed is None else needed
    elif needed is not None and overlap < needed and tile is not None:
        log.warning("overlap %d < receptive radius %d of the model: seams between tiles may show", overlap, needed)
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (lr.device, lr.dtype)

    b, _, h, w = lr.shape
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if tile is None or (h <= tile and w <= tile):
                return _run(model, lr, scale, device, dtype).to(lr.device)
            out = None
            for y0, y1 in _cores(h, tile):
                for x0, x1 in _cores(w, tile):
                    # The core plus up to ``overlap`` pixels of context on each side, clipped to the image.
                    py0, py1 = max(0, y0 - overlap), min(h, y1 + overlap)
                    px0, px1 = max(0, x0 - overlap), min(w, x1 + overlap)
                    sr = _run(model, lr[:, :, py0:py1, px0:px1], scale, device, dtype)  # (B, 3, s*ph, s*pw)
                    if out is None:
                        out = torch.empty((b, 3, scale * h, scale * w), dtype=sr.dtype, device=lr.device)
                    core = sr[:, :, scale * (y0 - py0) : scale * (y1 - py0), scale * (x0 - px0) : scale * (x1 - px0)]
                    out[:, :, scale * y0 : scale * y1, scale * x0 : scale * x1] = core.to(lr.device)
            return out
    finally:
        model.train(was_training)


def _cores(size: int, tile: int) -> list[tuple[int, int]]:
    """``ceil(size / tile)`` consecutive ``[start, end)`` spans covering ``0..size``, each at most ``tile`` long."""
    n = -(-size // tile)
    bounds = [i * size // n for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _run(model: nn.Module, lr: Tensor, scale: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    b, _, h, w = lr.shape
    sr = model(lr.to(device=device, dtype=dtype))
    if tuple(sr.shape) != (b, 3, scale * h, scale * w):
        raise ValueError(
            f"the model maps a ({b}, 3, {h}, {w}) input to {tuple(sr.shape)}, not ({b}, 3, {scale * h}, {scale * w}); "
            f"is scale={scale} right for it?"
        )
    return sr


def _check_arguments(lr: Tensor, scale: int, tile: int | None, overlap: int | None) -> None:
    if not isinstance(lr, Tensor) or lr.dim() != 4 or lr.shape[1] != 3 or not lr.is_floating_point():
        what = f"a {lr.dtype} tensor of shape {tuple(lr.shape)}" if isinstance(lr, Tensor) else type(lr).__name__
        raise ValueError(f"lr must be a float (B, 3, H, W) tensor in [0, 1], got {what}")
    if lr.shape[0] == 0 or lr.shape[2] == 0 or lr.shape[3] == 0:
        raise ValueError(f"lr is empty: shape {tuple(lr.shape)}")
    if not _is_int(scale) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if tile is not None and (not _is_int(tile) or tile < 1):
        raise ValueError(f"tile must be a positive integer (LR pixels) or None for the whole image, got {tile!r}")
    if overlap is not None and (not _is_int(overlap) or overlap < 0):
        raise ValueError(f"overlap must be a non-negative integer (LR pixels) or None for automatic, got {overlap!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
