"""Retraining a derived generator from scratch: phase A (pixel L1, the PSNR-oriented model), then
phase B (perceptual-adversarial fine-tuning from A, the perceptual model).

The same engine as the search (run folder, step-exact checkpoints, signals, BasicSR's GAN step,
non-finite guard); only the network has no architecture parameters. Models are written as
``model_pixel.pt`` (best validation Y-PSNR in phase A) and ``model_gan.pt`` (end of phase B),
each carrying its genotype and config so ``evaluate.py --weights`` needs nothing else.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from darts_sr import distributed, run_files
from darts_sr.config import PhaseConfig, TrainConfig, to_dict
from darts_sr.data import PatchSampler, centre_crop, load_dataset, load_training_pairs
from darts_sr.evaluation.metrics import METRICS, MetricSettings, create_scorers
from darts_sr.evaluation.scoring import evaluate_pairs
from darts_sr.io import atomic_torch_save, file_sha256
from darts_sr.losses import GeneratorLoss
from darts_sr.nets.discriminator import Discriminator, DiscriminatorGenotype
from darts_sr.nets.genotype import GeneratorGenotype, save_genotype
from darts_sr.nets.networks import (
    CHECKPOINT_GENERATOR_KEY,
    CHECKPOINT_GENOTYPE_KEY,
    Generator,
    generator_macs,
    generator_params,
    load_generator,
)
from darts_sr.training.gan import BACKBONE_LABEL, gan_step
from darts_sr.training.runner import Run, draw_batch
from darts_sr.training.schedules import ema_decay, warmup_cosine
from darts_sr.training.tensorboard_logs import Writer, as_markdown, log_samples, log_scalars

log = logging.getLogger(__name__)


DEFAULT_KEEP = {"pixel": "best_psnr", "gan": "last"}


def chosen_validation(history: list[dict], rule: str, psnr_floor: float | None = None) -> int | None:
    """Index in ``history`` (one phase's validation records) of the model the rule keeps, or None: ``best_psnr``
    (the highest Y-PSNR, the first of equals), ``last``, ``lowest_niqe`` (the lowest NIQE among records with Y-PSNR
    >= ``psnr_floor``; None when none reaches it)."""
    if not history:
        return None
    if rule == "best_psnr":
        return max(range(len(history)), key=lambda i: (history[i]["psnr_y"], -i))
    if rule == "last":
        return len(history) - 1
    if rule == "lowest_niqe":
        if psnr_floor is None:
            raise ValueError("keep: lowest_niqe needs psnr_floor")
        ok = [i for i, h in enumerate(history) if h["psnr_y"] >= psnr_floor and h.get("niqe") is not None]
        return min(ok, key=lambda i: (history[i]["niqe"], i)) if ok else None
    raise ValueError(f"unknown keep rule {rule!r}")


def keep_rule(name: str, phase: PhaseConfig) -> str:
    return DEFAULT_KEEP[name] if phase.keep == "default" else phase.keep


class Retrainer(Run):
    """Trains ``Generator(genotype)`` in ``run_dir``; ``run()`` returns the summary."""

    kind, files, label = "retrain", run_files.RETRAIN, "train"

    def __init__(
        self,
        config: TrainConfig,
        genotype: GeneratorGenotype,
        d_genotype: DiscriminatorGenotype,
        run_dir: Path,
        resume: bool = False,
        generator_weights: Path | None = None,
    ):
        if genotype.scale != config.data.scale:
            raise ValueError(f"genotype scale {genotype.scale} differs from data.scale {config.data.scale}")
        super().__init__(config, run_dir, config.run)
        self.genotype = genotype
        scale = genotype.scale
        self.sampler = PatchSampler(
            load_training_pairs(config.data.train, scale),
            config.data.patch_size,
            scale,
            skip_small=config.data.skip_small,
        )
        self.val_pairs = centre_crop(load_dataset(config.data.val, scale, split="val"), config.data.val_crop, scale)
        # Given weights (a model_pixel.pt): a fine-tune from them; with pixel_phase.steps = 0 it starts in the GAN
        # phase (darts_sr.search.race). Loading builds the same Generator first, so the RNG stream, and with it
        # the discriminator's initialisation, is the same as from scratch.
        self.generator_weights = generator_weights
        self.generator_weights_sha256 = None if generator_weights is None else file_sha256(Path(generator_weights))
        self.generator = (
            Generator(genotype) if generator_weights is None else load_generator(generator_weights, genotype)
        ).to(self.device)
        if config.discriminator.base_width is not None:
            d_genotype = replace(d_genotype, base_width=config.discriminator.base_width)
        self.d_genotype = d_genotype
        self.phases = [("pixel", config.pixel_phase), ("gan", config.gan_phase)]
        self.total_steps = sum(p.steps for _, p in self.phases)
        self.discriminator = Discriminator(d_genotype).to(self.device) if config.gan_phase.steps else None
        distributed.broadcast_module(self.generator)
        distributed.broadcast_module(self.discriminator)
        self.d_optimizer = (
            torch.optim.Adam(self.discriminator.parameters(), lr=config.discriminator.lr, betas=(0.9, 0.99))
            if self.discriminator is not None
            else None
        )
        settings = MetricSettings(config.gan_phase.loss.pretrained_dir, self.device)
        self.scorers = create_scorers(settings=settings)
        self.best_psnr = -float("inf")
        self.ema: Generator | None = None  # the moving average of the weights, when the phase keeps one
        self.ema_updates = 0
        self._enter_phase(self._phase_index(0))
        if resume:
            self.resume()

    # --- phases ------------------------------------------------------------------------------

    def _phase_index(self, step: int) -> int:
        return 0 if step < self.cfg.pixel_phase.steps else 1

    def _phase_start(self, index: int) -> int:
        return 0 if index == 0 else self.cfg.pixel_phase.steps

    def _enter_phase(self, index: int) -> None:
        name, phase = self.phases[index]
        if self.ema is not None:  # the next phase starts from the averaged weights, the model the last one kept
            self.generator.load_state_dict(self.ema.state_dict())
        self.ema = copy.deepcopy(self.generator).requires_grad_(False) if phase.ema else None
        self.ema_updates = 0
        self.phase_index = index
        self.criterion = GeneratorLoss.from_config(phase.loss).to(self.device)
        self.perceptual_pretrained = self.criterion.perceptual_pretrained
        # A fresh optimizer per phase, as ESRGAN's fine-tuning starts from the PSNR model with new Adam state.
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=phase.lr, betas=(0.9, 0.99))
        log.info("phase %s: %d steps, %s", name, phase.steps, self.criterion.weights)

    # --- checkpoints -------------------------------------------------------------------------

    def _model_file(self, val: dict | None = None) -> dict:
        return {
            CHECKPOINT_GENERATOR_KEY: self.kept.state_dict(),
            CHECKPOINT_GENOTYPE_KEY: self.genotype.to_dict(),
            "discriminator_genotype": self.d_genotype.to_dict(),
            "config": to_dict(self.cfg),
            "step": self.step,
            "phase": self.phases[self.phase_index][0],
            "val": val or {},
        }

    def stage_state(self) -> dict[str, Any]:
        return self._model_file() | {
            CHECKPOINT_GENERATOR_KEY: self.generator.state_dict(),  # the live weights; the average is "ema"
            "discriminator": None if self.discriminator is None else self.discriminator.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": None if self.d_optimizer is None else self.d_optimizer.state_dict(),
            "best_psnr": self.best_psnr,
            "ema": None if self.ema is None else self.ema.state_dict(),
            "ema_updates": self.ema_updates,
        }

    def load_stage_state(self, state: dict[str, Any]) -> None:
        self._enter_phase(self._phase_index(state["step"]))
        self.generator.load_state_dict(state[CHECKPOINT_GENERATOR_KEY])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.best_psnr = state["best_psnr"]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self.ema_updates = state["ema_updates"]

    def replicated_modules(self) -> list:
        return [self.generator, self.discriminator]

    # --- the loop ----------------------------------------------------------------------------

    def log_start(self, writer: Writer) -> None:
        writer.add_text("genotype", as_markdown(self.genotype.describe()), 0)
        super().log_start(writer)

    def one_step(self, writer: Writer) -> dict[str, Any]:
        index = self._phase_index(self.step)
        if index != self.phase_index:
            self._enter_phase(index)
        name, phase = self.phases[index]
        lr_now = warmup_cosine(
            self.step - self._phase_start(index), phase.steps, phase.warmup_steps, phase.lr, phase.lr_min
        )
        for group in self.g_optimizer.param_groups:
            group["lr"] = lr_now
        lq, gt = draw_batch(self.sampler, self.cfg.data.batch_size, self.data_generator, self.device)
        losses = gan_step(
            self.generator,
            self.discriminator,
            lq,
            gt,
            self.criterion,
            self.g_optimizer,
            self.d_optimizer,
            list(self.generator.parameters()),
            self.guard,
            self.step,
            self.cfg.grad_clip,
        )
        if self.ema is not None and losses:
            self._update_ema(phase.ema)
        self.step += 1
        if self.step % self.cfg.run.log_every == 0:
            log_scalars(writer, self.step, losses, {}, {"generator": lr_now})
        phase_end = self.step == self._phase_start(index) + phase.steps
        if self.step % self.cfg.val_every == 0 or phase_end:
            self._validate(writer, name, phase_end)
        return {"phase": name, "loss": losses["l_g_total"]} if losses else {"phase": name}

    @torch.no_grad()
    def _update_ema(self, decay: float) -> None:
        weight = 1.0 - ema_decay(self.ema_updates, decay)
        ema, live = self.ema.state_dict(), self.generator.state_dict()
        for key, value in ema.items():
            if value.is_floating_point():
                value.lerp_(live[key], weight)
            else:
                value.copy_(live[key])
        self.ema_updates += 1

    @property
    def kept(self) -> Generator:
        """The network validated and saved: the moving average when the phase keeps one."""
        return self.generator if self.ema is None else self.ema

    def _validate(self, writer: Writer, phase: str, phase_end: bool) -> None:
        score = evaluate_pairs(self.kept, self.val_pairs, "val", self.genotype.scale, self.scorers, self.device)
        record = {"step": self.step, "phase": phase, **score.values}
        self.history.append(record)
        for name, value in score.values.items():
            if value is not None:
                writer.add_scalar(f"val/{name}", value, self.step)
        log_samples(writer, self.kept, self.val_pairs[: self.cfg.run.samples], self.step, self.device)
        if phase == "pixel":
            self.best_psnr = max(self.best_psnr, score["psnr_y"])
        config = self.cfg.pixel_phase if phase == "pixel" else self.cfg.gan_phase
        rule = keep_rule(phase, config)
        mine = [h for h in self.history if h["phase"] == phase]
        if rule != "last" or phase_end:  # "last" writes once, at the end
            if chosen_validation(mine, rule, config.psnr_floor) == len(mine) - 1:
                file = run_files.MODEL_PIXEL if phase == "pixel" else run_files.MODEL_GAN
                atomic_torch_save(self._model_file(record), self.run_dir / file)
        self.checkpoint()
        shown = ", ".join(
            f"{METRICS[n].label} {v:.{METRICS[n].digits}f}" for n, v in score.values.items() if v is not None
        )
        log.info("step %d (%s): val %s", self.step, phase, shown)

    def stage_summary(self) -> dict[str, Any]:
        save_genotype(self.genotype, self.run_dir / run_files.GENERATOR_GENOTYPE)
        return {
            "genotype": self.genotype.to_dict(),
            "discriminator_genotype": self.d_genotype.to_dict(),
            "params": generator_params(self.genotype),
            "macs_720p": generator_macs(self.genotype),
            "generator_weights": None if self.generator_weights is None else str(self.generator_weights),
            "generator_weights_sha256": self.generator_weights_sha256,
            "best_val_psnr_pixel": None if self.best_psnr == -float("inf") else self.best_psnr,
            "val_history": self.history,
            "models": sorted(p.name for p in self.run_dir.glob("model_*.pt")),
            "perceptual_backbone": BACKBONE_LABEL[self.perceptual_pretrained if self.phase_index == 1 else None],
        }
