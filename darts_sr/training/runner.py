"""The run machinery that search, stage 2 and retraining share: run folders, seeding, checkpoints, the step loop.

:class:`Run` is the skeleton (BasicSR's ``BaseModel`` is the idea): it owns the device, the data generator, the
non-finite guard, the signal stop, the step counter, the history, the wall time, the checkpoint keys every stage
has, ``run()`` and the summary file. A stage subclasses it and adds only what differs: its networks and
optimizers (``stage_state`` / ``load_stage_state``), one step (``one_step``) and its summary (``stage_summary``).

Checkpoints are step-exact (weights, optimizers, RNG states, history), written atomically, so an interrupted run
resumes to the same result as an uninterrupted one. SIGINT/SIGTERM are turned into a flag checked between
steps: a step is never cut in half, a checkpoint is written, and :class:`StopRequested` ends the run.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from darts_sr import distributed, run_files
from darts_sr.config import ConfigError, RunConfig, from_dict, to_dict
from darts_sr.errors import StopRequested, UserError
from darts_sr.io import atomic_torch_save, atomic_write_text, load_checkpoint
from darts_sr.run_files import StageFiles
from darts_sr.training.tensorboard_logs import Writer, summary_writer

log = logging.getLogger(__name__)


class RunFolderError(UserError, ValueError):
    """A run folder that cannot be used as asked."""


class NonFiniteLoss(UserError, RuntimeError):
    """Too many consecutive non-finite losses; the message names the step and the term."""


# --- the run folder ---------------------------------------------------------------------------------------------


def prepare_run_folder(
    path: Path, resume: bool, overwrite: bool, checkpoints: tuple[str, ...] = (run_files.GENERATOR_SEARCH.checkpoint,)
) -> Path:
    """Creates ``path``; refuses a non-empty one unless resuming or overwriting. Resuming needs one of
    ``checkpoints`` in it. Under torchrun rank 0 decides and creates, and every rank gets its answer."""
    return distributed.on_main(lambda: _prepare_run_folder(Path(path), resume, overwrite, checkpoints), RunFolderError)


def _prepare_run_folder(path: Path, resume: bool, overwrite: bool, checkpoints: tuple[str, ...]) -> Path:
    if resume:
        if not any((path / name).is_file() for name in checkpoints):
            raise RunFolderError(f"{path}: nothing to resume (no {' or '.join(checkpoints)})")
        return path
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunFolderError(f"{path}: run folder is not empty; pass --resume to continue it or --overwrite")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_file_logging(run_dir: Path) -> logging.Handler | None:
    if not distributed.is_main():
        return None
    handler = logging.FileHandler(Path(run_dir) / run_files.LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / run_files.CONFIG, yaml.safe_dump(config, sort_keys=False))


# --- randomness ---------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> torch.Generator:
    """Seeds the global generators and returns a dedicated generator for data sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(data_generator: torch.Generator) -> dict[str, Tensor]:
    return {"data": data_generator.get_state(), "torch": torch.get_rng_state()}


def restore_rng_state(data_generator: torch.Generator, state: dict[str, Tensor]) -> None:
    data_generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])


def draw_batch(sampler: Any, batch_size: int, generator: torch.Generator, device: torch.device) -> list[Tensor]:
    """``[lq, gt]`` on ``device``: this process's shard of the step's batch (all of it without torchrun)."""
    return [t.to(device) for t in sampler.sample(batch_size, generator, *distributed.shard())]


# --- guards -------------------------------------------------------------------------------------------------------


class NonFiniteGuard:
    """Counts consecutive non-finite losses; raises after ``limit`` of them."""

    def __init__(self, limit: int):
        self.limit, self.consecutive = limit, 0

    def ok(self, step: int, losses: dict[str, Tensor | float]) -> bool:
        losses = {k: v.detach() if isinstance(v, Tensor) else v for k, v in losses.items()}
        bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
        # Under torchrun every rank skips together, or the replicas would part ways.
        if distributed.any_rank(bool(bad)) and not bad:
            bad = ["a loss term on another rank"]
        if not bad:
            self.consecutive = 0
            return True
        self.consecutive += 1
        log.warning("step %d: non-finite %s; step skipped (%d in a row)", step, ", ".join(bad), self.consecutive)
        if self.consecutive >= self.limit:
            raise NonFiniteLoss(
                f"step {step}: loss term {bad[0]} was non-finite {self.consecutive} steps in a row; "
                "stopped, the last checkpoint is the last good state"
            )
        return False


class SignalStop:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a step is never cut in half."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> SignalStop:
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        self.signum = signum


def replica_report(modules: list[nn.Module | None]) -> dict[str, float | int]:
    """For the summary: how many processes trained, and how far any replica's parameters are from rank 0's."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    return {"world_size": distributed.world_size(), "replica_max_abs_diff": distributed.max_replica_difference(params)}


# --- the skeleton -------------------------------------------------------------------------------------------------


class Run(abc.ABC):
    """One stage of work in a run folder; ``run()`` steps it to ``total_steps`` and returns its summary.

    Subclasses set ``kind`` (the checkpoint's tag), ``files``, ``label`` (progress bar) and ``total_steps``, call
    ``super().__init__`` first (it seeds, so everything built afterwards is reproducible) and ``self.resume()``
    last when resuming, and implement ``one_step``, ``stage_state``, ``load_stage_state`` and ``stage_summary``.
    """

    kind: ClassVar[str]
    files: ClassVar[StageFiles]
    label: ClassVar[str]
    # Config sections a resume may change: where and how loudly it runs, never what it trains.
    free_on_resume: ClassVar[tuple[str, ...]] = ("run",)

    def __init__(self, config: Any, run_dir: Path, run: RunConfig):
        self.cfg, self.run_dir = config, Path(run_dir)
        self.device = distributed.init(run.device)
        self.data_generator = seed_everything(run.seed)
        self.guard = NonFiniteGuard(run.max_bad_steps)
        self.stop = SignalStop()
        self.step, self.total_steps, self.history = 0, 0, []
        self.wall_before, self.started = 0.0, time.time()
        self.perceptual_pretrained: bool | None = None  # set by stages with a perceptual term

    # --- what a stage adds -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def one_step(self, writer: Writer) -> dict[str, Any]:
        """Advances ``self.step`` by one; returns what the progress bar shows (may be empty)."""

    @abc.abstractmethod
    def stage_state(self) -> dict[str, Any]:
        """The stage's own checkpoint entries (networks, optimizers, ...)."""

    @abc.abstractmethod
    def load_stage_state(self, state: dict[str, Any]) -> None:
        """Restores what ``stage_state`` saved."""

    @abc.abstractmethod
    def stage_summary(self) -> dict[str, Any]:
        """The stage's entries of the summary file; called once, after the last step."""

    def replicated_modules(self) -> list[nn.Module | None]:
        """The networks every torchrun process holds a replica of (for the summary's replica check)."""
        return []

    def log_start(self, writer: Writer) -> None:
        """TensorBoard entries at step 0: the config, and a warning about a random VGG19."""
        writer.add_text("config", json.dumps(to_dict(self.cfg), indent=2).replace("\n", "  \n"), 0)
        if self.perceptual_pretrained is False:
            writer.add_text("warning", "perceptual loss uses a RANDOMLY INITIALISED VGG19", 0)

    # --- checkpoints -----------------------------------------------------------------------------------------

    def wall_time(self) -> float:
        return self.wall_before + time.time() - self.started

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "step": self.step,
            "config": to_dict(self.cfg),
            **self.stage_state(),
            "rng": rng_state(self.data_generator),
            "history": self.history,
            "wall_time": self.wall_time(),
            "bad_steps": self.guard.consecutive,
        }

    def checkpoint(self) -> None:
        atomic_torch_save(self.state(), self.run_dir / self.files.checkpoint)

    def resume(self) -> None:
        state = load_checkpoint(self.run_dir / self.files.checkpoint, map_location=self.device)
        if state.get("kind") != self.kind:
            raise RunFolderError(f"{self.run_dir}: {self.files.checkpoint} is not a {self.kind.replace('_', ' ')}")
        # Only the same work may continue: a checkpoint of another config (less where and how loudly it ran) would be
        # resumed into a run that is neither the old one nor the new one.
        mine, theirs = to_dict(self.cfg), dict(state.get("config", {}))
        try:  # a key added to the config since the checkpoint was written reads as its default (e.g. cost.unit)
            theirs = to_dict(from_dict(type(self.cfg), theirs))
        except ConfigError:  # a key since removed or retyped: compared as written, so it differs
            pass
        for section in self.free_on_resume:
            mine.pop(section, None)
            theirs.pop(section, None)
        if mine != theirs:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise RunFolderError(
                f"{self.run_dir}: the checkpoint was made with another config (sections "
                f"{', '.join(changed)} differ); use a new run folder"
            )
        self.load_stage_state(state)
        restore_rng_state(self.data_generator, state["rng"])
        self.step, self.history = state["step"], state["history"]
        self.wall_before, self.guard.consecutive = state["wall_time"], state["bad_steps"]
        log.info("resumed %s in %s at step %d", self.kind.replace("_", " "), self.run_dir, self.step)

    # --- the loop --------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.started = time.time()
        writer = summary_writer(self.run_dir / self.files.tensorboard, purge_step=self.step or None)
        if self.step == 0:
            self.log_start(writer)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.label,
            unit="step",
            dynamic_ncols=True,
            disable=not distributed.is_main(),
        )
        try:
            # Log lines go through tqdm.write while the bar lives, so they are never glued onto it.
            with self.stop, logging_redirect_tqdm(), bar:
                while self.step < self.total_steps:
                    shown = self.one_step(writer)
                    bar.update(1)
                    if shown:
                        bar.set_postfix(
                            {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in shown.items()}, refresh=False
                        )
                    # torchrun forwards a signal to every worker, but not necessarily between the same two steps.
                    if distributed.any_rank(self.stop.signum is not None):
                        self.checkpoint()
                        name = signal.Signals(self.stop.signum or signal.SIGTERM).name
                        raise StopRequested(
                            f"stopped by {name} at step {self.step}; checkpoint written, continue with --resume"
                        )
        finally:
            writer.close()
        summary = self.stage_summary() | {
            "steps": self.step,
            "wall_time_s": round(self.wall_time(), 1),
            "distributed": replica_report(self.replicated_modules()),
        }
        atomic_write_text(self.run_dir / self.files.summary, json.dumps(summary, indent=2) + "\n")
        return summary
