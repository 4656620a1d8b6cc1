"""Architecture search. With no arguments: the built-in demo (generator stage, built-in images, CPU).

python train_search.py --config configs/div2k_x4.yaml --out runs/div2k --device cuda
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from darts_sr import engine
from darts_sr.config import ConfigError, SearchConfig, load_config, to_dict
from darts_sr.data import DataError
from darts_sr.genotype import GenotypeError
from darts_sr.io import CheckpointError
from darts_sr.pretrained import PretrainedWeightsMissing
from darts_sr.search import GeneratorSearch

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
log = logging.getLogger("train_search")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", type=Path, help=f"YAML preset (default: {DEMO_CONFIG.relative_to(DEMO_CONFIG.parents[1])})"
    )
    p.add_argument("--stage", choices=["generator"], default="generator", help="which supernet to search")
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
    if args.resume:
        # A resumed run continues under the config it started with; overrides would change its course.
        if overrides or args.config:
            raise ConfigError("--resume takes the run folder's own config.yaml; drop --config/--set/--data/--seed")
        return load_config(SearchConfig, args.out / "config.yaml")
    return load_config(SearchConfig, args.config or DEMO_CONFIG, overrides)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.resume and args.out is None:
        print("error: --resume needs --out RUN_FOLDER", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
    try:
        config = resolve_config(args)
        run_dir = engine.prepare_run_folder(out, args.resume, args.overwrite)
        engine.add_file_logging(run_dir)
        if not args.resume:
            engine.save_config(run_dir, to_dict(config))
        search = GeneratorSearch(config, run_dir, resume=args.resume)
        summary = search.run()
    except engine.StopRequested as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 130
    except (ConfigError, DataError, GenotypeError, CheckpointError, PretrainedWeightsMissing,
            engine.RunFolderError, engine.NonFiniteLoss) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(
        "done in %.0f s: %s/genotype_generator.json, %d params, %.3f GMACs@720p (budget %.3f G)",
        summary["wall_time_s"], run_dir, summary["params"], summary["macs_720p"] / 1e9,
        summary["budget_macs_720p"] / 1e9,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
