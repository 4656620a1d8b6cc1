"""Architecture search. With no arguments: the built-in demo (generator stage, built-in images, CPU).

python train_search.py --config configs/div2k_x4.yaml --out runs/div2k --device cuda
python train_search.py --stage discriminator --generator runs/div2k/genotype_generator.json --out runs/div2k_d
python train_search.py --stage all --out runs/demo_all      # stage 1 then stage 2 in one run folder
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from darts_sr import cli, distributed, engine
from darts_sr.config import ConfigError, SearchConfig, load_config, to_dict
from darts_sr.search import GeneratorSearch
from darts_sr.search_discriminator import CHECKPOINT_NAME as D_CHECKPOINT_NAME
from darts_sr.search_discriminator import DiscriminatorSearch

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
log = logging.getLogger("train_search")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", type=Path, help=f"YAML preset (default: {DEMO_CONFIG.relative_to(DEMO_CONFIG.parents[1])})"
    )
    p.add_argument(
        "--stage",
        choices=["generator", "discriminator", "all"],
        default="generator",
        help="generator (stage 1), discriminator (stage 2, needs --generator) or all (1 then 2, one run folder)",
    )
    p.add_argument("--generator", metavar="PATH.json", help="stage 2: generator genotype (JSON or tpsr)")
    p.add_argument("--generator-weights", metavar="FILE", help="stage 2: generator checkpoint instead of pretraining")
    p.add_argument("--data", action="append", metavar="NAME=PATH", help="training images; replaces data.train")
    p.add_argument("--out", type=Path, help="run folder (default: runs/search-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optim.epochs=3")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--seed", type=int, help="overrides run.seed")
    p.add_argument("--device", help="cpu or cuda; overrides run.device")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    overrides = list(args.set)
    if args.data:
        overrides.append("data.train=[" + ", ".join(f"'{d}'" for d in args.data) + "]")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    for flag, key in ((args.generator, "generator"), (args.generator_weights, "generator_weights")):
        if flag is not None:
            overrides.append(f"stage2.{key}='" + str(flag).replace("'", "''") + "'")  # YAML single-quoted string
    if args.resume:
        # A resumed run continues under the config it started with; overrides would change its course.
        if overrides or args.config:
            raise ConfigError(
                "--resume takes the run folder's own config.yaml; "
                "drop --config, --set, --data, --seed, --device, --generator*"
            )
        return load_config(SearchConfig, args.out / "config.yaml")
    return load_config(SearchConfig, args.config or DEMO_CONFIG, overrides)


def check_stage(args: argparse.Namespace, config: SearchConfig) -> None:
    if args.stage == "generator" and (args.generator or args.generator_weights):
        raise ConfigError("--generator and --generator-weights are for --stage discriminator")
    if args.stage == "all" and config.stage2.generator is not None:
        raise ConfigError("--stage all searches the generator itself; drop --generator (stage2.generator)")
    if args.stage == "discriminator" and config.stage2.generator is None:
        raise ConfigError("--stage discriminator needs --generator PATH.json (a generator genotype, or tpsr)")


def prepare_run_folder(out: Path, stage: str, resume: bool, overwrite: bool) -> Path:
    """As ``engine.prepare_run_folder``; resuming needs the checkpoint of a stage this run includes."""
    if not resume:
        return engine.prepare_run_folder(out, resume=False, overwrite=overwrite)
    wanted = {"generator": [engine.CHECKPOINT_NAME], "discriminator": [D_CHECKPOINT_NAME]}
    names = wanted.get(stage, [engine.CHECKPOINT_NAME, D_CHECKPOINT_NAME])
    if not any((out / name).is_file() for name in names):
        raise engine.RunFolderError(f"{out}: nothing to resume (no {' or '.join(names)})")
    return out


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    if args.resume and args.out is None:
        print("error: --resume needs --out RUN_FOLDER", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
    return cli.run(lambda: search(args, out))


def search(args: argparse.Namespace, out: Path) -> None:
    config = resolve_config(args)
    check_stage(args, config)
    distributed.init(config.run.device)
    run_dir = prepare_run_folder(out, args.stage, args.resume, args.overwrite)
    engine.add_file_logging(run_dir)
    if not args.resume:
        engine.save_config(run_dir, to_dict(config))
    stage2_started = (run_dir / D_CHECKPOINT_NAME).is_file()
    if args.stage == "generator" or (args.stage == "all" and not (args.resume and stage2_started)):
        resume = args.resume and (run_dir / engine.CHECKPOINT_NAME).is_file()
        summary = GeneratorSearch(config, run_dir, resume=resume).run()
        log.info(
            "generator done in %.0f s: %s/genotype_generator.json, %d params, %.3f GMACs@720p (budget %.3f G)",
            summary["wall_time_s"], run_dir, summary["params"], summary["macs_720p"] / 1e9,
            summary["budget_macs_720p"] / 1e9,
        )  # fmt: skip
    if args.stage in ("discriminator", "all"):
        distributed.barrier()  # stage 1's genotype_generator.json, written by rank 0, is read by every rank
        summary = DiscriminatorSearch(config, run_dir, resume=args.resume and stage2_started).run()
        log.info(
            "discriminator done in %.0f s: %s/genotype_discriminator.json, %d params, %.3f GMACs@%d "
            "(all-conv_3x3 reference %.3f G); generator val Y-PSNR %s dB",
            summary["wall_time_s"], run_dir, summary["params"], summary["macs"] / 1e9, summary["macs_size"],
            summary["reference_macs"] / 1e9, summary["generator_val_psnr"],
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
