"""Stage 1, the generator search: bilevel optimisation of a supernet against a perceptual-adversarial
loss plus a MACs penalty, with a fixed discriminator trained alongside.

Each step: (1) after the warm-up, an architecture step on a batch from the val half of the
training images (loss + cost penalty; first or second order); (2) a weight step on a batch
from the train half, BasicSR's GAN step. Each epoch ends with a validation PSNR of the supernet,
the derived genotype (kept as history), TensorBoard summaries and a checkpoint. Checkpoints
are step-exact, so an interrupted run resumes to the same result as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from darts_sr import distributed, engine
from darts_sr.architect import arch_gradients
from darts_sr.config import SearchConfig, to_dict
from darts_sr.data import DataError, ImagePair, PatchSampler, load_dataset
from darts_sr.discriminator import Discriminator, load_discriminator_genotype
from darts_sr.evaluation import evaluate_pairs
from darts_sr.genotype import TPSR, GeneratorGenotype, save_genotype
from darts_sr.io import atomic_write_text
from darts_sr.losses import cost_penalty
from darts_sr.networks import generator_macs, generator_params
from darts_sr.plots import genotype_graph, probability_heatmap
from darts_sr.supernet import GeneratorSupernet

log = logging.getLogger(__name__)


def default_budget(scale: int) -> float:
    """TPSR's MACs at 720p output, for TPSR's wiring at this scale."""
    return float(generator_macs(replace(TPSR, scale=scale)))


def split_halves(pairs: list[ImagePair]) -> tuple[list[ImagePair], list[ImagePair]]:
    """Alternate images into the weight (train) half and the architecture (val) half."""
    if len(pairs) < 2:
        raise DataError(f"the search needs at least 2 training images to split into halves, got {len(pairs)}")
    return pairs[0::2], pairs[1::2]


def centre_crop(pairs: list[ImagePair], lr_size: int, scale: int) -> list[ImagePair]:
    if lr_size <= 0:
        return pairs
    out = []
    for p in pairs:
        h, w = p.lr.shape[:2]
        top, left = max(0, (h - lr_size) // 2), max(0, (w - lr_size) // 2)
        lr = p.lr[top : top + lr_size, left : left + lr_size]
        hr = p.hr[top * scale : (top + lr_size) * scale, left * scale : (left + lr_size) * scale]
        out.append(ImagePair(p.name, np.ascontiguousarray(lr), np.ascontiguousarray(hr)))
    return out


def load_training_pairs(specs: tuple[str, ...], scale: int) -> list[ImagePair]:
    pairs = []
    for spec in specs:
        path = spec.split("=", 1)[1] if "=" in spec else spec
        pairs += load_dataset(path, scale, split="train")
    return pairs


def cosine_lr(step: int, total: int, base: float, floor: float) -> float:
    """Cosine decay from ``base`` to ``floor`` over ``total`` steps."""
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


class GeneratorSearch:
    """The stage-1 search in a run folder; ``run()`` returns the summary."""

    def __init__(self, config: SearchConfig, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir = config, Path(run_dir)
        cfg = config
        self.device = distributed.init(cfg.run.device)
        self.data_generator = engine.seed_everything(cfg.run.seed)
        scale = cfg.data.scale
        train_half, arch_half = split_halves(load_training_pairs(cfg.data.train, scale))
        self.weight_sampler = PatchSampler(train_half, cfg.data.patch_size, scale)
        self.arch_sampler = PatchSampler(arch_half, cfg.data.patch_size, scale)
        self.val_pairs = centre_crop(load_dataset(cfg.data.val, scale, split="val"), cfg.data.val_crop, scale)
        s = cfg.supernet
        self.supernet = GeneratorSupernet(s.nodes, s.channels, scale, s.ops, s.input_window).to(self.device)
        self.criterion, self.perceptual_pretrained = engine.build_criterion(cfg.loss, self.device)
        weights = self.criterion.weights
        self.discriminator = None
        if weights.adversarial > 0:
            d_genotype = load_discriminator_genotype(cfg.discriminator.genotype)
            if cfg.discriminator.base_width is not None:
                d_genotype = replace(d_genotype, base_width=cfg.discriminator.base_width)
            self.discriminator = Discriminator(d_genotype).to(self.device)
        if s.channels_last:
            self.supernet.to(memory_format=torch.channels_last)
            if self.discriminator is not None:
                self.discriminator.to(memory_format=torch.channels_last)
        distributed.broadcast_module(self.supernet)
        distributed.broadcast_module(self.discriminator)
        self.budget = cfg.cost.budget_macs or default_budget(scale)
        o = cfg.optim
        self.total_steps = o.epochs * o.steps_per_epoch
        self.w_optimizer = torch.optim.Adam(self.supernet.weight_parameters(), lr=o.weight_lr)
        self.a_optimizer = torch.optim.Adam(
            self.supernet.arch_parameters(), lr=o.arch_lr, betas=(0.5, 0.999), weight_decay=o.arch_weight_decay
        )
        self.d_optimizer = (
            torch.optim.Adam(self.discriminator.parameters(), lr=cfg.discriminator.lr, betas=(0.9, 0.99))
            if self.discriminator is not None
            else None
        )
        self.guard = engine.NonFiniteGuard(cfg.run.max_bad_steps)
        self.step, self.history, self.wall_before = 0, [], 0.0
        if resume:
            self._load(engine.load_run_checkpoint(self.run_dir, self.device))
        self.stop = engine.SignalStop()
        self.started = time.time()

    # --- checkpointing -----------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "kind": "generator_search",
            "step": self.step,
            "config": to_dict(self.cfg),
            "supernet": self.supernet.state_dict(),
            "discriminator": None if self.discriminator is None else self.discriminator.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "d_optimizer": None if self.d_optimizer is None else self.d_optimizer.state_dict(),
            "rng": engine.rng_state(self.data_generator),
            "history": self.history,
            "wall_time": self.wall_before + time.time() - self.started,
            "bad_steps": self.guard.consecutive,
        }

    def _load(self, state: dict) -> None:
        if state.get("kind") != "generator_search":
            raise engine.RunFolderError(f"{self.run_dir}: the checkpoint is not a generator search")
        self.supernet.load_state_dict(state["supernet"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        engine.restore_rng_state(self.data_generator, state["rng"])
        self.step, self.history = state["step"], state["history"]
        self.wall_before, self.guard.consecutive = state["wall_time"], state["bad_steps"]
        log.info("resumed %s at step %d", self.run_dir, self.step)

    def _checkpoint(self) -> None:
        engine.save_checkpoint(self.run_dir, self._state())

    # --- steps -------------------------------------------------------------------------------

    def _loss(self, lr: Tensor, hr: Tensor, with_penalty: bool) -> tuple[Tensor, dict[str, float]]:
        sr = self.supernet(lr)
        total, losses = engine.generator_loss(sr, hr, self.criterion, self.discriminator)
        details = {f"arch/{k}": float(v.detach()) for k, v in losses.items()}
        if with_penalty:
            penalty, cost = cost_penalty(
                self.supernet.expected_macs(), self.budget, self.cfg.cost.penalty, self.cfg.cost.weight
            )
            total = total + penalty
            details |= cost
        return total, details

    def _arch_step(self, train_batch, val_batch) -> dict[str, float]:
        engine.set_requires_grad(self.discriminator, False)
        details: dict[str, float] = {}

        def val_loss() -> Tensor:
            total, d = self._loss(*val_batch, with_penalty=True)
            details.update(d)
            return total

        def train_loss() -> Tensor:
            return self._loss(*train_batch, with_penalty=False)[0]

        self.a_optimizer.zero_grad(set_to_none=True)
        loss = arch_gradients(
            self.supernet.arch_parameters(),
            self.supernet.weight_parameters(),
            train_loss,
            val_loss,
            order=self.cfg.optim.order,
            xi=self.w_optimizer.param_groups[0]["lr"],
        )
        distributed.average_gradients(self.supernet.arch_parameters())
        grads_finite = all(torch.isfinite(p.grad).all() for p in self.supernet.arch_parameters())
        if self.guard.ok(self.step, {"arch/l_val_total": loss if grads_finite else torch.tensor(float("nan"))}):
            self.a_optimizer.step()
        return details | {"arch/l_val_total": float(loss)}

    def _set_lr(self) -> float:
        o = self.cfg.optim
        lr = cosine_lr(self.step, self.total_steps, o.weight_lr, o.weight_lr_min)
        for group in self.w_optimizer.param_groups:
            group["lr"] = lr
        return lr

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> dict:
        self.started = time.time()
        writer = engine.summary_writer(self.run_dir / "tb", purge_step=self.step or None)
        if self.step == 0:
            self._log_start(writer)
        try:
            engine.run_steps(
                self, self.total_steps, lambda bar: self._one_step(writer, bar), self._checkpoint, "search"
            )
        finally:
            writer.close()
        return self._finish()

    def _one_step(self, writer: SummaryWriter, bar: tqdm) -> None:
        cfg, o = self.cfg, self.cfg.optim
        bs = cfg.data.batch_size
        weight_batch = engine.draw_batch(self.weight_sampler, bs, self.data_generator, self.device)
        arch_batch = engine.draw_batch(self.arch_sampler, bs, self.data_generator, self.device)
        lr_now = self._set_lr()
        epoch = self.step // o.steps_per_epoch
        logs: dict[str, float] = {}
        if epoch >= o.warmup_epochs:
            logs |= self._arch_step(weight_batch, arch_batch)
        losses = engine.gan_step(
            self.supernet, self.discriminator, *weight_batch, self.criterion, self.w_optimizer, self.d_optimizer,
            self.supernet.weight_parameters(), self.guard, self.step, o.grad_clip,
        )  # fmt: skip
        self.step += 1
        bar.update(1)
        if losses:
            bar.set_postfix(loss=f"{losses['l_g_total']:.4f}", refresh=False)
        if self.step % cfg.run.log_every == 0:
            lrs = {"weight": lr_now, "arch": self.a_optimizer.param_groups[0]["lr"]}
            engine.log_scalars(writer, self.step, losses, logs, lrs)
        if self.step % o.steps_per_epoch == 0:
            self._end_epoch(writer, epoch + 1)

    def derive(self) -> GeneratorGenotype:
        c = self.cfg
        max_macs = None if c.cost.penalty == "none" else self.budget * (1 + c.cost.tolerance)
        return self.supernet.derive(c.supernet.max_skip_nodes, max_macs)

    def _end_epoch(self, writer: SummaryWriter, epoch: int) -> None:
        scale = self.cfg.data.scale
        score = evaluate_pairs(self.supernet, self.val_pairs, "val", scale, device=self.device)
        genotype = self.derive()
        with torch.no_grad():
            expected = float(self.supernet.expected_macs())
        record = {
            "epoch": epoch,
            "step": self.step,
            "val_psnr_supernet": score.psnr_y,
            "expected_macs_720p": expected,
            "derived_macs_720p": generator_macs(genotype),
            "derived_params": generator_params(genotype),
            "genotype": genotype.to_dict(),
        }
        self.history.append(record)
        save_genotype(genotype, self.run_dir / "history" / f"genotype_epoch_{epoch:03d}.json")
        self._log_epoch(writer, record, genotype)
        self._checkpoint()
        log.info(
            "epoch %d: supernet val Y-PSNR %.2f dB, E[MACs] %.3f G, derived %.3f G / %d params",
            epoch, score.psnr_y, expected / 1e9, record["derived_macs_720p"] / 1e9, record["derived_params"],
        )  # fmt: skip

    # --- TensorBoard -------------------------------------------------------------------------

    def _log_start(self, writer: SummaryWriter) -> None:
        text = json.dumps(to_dict(self.cfg), indent=2).replace("\n", "  \n")
        writer.add_text("config", text, 0)
        if self.perceptual_pretrained is False:
            writer.add_text("warning", "perceptual loss uses a RANDOMLY INITIALISED VGG19", 0)

    def _log_epoch(self, writer: SummaryWriter, record: dict, genotype: GeneratorGenotype) -> None:
        step, net = self.step, self.supernet
        with torch.no_grad():
            op_p, in_p, out_p = (t.cpu().numpy() for t in (net.op_probs(), net.input_probs(), net.output_probs()))
        n = net.num_nodes
        for k in range(n):
            for j, op in enumerate(net.op_names):
                writer.add_scalar(f"prob/node{k + 1:02d}/{op}", op_p[k, j], step)
            for src in range(k + 1):
                writer.add_scalar(f"prob/node{k + 1:02d}/input_{'stem' if src == 0 else src}", in_p[k, src], step)
            writer.add_scalar(f"prob/output/node{k + 1:02d}", out_p[k], step)
        nodes = [f"node {k + 1}" for k in range(n)]
        writer.add_figure(
            "arch/op_probs", probability_heatmap(op_p, nodes, list(net.op_names), "op probabilities"), step
        )
        sources = ["stem", *[str(k) for k in range(1, n)]]
        writer.add_figure("arch/input_probs", probability_heatmap(in_p, nodes, sources, "input probabilities"), step)
        writer.add_figure("arch/genotype", genotype_graph(genotype, f"epoch {record['epoch']}"), step)
        writer.add_text("genotype", genotype.describe().replace("\n", "  \n"), step)
        if record["val_psnr_supernet"] is not None:
            writer.add_scalar("val/psnr_supernet", record["val_psnr_supernet"], step)
        writer.add_scalar("cost/derived_gmacs", record["derived_macs_720p"] / 1e9, step)
        writer.add_scalar("cost/expected_gmacs_epoch", record["expected_macs_720p"] / 1e9, step)
        writer.add_scalar("cost/derived_params", record["derived_params"], step)
        engine.log_samples(writer, net, self.val_pairs[: self.cfg.run.samples], step, self.device)

    def _finish(self) -> dict:
        genotype = GeneratorGenotype.from_dict(self.history[-1]["genotype"]) if self.history else self.derive()
        save_genotype(genotype, self.run_dir / "genotype_generator.json")
        last = self.history[-1] if self.history else {}
        summary = {
            "genotype": genotype.to_dict(),
            "params": generator_params(genotype),
            "macs_720p": generator_macs(genotype),
            "budget_macs_720p": self.budget,
            "supernet_val_psnr": last.get("val_psnr_supernet"),
            "epochs": self.cfg.optim.epochs,
            "steps": self.step,
            "wall_time_s": round(self.wall_before + time.time() - self.started, 1),
            "perceptual_backbone": engine.BACKBONE_LABEL[self.perceptual_pretrained],
            "distributed": engine.replica_report([self.supernet, self.discriminator]),
        }
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
