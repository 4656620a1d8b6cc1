"""Export a generator to ONNX: dynamic batch, height and width; genotype and scale in the model's metadata.

darts-sr export --weights CKPT [--genotype {tpsr|PATH.json}] --out model.onnx [--opset 20]

Input ``lr``: float32 (B, 3, H, W) RGB in [0, 1]; output ``sr``: float32 (B, 3, sH, sW), about [0, 1], not clamped.
Before writing, ONNX Runtime's output is checked against PyTorch's on a random input. Needs the ``export`` extra
(``pip install darts_sr[export]``: onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from darts_sr.data import DataError
from darts_sr.io import CheckpointError
from darts_sr.nets.genotype import GenotypeError
from darts_sr.nets.networks import WeightsMismatch, generator_macs, generator_params, load_generator

try:
    from darts_sr.evaluation import export as onnx_export
except ModuleNotFoundError as e:  # onnx / onnxruntime: the `export` extra is not installed; --help still answers
    onnx_export, MISSING = None, e.name

log = logging.getLogger("export")
EXPORT_ERRORS = (onnx_export.ExportError,) if onnx_export else ()


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="our checkpoint, or a TPSR-format state dict (needs --genotype)")
    p.add_argument("--genotype", help="built-in name (tpsr) or genotype JSON; optional with our own checkpoints")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    default = onnx_export.DEFAULT_OPSET if onnx_export else None
    p.add_argument("--opset", type=int, default=default, help=f"ONNX opset (default {default or 'the newest'})")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    model = load_generator(args.weights, args.genotype)
    diff = onnx_export.export_onnx(model, args.out, opset=args.opset)
    g = model.genotype
    return (
        f"wrote {args.out}: x{g.scale}, {len(g.nodes)} nodes, {generator_params(g):,} params, "
        f"{generator_macs(g) / 1e9:.3f} GMACs@720p, opset {args.opset}; "
        f"ONNX Runtime vs PyTorch max |diff| {diff:.2g} on 0-255"
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv, prog)
    if onnx_export is None:
        print(
            f"error: ONNX export needs the export extra: pip install 'darts_sr[export]' (no module {MISSING})",
            file=sys.stderr,
        )
        return 2
    try:
        summary = run(args)
    except (DataError, GenotypeError, CheckpointError, WeightsMismatch, *EXPORT_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary)
    return 0
