"""Export a generator to ONNX: dynamic batch, height and width; genotype and scale in the model's metadata.

python export.py --weights CKPT [--genotype {tpsr|PATH.json}] --out model.onnx [--opset 20]

Input ``lr``: float32 (B, 3, H, W) RGB in [0, 1]; output ``sr``: float32 (B, 3, sH, sW), about [0, 1], not clamped.
Before writing, ONNX Runtime's output is checked against PyTorch's on a random input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from darts_sr.data import DataError
from darts_sr.export import DEFAULT_OPSET, ExportError, export_onnx
from darts_sr.genotype import GenotypeError, load_generator_genotype
from darts_sr.io import CheckpointError
from darts_sr.networks import WeightsMismatch, generator_macs, generator_params, load_generator

log = logging.getLogger("export")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="our checkpoint, or a TPSR-format state dict (needs --genotype)")
    p.add_argument("--genotype", help="built-in name (tpsr) or genotype JSON; optional with our own checkpoints")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    genotype = load_generator_genotype(args.genotype) if args.genotype else None
    model = load_generator(args.weights, genotype)
    diff = export_onnx(model, args.out, opset=args.opset)
    g = model.genotype
    return (
        f"wrote {args.out}: x{g.scale}, {len(g.nodes)} nodes, {generator_params(g):,} params, "
        f"{generator_macs(g) / 1e9:.3f} GMACs@720p, opset {args.opset}; "
        f"ONNX Runtime vs PyTorch max |diff| {diff:.2g} on 0-255"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        summary = run(args)
    except (DataError, GenotypeError, CheckpointError, WeightsMismatch, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
