"""What the entry points (``darts-sr <command>``) share: the mistakes a user can make, and how a run ends.

A user error (bad config, data, genotype, checkpoint, run folder, device, missing weights, a diverged run) is one
line ``error: ...`` on stderr and exit status 2; SIGINT/SIGTERM is ``stopped: ...`` and 130, after a checkpoint.
Config presets are found by name (``--config demo``) in the package's ``configs`` folder, or by path.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from darts_sr import distributed
from darts_sr.config import ConfigError
from darts_sr.errors import StopRequested, UserError
from darts_sr.pretrained import OFFLINE_ENV, PretrainedWeightsMissing, ensure_weights

# Every user error of the package derives from errors.UserError (config, data, genotype, checkpoint, weights,
# sampling, run folder, a diverged run, an experiment's records).
USER_ERRORS = (UserError,)


def _preset_dirs() -> tuple[Path, ...]:
    # darts_sr/configs in an installed wheel (pyproject.toml maps the repository's configs/ there); the
    # repository's configs/ itself in a source checkout or an editable install.
    package = Path(__file__).resolve().parent
    checkout = package.parent
    return (package / "configs", *((checkout / "configs",) if (checkout / "pyproject.toml").is_file() else ()))


PRESET_DIRS = _preset_dirs()


def preset_names() -> list[str]:
    """The names ``--config`` accepts besides paths, e.g. ``demo``, ``div2k_x4``."""
    return sorted({p.stem for d in PRESET_DIRS if d.is_dir() for p in d.glob("*.yaml")})


def resolve_config(spec: str | os.PathLike) -> Path:
    """``--config``'s value as a file: an existing path, else a preset by name (``demo``, ``demo.yaml``, and
    ``configs/demo.yaml`` from any folder)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")):
        for folder in PRESET_DIRS:
            for candidate in (folder / f"{path.name}.yaml", folder / path.name):
                if candidate.suffix == ".yaml" and candidate.is_file():
                    return candidate
    raise ConfigError(f"{spec}: no such config file or preset (presets: {', '.join(preset_names())})")


def resolve_device(spec: str, what: str = "--device") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a device this machine has;
    anything else is a ``ConfigError`` naming ``what``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{what} {spec!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {spec}: CUDA is not available here (torch {torch.__version__}); use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what} {spec}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise ConfigError(f"{what} {spec}: unsupported device type; use auto, cpu, cuda or cuda:N")
    return device


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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override, e.g. {example_key}")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--seed", type=int, help="overrides run.seed")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides run.device")
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
            with contextlib.suppress(PretrainedWeightsMissing):  # LpipsMetric.create says why, once
                ensure_weights("alexnet", lpips_dir or None)

    distributed.on_main(fetch, ConfigError)


def add_config_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--config",
        metavar="PRESET|FILE.yaml",
        help=f"a preset by name ({', '.join(preset_names())}) or a YAML file (default: {default})",
    )


def check_run_device(run: Any, from_flag: bool) -> None:
    """Checks a config's ``run.device`` against this machine and turns ``auto`` into what it means here, before any
    run folder exists; ``from_flag`` says the value came from ``--device`` (for the error message)."""
    device = resolve_device(run.device, "--device" if from_flag else "run.device")
    if run.device == "auto":
        run.device = device.type
