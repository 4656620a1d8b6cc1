"""Retraining a derived generator from scratch: phase A (pixel L1, the PSNR-oriented model), then
phase B (perceptual-adversarial fine-tuning from A, the perceptual model).

The same engine as the search (run folder, step-exact checkpoints, signals, BasicSR's GAN step,
non-finite guard); only the network has no architecture parameters. Models are written as
``model_pixel.pt`` (best validation Y-PSNR in phase A) and ``model_gan.pt`` (end of phase B),
each carrying its genotype and config so ``evaluate.py --weights`` needs nothing else.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from darts_sr import distributed, engine
from darts_sr.config import TrainConfig, to_dict
from darts_sr.data import PatchSampler, load_dataset
from darts_sr.discriminator import Discriminator, DiscriminatorGenotype
from darts_sr.evaluation import evaluate_pairs
from darts_sr.genotype import GeneratorGenotype, save_genotype
from darts_sr.io import atomic_torch_save, atomic_write_text
from darts_sr.metrics import LpipsMetric
from darts_sr.networks import (
    CHECKPOINT_GENERATOR_KEY,
    CHECKPOINT_GENOTYPE_KEY,
    Generator,
    generator_macs,
    generator_params,
)
from darts_sr.search import centre_crop, cosine_lr, load_training_pairs

log = logging.getLogger(__name__)


class Retrainer:
    """Trains ``Generator(genotype)`` in ``run_dir``; ``run()`` returns the summary."""

    def __init__(
        self,
        config: TrainConfig,
        genotype: GeneratorGenotype,
        d_genotype: DiscriminatorGenotype,
        run_dir: Path,
        resume: bool = False,
    ):
        self.cfg, self.genotype, self.run_dir = config, genotype, Path(run_dir)
        if genotype.scale != config.data.scale:
            raise ValueError(f"genotype scale {genotype.scale} differs from data.scale {config.data.scale}")
        self.device = distributed.init(config.run.device)
        self.data_generator = engine.seed_everything(config.run.seed)
        scale = genotype.scale
        self.sampler = PatchSampler(load_training_pairs(config.data.train, scale), config.data.patch_size, scale)
        self.val_pairs = centre_crop(load_dataset(config.data.val, scale, split="val"), config.data.val_crop, scale)
        self.generator = Generator(genotype).to(self.device)
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
        self.lpips, reason = LpipsMetric.create(config.gan_phase.loss.pretrained_dir)
        if self.lpips is None:
            log.warning("validation LPIPS: n/a (%s)", reason)
        else:
            self.lpips.to(self.device)
        self.guard = engine.NonFiniteGuard(config.run.max_bad_steps)
        self.stop = engine.SignalStop()
        self.step, self.history, self.best_psnr, self.wall_before = 0, [], -float("inf"), 0.0
        self.started = time.time()
        self._enter_phase(self._phase_index(0))
        if resume:
            self._load(engine.load_run_checkpoint(self.run_dir, self.device))

    # --- phases ------------------------------------------------------------------------------

    def _phase_index(self, step: int) -> int:
        return 0 if step < self.cfg.pixel_phase.steps else 1

    def _phase_start(self, index: int) -> int:
        return 0 if index == 0 else self.cfg.pixel_phase.steps

    def _enter_phase(self, index: int) -> None:
        name, phase = self.phases[index]
        self.phase_index = index
        self.criterion, self.perceptual_pretrained = engine.build_criterion(phase.loss, self.device)
        # A fresh optimizer per phase, as ESRGAN's fine-tuning starts from the PSNR model with new Adam state.
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=phase.lr, betas=(0.9, 0.99))
        log.info("phase %s: %d steps, %s", name, phase.steps, self.criterion.weights)

    # --- checkpoints -------------------------------------------------------------------------

    def _model_file(self, val: dict | None = None) -> dict:
        return {
            CHECKPOINT_GENERATOR_KEY: self.generator.state_dict(),
            CHECKPOINT_GENOTYPE_KEY: self.genotype.to_dict(),
            "discriminator_genotype": self.d_genotype.to_dict(),
            "config": to_dict(self.cfg),
            "step": self.step,
            "phase": self.phases[self.phase_index][0],
            "val": val or {},
        }

    def _state(self) -> dict:
        return self._model_file() | {
            "kind": "retrain",
            "discriminator": None if self.discriminator is None else self.discriminator.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": None if self.d_optimizer is None else self.d_optimizer.state_dict(),
            "rng": engine.rng_state(self.data_generator),
            "history": self.history,
            "best_psnr": self.best_psnr,
            "wall_time": self.wall_before + time.time() - self.started,
            "bad_steps": self.guard.consecutive,
        }

    def _load(self, state: dict) -> None:
        if state.get("kind") != "retrain":
            raise engine.RunFolderError(f"{self.run_dir}: the checkpoint is not a retraining run")
        self.step = state["step"]
        self._enter_phase(self._phase_index(self.step))
        self.generator.load_state_dict(state[CHECKPOINT_GENERATOR_KEY])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        engine.restore_rng_state(self.data_generator, state["rng"])
        self.history, self.best_psnr = state["history"], state["best_psnr"]
        self.wall_before, self.guard.consecutive = state["wall_time"], state["bad_steps"]
        log.info("resumed %s at step %d", self.run_dir, self.step)

    def _checkpoint(self) -> None:
        engine.save_checkpoint(self.run_dir, self._state())

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> dict:
        self.started = time.time()
        writer = engine.summary_writer(self.run_dir / "tb", purge_step=self.step or None)
        if self.step == 0:
            writer.add_text("genotype", self.genotype.describe().replace("\n", "  \n"), 0)
            writer.add_text("config", json.dumps(to_dict(self.cfg), indent=2).replace("\n", "  \n"), 0)
        try:
            engine.run_steps(self, self.total_steps, lambda bar: self._one_step(writer, bar), self._checkpoint, "train")
        finally:
            writer.close()
        return self._finish()

    def _one_step(self, writer: SummaryWriter, bar) -> None:
        index = self._phase_index(self.step)
        if index != self.phase_index:
            self._enter_phase(index)
        name, phase = self.phases[index]
        lr_now = cosine_lr(self.step - self._phase_start(index), phase.steps, phase.lr, phase.lr_min)
        for group in self.g_optimizer.param_groups:
            group["lr"] = lr_now
        lr, hr = engine.draw_batch(self.sampler, self.cfg.data.batch_size, self.data_generator, self.device)
        losses = engine.gan_step(
            self.generator, self.discriminator, lr, hr, self.criterion, self.g_optimizer, self.d_optimizer,
            list(self.generator.parameters()), self.guard, self.step, self.cfg.grad_clip,
        )  # fmt: skip
        self.step += 1
        bar.update(1)
        if losses:
            bar.set_postfix(phase=name, loss=f"{losses['l_g_total']:.4f}", refresh=False)
        if self.step % self.cfg.run.log_every == 0:
            engine.log_scalars(writer, self.step, losses, {}, {"generator": lr_now})
        phase_end = self.step == self._phase_start(index) + phase.steps
        if self.step % self.cfg.val_every == 0 or phase_end:
            self._validate(writer, name, phase_end)

    def _validate(self, writer: SummaryWriter, phase: str, phase_end: bool) -> None:
        score = evaluate_pairs(
            self.generator, self.val_pairs, "val", self.genotype.scale, self.lpips, device=self.device
        )
        record = {
            "step": self.step,
            "phase": phase,
            "psnr_y": score.psnr_y,
            "ssim_y": score.ssim_y,
            "lpips": score.lpips,
        }
        self.history.append(record)
        writer.add_scalar("val/psnr_y", score.psnr_y, self.step)
        writer.add_scalar("val/ssim_y", score.ssim_y, self.step)
        if score.lpips is not None:
            writer.add_scalar("val/lpips", score.lpips, self.step)
        if phase == "pixel" and score.psnr_y > self.best_psnr:
            self.best_psnr = score.psnr_y
            atomic_torch_save(self._model_file(record), self.run_dir / "model_pixel.pt")
        if phase == "gan" and phase_end:
            atomic_torch_save(self._model_file(record), self.run_dir / "model_gan.pt")
        self._checkpoint()
        log.info("step %d (%s): val Y-PSNR %.2f dB, LPIPS %s", self.step, phase, score.psnr_y, score.lpips)

    def _finish(self) -> dict:
        save_genotype(self.genotype, self.run_dir / "genotype_generator.json")
        summary = {
            "genotype": self.genotype.to_dict(),
            "discriminator_genotype": self.d_genotype.to_dict(),
            "params": generator_params(self.genotype),
            "macs_720p": generator_macs(self.genotype),
            "steps": self.step,
            "best_val_psnr_pixel": None if self.best_psnr == -float("inf") else self.best_psnr,
            "val_history": self.history,
            "models": sorted(p.name for p in self.run_dir.glob("model_*.pt")),
            "wall_time_s": round(self.wall_before + time.time() - self.started, 1),
            "perceptual_backbone": engine.BACKBONE_LABEL[self.perceptual_pretrained if self.phase_index == 1 else None],
            "distributed": engine.replica_report([self.generator, self.discriminator]),
        }
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
