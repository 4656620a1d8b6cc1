"""What the training entry points share: the mistakes a user can make, and how a run ends.

A user error (bad config, data, genotype, checkpoint, run folder, missing weights, a diverged run) is one line
``error: ...`` on stderr and exit status 2; SIGINT/SIGTERM is ``stopped: ...`` and 130, after a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from darts_sr import distributed
from darts_sr.config import ConfigError
from darts_sr.data import DataError
from darts_sr.genotype import GenotypeError
from darts_sr.io import CheckpointError
from darts_sr.networks import WeightsMismatch
from darts_sr.pretrained import OFFLINE_ENV, PretrainedWeightsMissing, ensure_weights
from darts_sr.runner import NonFiniteLoss, RunFolderError, StopRequested
from darts_sr.sampling import SamplingError

USER_ERRORS = (
    ConfigError, DataError, GenotypeError, CheckpointError, WeightsMismatch, PretrainedWeightsMissing, SamplingError,
    RunFolderError, NonFiniteLoss,
)  # fmt: skip


def setup_logging() -> None:
    # Under torchrun every worker would print the same lines; the other ranks speak only of problems.
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def run(body: Callable[[], None], stopped_hint: str = "") -> int:
    """Runs ``body`` and turns the way it ends into an exit status."""
    try:
        body()
    except StopRequested as e:
        print(f"stopped: {e}{stopped_hint}", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


def add_run_arguments(parser: argparse.ArgumentParser, example_key: str) -> None:
    """The options every training entry point shares: data, run folder, overrides, resume, seed, device, offline."""
    parser.add_argument("--data", action="append", metavar="NAME=PATH", help="training images; replaces data.train")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<command>-<time>)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=f"override, e.g. {example_key}"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--seed", type=int, help="overrides run.seed")
    parser.add_argument("--device", help="cpu or cuda; overrides run.device")
    add_offline_flag(parser)


def run_folder(args: argparse.Namespace, command: str) -> Path:
    """``--out``, or ``runs/<command>-<time>`` for a new run; resuming needs ``--out``."""
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out RUN_FOLDER")
    return args.out or Path("runs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")


def yaml_string(value: Any) -> str:
    """``value`` as a YAML single-quoted string, for a ``--set`` override."""
    return "'" + str(value).replace("'", "''") + "'"


def run_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` plus what ``add_run_arguments``'s shortcuts (``--data``, ``--seed``, ``--device``) stand for."""
    overrides = list(args.set)
    if args.data:
        overrides.append("data.train=[" + ", ".join(yaml_string(d) for d in args.data) + "]")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    return overrides


def add_offline_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offline",
        action="store_true",
        help=f"never download ImageNet weights (VGG19, AlexNet); same as {OFFLINE_ENV}=1",
    )


def apply_offline_flag(args: argparse.Namespace) -> None:
    # Through the environment, so every later lookup (and any process started from here) sees the same policy.
    if args.offline:
        os.environ[OFFLINE_ENV] = "1"


def prefetch_pretrained(losses: Iterable[Any] = (), lpips_dir: str | Path | None | bool = False) -> None:
    """Fetches the ImageNet weights a run will need before any run folder exists, as torchvision would on first
    use (unless offline): VGG19 for each loss section with a perceptual term (a failure is an error unless that
    section allows a random backbone), AlexNet for LPIPS when ``lpips_dir`` is not False (a failure only means
    ``lpips: null``, said once by the metric). Under torchrun rank 0 fetches while the others wait."""

    def fetch() -> None:
        for loss in losses:
            if loss.perceptual > 0:
                try:
                    ensure_weights("vgg19", loss.pretrained_dir, required=not loss.allow_random_backbone)
                except PretrainedWeightsMissing as e:
                    raise ConfigError(str(e)) from None  # a message every torchrun rank can rebuild
        if lpips_dir is not False:
            try:
                ensure_weights("alexnet", lpips_dir or None)
            except PretrainedWeightsMissing:
                pass  # LpipsMetric.create says why, once

    distributed.on_main(fetch, ConfigError)
