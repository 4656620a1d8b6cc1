"""darts_sr: differentiable architecture search for tiny perceptual super-resolution.

Image range rule for the whole package: image tensors are float in [0, 1], shaped (B, 3, H, W),
RGB. Networks that need another range (TPSR's 0-255 mean shift) convert once, inside the model.
Images on disk and in ``data`` are uint8 arrays (H, W, 3).

The library API, for inference without the command line::

    from darts_sr import load_generator, upscale
    model = load_generator("TPSR_NOGANX4.pt", "tpsr")  # our checkpoints carry their genotype: no second argument
    sr = upscale(model, "photo.png")                     # uint8 (H, W, 3), tiled: memory bounded for any size

The names below are imported on first use, so ``import darts_sr`` (and ``darts-sr --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Generator", "GeneratorGenotype", "__version__", "load_generator", "load_generator_genotype", "upscale"]

_EXPORTS = {
    "Generator": "darts_sr.nets.networks",
    "load_generator": "darts_sr.nets.networks",
    "GeneratorGenotype": "darts_sr.nets.genotype",
    "load_generator_genotype": "darts_sr.nets.genotype",
    "upscale": "darts_sr.evaluation.inference",
}

if TYPE_CHECKING:
    from darts_sr.evaluation.inference import upscale
    from darts_sr.nets.genotype import GeneratorGenotype, load_generator_genotype
    from darts_sr.nets.networks import Generator, load_generator


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'darts_sr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
