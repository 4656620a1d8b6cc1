"""Architecture search. With no arguments: the built-in demo (generator stage, built-in images, CPU).

darts-sr search --config div2k_x4 --data DIV2K=/path/DIV2K_train_HR --out runs/div2k --device cuda
darts-sr search --stage discriminator --generator runs/div2k/genotype_generator.json --out runs/div2k_d
darts-sr search --stage all --out runs/demo_all      # stage 1 then stage 2 in one run folder
darts-sr search --stage discriminator --method race --generator tpsr --config race_cpu --out runs/race_cpu
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from darts_sr import cli, distributed, run_files
from darts_sr.config import ConfigError, SearchConfig, load_config, to_dict
from darts_sr.evaluation.scoring import format_value
from darts_sr.search import race as discriminator_race
from darts_sr.search.discriminator_stage import DiscriminatorSearch
from darts_sr.search.generator_stage import GeneratorSearch
from darts_sr.training.runner import add_file_logging, prepare_run_folder, save_config

DEFAULT_PRESET = "demo"
log = logging.getLogger("train_search")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_argument(p, DEFAULT_PRESET)
    p.add_argument(
        "--stage",
        choices=["generator", "discriminator", "all"],
        default="generator",
        help="generator (stage 1), discriminator (stage 2, needs --generator) or all (1 then 2, one run folder)",
    )
    p.add_argument("--generator", metavar="PATH.json", help="stage 2: generator genotype (JSON or tpsr)")
    p.add_argument("--generator-weights", metavar="FILE", help="stage 2: generator checkpoint instead of pretraining")
    p.add_argument(
        "--method",
        choices=["search", "race"],
        help="stage 2: search (the supernet) or race (successive halving over discrete discriminators, "
        "darts_sr.search.race); overrides stage2.method (default search)",
    )
    cli.add_run_arguments(p, "optim.epochs=3")
    return p.parse_args(argv)


def load_search_config(args: argparse.Namespace) -> SearchConfig:
    overrides = cli.run_overrides(args)
    for flag, key in ((args.generator, "generator"), (args.generator_weights, "generator_weights")):
        if flag is not None:
            overrides.append(f"stage2.{key}={cli.yaml_string(flag)}")
    if args.method is not None:
        overrides.append(f"stage2.method={args.method}")
    if args.resume:
        # A resumed run continues under the config it started with; overrides would change its course.
        if overrides or args.config:
            raise ConfigError(
                "--resume takes the run folder's own config.yaml; "
                "drop --config, --set, --data, --seed, --device, --generator*, --method"
            )
        return load_config(SearchConfig, args.out / run_files.CONFIG)
    return load_config(SearchConfig, cli.resolve_config(args.config or DEFAULT_PRESET), overrides)


def check_stage(args: argparse.Namespace, config: SearchConfig) -> None:
    if args.stage == "generator" and (args.generator or args.generator_weights or args.method):
        raise ConfigError("--generator, --generator-weights and --method are for --stage discriminator")
    if args.stage == "all" and config.stage2.generator is not None:
        raise ConfigError("--stage all searches the generator itself; drop --generator (stage2.generator)")
    if args.stage == "discriminator" and config.stage2.generator is None:
        raise ConfigError("--stage discriminator needs --generator PATH.json (a generator genotype, or tpsr)")
    if args.stage != "generator" and config.stage2.method == "race":
        discriminator_race.check_race_config(config, args.stage)


def stage_checkpoints(stage: str, method: str = "search") -> tuple[str, ...]:
    """The checkpoints a run of ``stage`` may resume from (a race's is its log: finished fine-tunes are reused)."""
    g = run_files.GENERATOR_SEARCH.checkpoint
    d = run_files.DISCRIMINATOR_RACE if method == "race" else run_files.DISCRIMINATOR_SEARCH.checkpoint
    return {"generator": (g,), "discriminator": (d,)}.get(stage, (g, d))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: search(args))


def search(args: argparse.Namespace) -> None:
    out = cli.run_folder(args, "search")
    cli.apply_offline_flag(args)
    config = load_search_config(args)
    check_stage(args, config)
    cli.check_run_device(config.run, from_flag=bool(args.device))
    distributed.init(config.run.device)
    losses = [config.loss]
    if args.stage != "generator" and config.stage2.method == "search":  # alpha_D's objective may have a VGG term
        objective = config.stage2.objective
        losses.append(replace(objective, pretrained_dir=objective.pretrained_dir or config.loss.pretrained_dir))
    cli.prefetch_pretrained(losses)
    checkpoints = stage_checkpoints(args.stage, config.stage2.method)
    run_dir = prepare_run_folder(out, args.resume, args.overwrite, checkpoints)
    add_file_logging(run_dir)
    if not args.resume:
        save_config(run_dir, to_dict(config))
    stage2_started = (run_dir / stage_checkpoints("discriminator", config.stage2.method)[0]).is_file()
    if args.stage == "generator" or (args.stage == "all" and not (args.resume and stage2_started)):
        resume = args.resume and (run_dir / run_files.GENERATOR_SEARCH.checkpoint).is_file()
        summary = GeneratorSearch(config, run_dir, resume=resume).run()
        if summary["unit"] == "latency":
            landed = f"{summary['derived_ms']:.3f} ms predicted (target {summary['target_ms']:.3f} ms)"
        else:
            landed = f"(target {summary['target_macs_720p'] / 1e9:.3f} G)"
        log.info(
            "generator done in %.0f s: %s/%s, %d params, %.3f GMACs@720p %s",
            summary["wall_time_s"],
            run_dir,
            run_files.GENERATOR_GENOTYPE,
            summary["params"],
            summary["macs_720p"] / 1e9,
            landed,
        )
    if args.stage in ("discriminator", "all"):
        distributed.barrier()  # stage 1's genotype_generator.json, written by rank 0, is read by every rank
        if config.stage2.method == "race":
            result = discriminator_race.race(config, run_dir, args.stage)
            pixel = result["pixel"]["scores"]
            log.info(
                "discriminator race done in %.0f s: %s/%s is %s; %s: pixel model val Y-PSNR %s dB, floor %.2f dB",
                result["wall_time_s"],
                run_dir,
                run_files.DISCRIMINATOR_GENOTYPE,
                result["winner"],
                run_files.DISCRIMINATOR_RACE,
                format_value(pixel["psnr_y"], 2),
                result["psnr_floor"],
            )
            return
        summary = DiscriminatorSearch(config, run_dir, resume=args.resume and stage2_started).run()
        log.info(
            "discriminator done in %.0f s: %s/%s, %d params, %.3f GMACs@%d "
            "(all-conv_3x3 reference %.3f G); generator val Y-PSNR %s dB",
            summary["wall_time_s"],
            run_dir,
            run_files.DISCRIMINATOR_GENOTYPE,
            summary["params"],
            summary["macs"] / 1e9,
            summary["macs_size"],
            summary["reference_macs"] / 1e9,
            format_value(summary["generator_val_psnr"], 2),
        )
