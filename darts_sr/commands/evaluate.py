"""Evaluate a generator on benchmark folders: Y-PSNR / Y-SSIM (TPSR protocol), LPIPS, NIQE, params, MACs@720p.

darts-sr evaluate --genotype tpsr --weights TPSR_NOGANX4.pt --data Set5=PATH/Set5 [--references]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from darts_sr import cli
from darts_sr.config import ConfigError
from darts_sr.data import DataError, load_dataset, parse_data_spec
from darts_sr.evaluation.metrics import MetricSettings, create_scorers
from darts_sr.evaluation.scoring import evaluate_pairs, format_table, score_bicubic, score_images
from darts_sr.io import CheckpointError, atomic_write_text
from darts_sr.nets.genotype import GenotypeError
from darts_sr.nets.networks import WeightsMismatch, generator_macs, generator_params, load_generator

log = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotype", help="built-in name (tpsr) or genotype JSON; optional with our own checkpoints")
    p.add_argument("--weights", required=True, help="our checkpoint, or a TPSR-format state dict")
    p.add_argument("--scale", type=int, help="upscaling factor; must match the genotype's (default: the genotype's)")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="benchmark folder (HR/, LR_bicubic/X<s>/), HR-only folder, lr:FOLDER, or builtin; repeatable",
    )
    p.add_argument("--synthesize-lr", action="store_true", help="ignore LR folders; make LR from HR by bicubic")
    p.add_argument("--save-images", type=Path, metavar="DIR", help="write SR images to DIR/<dataset>/<image>.png")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="write the records as JSON")
    p.add_argument(
        "--pretrained-dir",
        type=Path,
        help="folder holding ImageNet AlexNet weights for LPIPS (default: the torch hub cache)",
    )
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--references", action="store_true", help="also score bicubic upscaling and the HR images themselves"
    )
    cli.add_offline_flag(p)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    cli.apply_offline_flag(args)
    device = cli.resolve_device(args.device)
    model = load_generator(args.weights, args.genotype)
    genotype = model.genotype
    if args.scale is not None and args.scale != genotype.scale:
        raise GenotypeError(f"--scale {args.scale} does not match the genotype's scale {genotype.scale}")
    datasets = [parse_data_spec(spec) for spec in args.data]
    model.to(device)
    scorers = create_scorers(settings=MetricSettings(args.pretrained_dir, device))
    params, macs = generator_params(genotype), generator_macs(genotype)
    label = Path(args.weights).stem
    records = []
    for name, path in datasets:
        pairs = load_dataset(path, genotype.scale, synthesize_lr=args.synthesize_lr)
        save_dir = args.save_images / name if args.save_images else None
        if save_dir is None and all(p.gt is None for p in pairs):
            log.warning(
                "%s: no ground truth, so only no-reference metrics are scored and the SR images are not kept; "
                "add --save-images DIR, or use `darts-sr upscale`",
                name,
            )
        score = evaluate_pairs(model, pairs, name, genotype.scale, scorers, device, save_dir)
        records.append({"model": label, **score.record(), "params": params, "macs_720p": macs})
        if args.references:
            records += reference_records(pairs, name, genotype.scale, scorers)
    return records


def reference_records(pairs: list, dataset: str, scale: int, scorers: dict) -> list[dict]:
    """Bicubic upscaling of the LR images, and the HR images scored as if they were the output (the ceiling of a
    no-reference metric such as NIQE; PSNR is infinite)."""
    hr = score_images(((p.gt, p) for p in pairs if p.gt is not None), dataset, scale, scorers)
    scores = [("bicubic", score_bicubic(pairs, dataset, scale, scorers)), ("HR", hr)]
    return [{"model": model, **score.record(), "params": 0, "macs_720p": 0} for model, score in scores]


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv, prog)
    try:
        records = run(args)
    except (DataError, GenotypeError, CheckpointError, WeightsMismatch, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(records))
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=2) + "\n")
    return 0
