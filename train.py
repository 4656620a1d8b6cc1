"""Retrain a genotype from scratch: pixel (L1) training, then perceptual-adversarial fine-tuning.

    python train.py --genotype runs/search/genotype_generator.json --data T91=../shared/datasets/T91/HR \\
        --val Set14=../shared/datasets/Set14 --out runs/retrain
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from darts_sr import cli, distributed, engine
from darts_sr.config import ConfigError, TrainConfig, load_config, to_dict
from darts_sr.data import parse_data_spec
from darts_sr.discriminator import load_discriminator_genotype
from darts_sr.genotype import load_generator_genotype, save_genotype
from darts_sr.train import Retrainer

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train_demo.yaml"
log = logging.getLogger("train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotype", help="built-in name (tpsr) or generator genotype JSON (not needed with --resume)")
    p.add_argument("--discriminator", default=None, help="reference or discriminator genotype JSON")
    p.add_argument("--config", type=Path, help="YAML preset (default: configs/train_demo.yaml)")
    p.add_argument("--data", action="append", metavar="NAME=PATH", help="training images; replaces data.train")
    p.add_argument("--val", metavar="NAME=PATH", help="validation images; replaces data.val")
    p.add_argument("--out", type=Path, help="run folder (default: runs/train-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. gan_phase.steps=0")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--seed", type=int, help="overrides run.seed")
    p.add_argument("--device", help="cpu or cuda; overrides run.device")
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set)
    if args.data:
        overrides.append("data.train=[" + ", ".join(f"'{d}'" for d in args.data) + "]")
    if args.val:
        overrides.append(f"data.val='{parse_data_spec(args.val)[1]}'")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    if args.discriminator:
        overrides.append(f"discriminator.genotype='{args.discriminator}'")
    return overrides


def build(args: argparse.Namespace, out: Path) -> Retrainer:
    if args.resume:
        # A resumed run continues under its own config and genotypes.
        if overrides_from(args) or args.config or args.genotype:
            raise ConfigError("--resume takes the run folder's own config and genotype; drop the other options")
        config = load_config(TrainConfig, out / "config.yaml")
        genotype = load_generator_genotype(out / "genotype_generator.json")
    else:
        if not args.genotype:
            raise ConfigError("--genotype is required (tpsr or a genotype JSON)")
        config = load_config(TrainConfig, args.config or DEFAULT_CONFIG, overrides_from(args))
        genotype = load_generator_genotype(args.genotype)
    d_genotype = load_discriminator_genotype(config.discriminator.genotype)
    distributed.init(config.run.device)
    run_dir = engine.prepare_run_folder(out, args.resume, args.overwrite)
    engine.add_file_logging(run_dir)
    if not args.resume:
        engine.save_config(run_dir, to_dict(config))
        save_genotype(genotype, run_dir / "genotype_generator.json")
    return Retrainer(config, genotype, d_genotype, run_dir, resume=args.resume)


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    if args.resume and args.out is None:
        print("error: --resume needs --out RUN_FOLDER", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")

    def train() -> None:
        summary = build(args, out).run()
        log.info(
            "done in %.0f s: %s; best pixel-phase val Y-PSNR %s; models %s",
            summary["wall_time_s"], out, summary["best_val_psnr_pixel"], ", ".join(summary["models"]),
        )  # fmt: skip

    return cli.run(train)


if __name__ == "__main__":
    sys.exit(main())
