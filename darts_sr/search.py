"""Stage 1, the generator search: bilevel optimisation of a supernet against a perceptual-adversarial
loss plus a MACs penalty, with a fixed discriminator trained alongside.

Each step: (1) after the warm-up, an architecture step on a batch from the val half of the
training images (loss + cost penalty; first or second order); (2) a weight step on a batch
from the train half, BasicSR's GAN step. Each epoch ends with a validation PSNR of the supernet,
the derived genotype (kept as history), TensorBoard summaries and a checkpoint. Checkpoints
are step-exact, so an interrupted run resumes to the same result as an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from darts_sr import distributed, run_files
from darts_sr.architect import arch_gradients
from darts_sr.config import SearchConfig
from darts_sr.data import PatchSampler, centre_crop, load_dataset, load_training_pairs, split_halves
from darts_sr.discriminator import Discriminator, load_discriminator_genotype
from darts_sr.evaluation import evaluate_pairs
from darts_sr.gan import BACKBONE_LABEL, gan_step, generator_loss, set_requires_grad
from darts_sr.genotype import TPSR, GeneratorGenotype, save_genotype
from darts_sr.losses import GeneratorLoss, cost_penalty
from darts_sr.networks import generator_macs, generator_params
from darts_sr.plots import genotype_graph, probability_evolution, probability_heatmap
from darts_sr.runner import Run, draw_batch
from darts_sr.schedules import cosine
from darts_sr.supernet import GeneratorSupernet
from darts_sr.tensorboard_logs import Writer, log_epoch, log_samples, log_scalars

log = logging.getLogger(__name__)


def default_budget(scale: int) -> float:
    """TPSR's MACs at 720p output, for TPSR's wiring at this scale."""
    return float(generator_macs(replace(TPSR, scale=scale)))


class GeneratorSearch(Run):
    """The stage-1 search in a run folder; ``run()`` returns the summary."""

    kind, files, label = "generator_search", run_files.GENERATOR_SEARCH, "search"

    def __init__(self, config: SearchConfig, run_dir: Path, resume: bool = False):
        super().__init__(config, run_dir, config.run)
        cfg = config
        scale = cfg.data.scale
        train_half, arch_half = split_halves(load_training_pairs(cfg.data.train, scale))
        self.weight_sampler = PatchSampler(train_half, cfg.data.patch_size, scale)
        self.arch_sampler = PatchSampler(arch_half, cfg.data.patch_size, scale)
        self.val_pairs = centre_crop(load_dataset(cfg.data.val, scale, split="val"), cfg.data.val_crop, scale)
        s = cfg.supernet
        self.supernet = GeneratorSupernet(s.nodes, s.channels, scale, s.ops, s.input_window).to(self.device)
        self.criterion = GeneratorLoss.from_config(cfg.loss).to(self.device)
        self.perceptual_pretrained = self.criterion.perceptual_pretrained
        self.discriminator = None
        if self.criterion.needs_discriminator:
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
        if resume:
            self.resume()

    # --- checkpointing -----------------------------------------------------------------------

    def stage_state(self) -> dict[str, Any]:
        return {
            "supernet": self.supernet.state_dict(),
            "discriminator": None if self.discriminator is None else self.discriminator.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "d_optimizer": None if self.d_optimizer is None else self.d_optimizer.state_dict(),
        }

    def load_stage_state(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])

    def replicated_modules(self) -> list:
        return [self.supernet, self.discriminator]

    # --- steps -------------------------------------------------------------------------------

    def _loss(self, lq: Tensor, gt: Tensor, with_penalty: bool) -> tuple[Tensor, dict[str, float]]:
        sr = self.supernet(lq)
        total, losses = generator_loss(sr, gt, self.criterion, self.discriminator)
        details = {f"arch/{k}": float(v.detach()) for k, v in losses.items()}
        if with_penalty:
            penalty, cost = cost_penalty(
                self.supernet.expected_macs(), self.budget, self.cfg.cost.penalty, self.cfg.cost.weight
            )
            total = total + penalty
            details |= cost
        return total, details

    def _arch_step(self, train_batch, val_batch) -> dict[str, float]:
        set_requires_grad(self.discriminator, False)
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
        lr = cosine(self.step, self.total_steps, o.weight_lr, o.weight_lr_min)
        for group in self.w_optimizer.param_groups:
            group["lr"] = lr
        return lr

    def one_step(self, writer: Writer) -> dict[str, Any]:
        cfg, o = self.cfg, self.cfg.optim
        bs = cfg.data.batch_size
        weight_batch = draw_batch(self.weight_sampler, bs, self.data_generator, self.device)
        arch_batch = draw_batch(self.arch_sampler, bs, self.data_generator, self.device)
        lr_now = self._set_lr()
        epoch = self.step // o.steps_per_epoch
        logs: dict[str, float] = {}
        if epoch >= o.warmup_epochs:
            logs |= self._arch_step(weight_batch, arch_batch)
        losses = gan_step(
            self.supernet, self.discriminator, *weight_batch, self.criterion, self.w_optimizer, self.d_optimizer,
            self.supernet.weight_parameters(), self.guard, self.step, o.grad_clip,
        )  # fmt: skip
        self.step += 1
        if self.step % cfg.run.log_every == 0:
            lrs = {"weight": lr_now, "arch": self.a_optimizer.param_groups[0]["lr"]}
            log_scalars(writer, self.step, losses, logs, lrs)
        if self.step % o.steps_per_epoch == 0:
            self._end_epoch(writer, epoch + 1)
        return {"loss": losses["l_g_total"]} if losses else {}

    def derive(self) -> GeneratorGenotype:
        c = self.cfg
        max_macs = None if c.cost.penalty == "none" else self.budget * (1 + c.cost.tolerance)
        return self.supernet.derive(c.supernet.max_skip_nodes, max_macs)

    def _end_epoch(self, writer: Writer, epoch: int) -> None:
        scale = self.cfg.data.scale
        score = evaluate_pairs(self.supernet, self.val_pairs, "val", scale, device=self.device)
        genotype = self.derive()
        with torch.no_grad():
            expected = float(self.supernet.expected_macs())
            op_probs = self.supernet.op_probs()
        record = {
            "epoch": epoch,
            "step": self.step,
            "val_psnr_supernet": score["psnr_y"],
            "expected_macs_720p": expected,
            "derived_macs_720p": generator_macs(genotype),
            "derived_params": generator_params(genotype),
            "genotype": genotype.to_dict(),
            "op_probs": op_probs.cpu().tolist(),
            # How decided the op choices are: the mean over nodes of each node's largest probability.
            "max_prob": float(op_probs.max(dim=1).values.mean()),
        }
        self.history.append(record)
        save_genotype(genotype, self.run_dir / self.files.history_file(epoch))
        self._log_epoch(writer, record, genotype)
        self.checkpoint()
        log.info(
            "epoch %d: supernet val Y-PSNR %.2f dB, E[MACs] %.3f G, derived %.3f G / %d params",
            epoch, score["psnr_y"], expected / 1e9, record["derived_macs_720p"] / 1e9, record["derived_params"],
        )  # fmt: skip

    # --- TensorBoard -------------------------------------------------------------------------

    def _log_epoch(self, writer: Writer, record: dict, genotype: GeneratorGenotype) -> None:
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
        evolution = [r for r in self.history if "op_probs" in r]
        writer.add_figure("arch/op_prob_evolution", probability_evolution(evolution, list(net.op_names)), step)
        log_epoch(writer, step, genotype.describe(), {
            "val/psnr_supernet": record["val_psnr_supernet"],
            "cost/derived_gmacs": record["derived_macs_720p"] / 1e9,
            "cost/expected_gmacs_epoch": record["expected_macs_720p"] / 1e9,
            "cost/derived_params": record["derived_params"],
            "arch/max_op_prob": record["max_prob"],
        })  # fmt: skip
        log_samples(writer, net, self.val_pairs[: self.cfg.run.samples], step, self.device)

    def stage_summary(self) -> dict[str, Any]:
        genotype = GeneratorGenotype.from_dict(self.history[-1]["genotype"]) if self.history else self.derive()
        save_genotype(genotype, self.run_dir / run_files.GENERATOR_GENOTYPE)
        last = self.history[-1] if self.history else {}
        return {
            "genotype": genotype.to_dict(),
            "params": generator_params(genotype),
            "macs_720p": generator_macs(genotype),
            "budget_macs_720p": self.budget,
            "supernet_val_psnr": last.get("val_psnr_supernet"),
            "epochs": self.cfg.optim.epochs,
            "perceptual_backbone": BACKBONE_LABEL[self.perceptual_pretrained],
        }
