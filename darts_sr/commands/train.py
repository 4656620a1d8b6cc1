"""Retrain a genotype from scratch: pixel (L1) training, then perceptual-adversarial fine-tuning.

darts-sr train --genotype runs/search/genotype_generator.json --data T91=../shared/datasets/T91/HR \\
    --val Set14=../shared/datasets/Set14 --out runs/retrain
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from darts_sr import cli, distributed, run_files
from darts_sr.config import ConfigError, TrainConfig, load_config, to_dict
from darts_sr.data import parse_data_spec
from darts_sr.evaluation.scoring import format_value
from darts_sr.nets.discriminator import load_discriminator_genotype
from darts_sr.nets.genotype import load_generator_genotype, save_genotype
from darts_sr.nets.networks import load_generator
from darts_sr.training.retrain import Retrainer
from darts_sr.training.runner import add_file_logging, prepare_run_folder, save_config

DEFAULT_PRESET = "train_demo"
log = logging.getLogger("train")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotype", help="built-in name (tpsr) or generator genotype JSON (not needed with --resume)")
    p.add_argument("--discriminator", default=None, help="reference or discriminator genotype JSON")
    cli.add_config_argument(p, DEFAULT_PRESET)
    p.add_argument("--val", metavar="NAME=PATH", help="validation images; replaces data.val")
    p.add_argument(
        "--init",
        type=Path,
        metavar="WEIGHTS",
        help="start from a pixel-trained generator (our model_pixel.pt or a TPSR-format state dict, e.g. "
        "TPSR_NOGANX4.pt) and run only the GAN phase",
    )
    cli.add_run_arguments(p, "gan_phase.steps=0")
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> list[str]:
    overrides = cli.run_overrides(args)
    if args.val:
        overrides.append(f"data.val={cli.yaml_string(parse_data_spec(args.val)[1])}")
    if args.discriminator:
        overrides.append(f"discriminator.genotype={cli.yaml_string(args.discriminator)}")
    return overrides


def build(args: argparse.Namespace, out: Path) -> Retrainer:
    if args.resume:
        # A resumed run continues under its own config and genotypes.
        if overrides_from(args) or args.config or args.genotype or args.init:
            raise ConfigError("--resume takes the run folder's own config and genotype; drop the other options")
        config = load_config(TrainConfig, out / run_files.CONFIG)
        genotype = load_generator_genotype(out / run_files.GENERATOR_GENOTYPE)
    else:
        if not args.genotype:
            raise ConfigError("--genotype is required (tpsr or a genotype JSON)")
        overrides = overrides_from(args) + (["pixel_phase.steps=0"] if args.init else [])
        config = load_config(TrainConfig, cli.resolve_config(args.config or DEFAULT_PRESET), overrides)
        genotype = load_generator_genotype(args.genotype)
        if args.init:
            load_generator(args.init, genotype)  # refused now, naming the file, if it does not fit the genotype
            if config.gan_phase.steps < 1:
                raise ConfigError("--init runs only the GAN phase: gan_phase.steps must be > 0")
    d_genotype = load_discriminator_genotype(config.discriminator.genotype)
    cli.check_run_device(config.run, from_flag=bool(args.device))
    distributed.init(config.run.device)
    phases = [config.pixel_phase, config.gan_phase]
    cli.prefetch_pretrained([p.loss for p in phases if p.steps], lpips_dir=config.gan_phase.loss.pretrained_dir)
    run_dir = prepare_run_folder(out, args.resume, args.overwrite)
    add_file_logging(run_dir)
    if not args.resume:
        save_config(run_dir, to_dict(config))
        save_genotype(genotype, run_dir / run_files.GENERATOR_GENOTYPE)
    # On resume the checkpoint holds the weights; the start weights' hash stays in the summary of the first start.
    init = None if args.resume else args.init
    return Retrainer(config, genotype, d_genotype, run_dir, resume=args.resume, generator_weights=init)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)

    def train() -> None:
        cli.apply_offline_flag(args)
        out = cli.run_folder(args, "train")
        summary = build(args, out).run()
        log.info(
            "done in %.0f s: %s; best pixel-phase val Y-PSNR %s dB; models %s",
            summary["wall_time_s"],
            out,
            format_value(summary["best_val_psnr_pixel"], 2),
            ", ".join(summary["models"]),
        )

    return cli.run(train)
