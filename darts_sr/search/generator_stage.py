"""Stage 1, the generator search: bilevel optimisation of a supernet against a perceptual-adversarial
loss plus a cost term (MACs, or milliseconds of a latency table: ``cost.unit``), with a fixed discriminator trained
alongside.

Each step: (1) after the warm-up, an architecture step on a batch from the val half of the
training images (loss + cost penalty; first or second order); (2) a weight step on a batch
from the train half, BasicSR's GAN step. Each epoch ends with a validation PSNR of the supernet,
the derived genotype (kept as history), TensorBoard summaries and a checkpoint. Checkpoints
are step-exact, so an interrupted run resumes to the same result as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from darts_sr import distributed, run_files
from darts_sr.config import ConfigError, SearchConfig
from darts_sr.data import PatchSampler, load_training_pairs, load_validation_pairs, split_halves
from darts_sr.evaluation.latency import predict_ms
from darts_sr.evaluation.scoring import PSNR_ONLY, evaluate_pairs
from darts_sr.losses import GeneratorLoss, cost_penalty
from darts_sr.nets.discriminator import Discriminator, load_discriminator_genotype
from darts_sr.nets.genotype import GeneratorGenotype, save_genotype
from darts_sr.nets.networks import REFERENCE_LR_SIZE, generator_macs, generator_params
from darts_sr.search.architect import adam_preconditioner, arch_gradients
from darts_sr.search.cost import search_cost
from darts_sr.search.plots import genotype_graph, probability_evolution, probability_heatmap
from darts_sr.search.supernet import GeneratorSupernet
from darts_sr.training.gan import BACKBONE_LABEL, gan_step, generator_loss, set_requires_grad
from darts_sr.training.runner import Run, draw_batch
from darts_sr.training.schedules import cosine, exponential
from darts_sr.training.tensorboard_logs import Writer, log_epoch, log_samples, log_scalars

log = logging.getLogger(__name__)


def search_diagnostics(genotype: GeneratorGenotype) -> dict[str, int]:
    """Numbers that say what shape a search found: depth (longest stem-to-output path, in ops) and how many of
    the derived nodes read the stem."""
    depth = [0] * (len(genotype.nodes) + 1)  # depth[0] = the stem
    for k, node in enumerate(genotype.nodes, start=1):
        depth[k] = depth[node.input] + 1
    return {
        "depth": max(depth[o] for o in genotype.outputs),
        "nodes_on_stem": sum(node.input == 0 for node in genotype.nodes),
        "nodes": len(genotype.nodes),
    }


class GeneratorSearch(Run):
    """The stage-1 search in a run folder; ``run()`` returns the summary."""

    kind, files, label = "generator_search", run_files.GENERATOR_SEARCH, "search"
    free_on_resume = ("run", "derive")  # derivation happens after the search: derive.py reruns it by another rule

    def __init__(self, config: SearchConfig, run_dir: Path, resume: bool = False):
        super().__init__(config, run_dir, config.run)
        cfg = config
        scale = cfg.data.scale
        # The cost (MACs or a latency table's ms), its target window, and the table if one is named; checked before
        # any data is read, so a missing or short table fails at once.
        self.cost, self.window, self.latency_table = search_cost(cfg)
        self.target = self.window.target
        self.cost_multiplier = 0.0  # cost.control: dual's Lagrange multiplier (signed: the constraint is two-sided)
        self._log_ratio = 0.0  # log(cost / target) of the last architecture step, for the multiplier's update
        train_half, arch_half = split_halves(load_training_pairs(cfg.data.train, scale))
        self.weight_sampler = PatchSampler(train_half, cfg.data.patch_size, scale, skip_small=cfg.data.skip_small)
        self.arch_sampler = PatchSampler(arch_half, cfg.data.patch_size, scale, skip_small=cfg.data.skip_small)
        self.val_pairs = load_validation_pairs(cfg.data.val, cfg.data.train, scale, cfg.data.val_crop)
        s = cfg.supernet
        self.supernet = GeneratorSupernet(
            s.nodes, s.channels, scale, s.ops, s.input_window, s.strategy, s.normalize, self.cost
        ).to(self.device)
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
        o = cfg.optim
        self.total_steps = o.epochs * o.steps_per_epoch
        self.arch_start = o.warmup_epochs * o.steps_per_epoch
        self.w_optimizer = torch.optim.Adam(self.supernet.weight_parameters(), lr=o.weight_lr)
        arch_optimizer = torch.optim.AdamW if o.arch_optimizer == "adamw" else torch.optim.Adam
        self.a_optimizer = arch_optimizer(
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
            "cost_multiplier": self.cost_multiplier,
        }

    def load_stage_state(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.cost_multiplier = float(state.get("cost_multiplier", 0.0))

    def replicated_modules(self) -> list:
        return [self.supernet, self.discriminator]

    # --- steps -------------------------------------------------------------------------------

    def _loss(self, lq: Tensor, gt: Tensor, with_penalty: bool) -> tuple[Tensor, dict[str, float]]:
        sr = self.supernet(lq)
        total, losses = generator_loss(sr, gt, self.criterion, self.discriminator)
        details = {f"arch/{k}": float(v.detach()) for k, v in losses.items()}
        if with_penalty:
            c = self.cfg.cost
            value = self.supernet.argmax_cost() if c.measure == "derived" else self.supernet.expected_cost()
            if c.control == "dual":
                # The Lagrangian's cost term: weight * loss * lambda * log(cost / target), the loss detached as
                # log_ratio's is, so lambda is as free of the loss's scale as cost.weight; lambda moves after the step.
                log_ratio = (value / self.target).log()
                penalty = c.weight * total.detach() * self.cost_multiplier * log_ratio
                cost = {"penalty/cost": float(penalty.detach()), "cost/lambda": self.cost_multiplier}
            else:
                penalty, cost = cost_penalty(value, self.target, c.penalty, c.weight, total, c.dead_zone)
            ratio = cost.pop("cost/macs_ratio", float(value.detach()) / self.target)
            self._log_ratio = math.log(ratio)
            total = total + penalty.to(total.dtype)
            details |= cost | {"cost/ratio": ratio}
            if self.cost.unit == "macs":  # today's tags, kept
                details |= {"cost/macs_ratio": ratio, "cost/penalised_gmacs": float(value.detach()) / 1e9}
            else:
                details["cost/penalised_ms"] = float(value.detach())
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
        weights = self.supernet.weight_parameters()
        second = self.cfg.optim.order == "second"
        loss = arch_gradients(
            self.supernet.arch_parameters(),
            weights,
            train_loss,
            val_loss,
            order=self.cfg.optim.order,
            xi=self.w_optimizer.param_groups[0]["lr"],
            precondition=adam_preconditioner(self.w_optimizer, weights) if second else None,
        )
        distributed.average_gradients(self.supernet.arch_parameters())
        grads_finite = all(torch.isfinite(p.grad).all() for p in self.supernet.arch_parameters())
        if self.guard.ok(self.step, {"arch/l_val_total": loss if grads_finite else torch.tensor(float("nan"))}):
            self.a_optimizer.step()
            c = self.cfg.cost
            if c.control == "dual":  # dual ascent on the two-sided constraint log(cost / target) = 0
                step = self.cost_multiplier + c.dual_lr * self._log_ratio
                self.cost_multiplier = min(max(step, -c.dual_max), c.dual_max)
        return details | {"arch/l_val_total": float(loss)}

    def _set_schedules(self) -> dict[str, float]:
        """Weight and architecture learning rates and the sampling temperature for this step."""
        o, s = self.cfg.optim, self.cfg.supernet
        lr = cosine(self.step, self.total_steps, o.weight_lr, o.weight_lr_min)
        arch_step, arch_total = max(0, self.step - self.arch_start), self.total_steps - self.arch_start
        arch_lr = o.arch_lr if o.arch_lr_min is None else cosine(arch_step, arch_total, o.arch_lr, o.arch_lr_min)
        self.supernet.relaxation.tau = exponential(arch_step, arch_total, s.tau_start, s.tau_end)
        for group in self.w_optimizer.param_groups:
            group["lr"] = lr
        for group in self.a_optimizer.param_groups:
            group["lr"] = arch_lr
        return {"weight": lr, "arch": arch_lr}

    def one_step(self, writer: Writer) -> dict[str, Any]:
        cfg, o = self.cfg, self.cfg.optim
        bs = cfg.data.batch_size
        weight_batch = draw_batch(self.weight_sampler, bs, self.data_generator, self.device)
        arch_batch = draw_batch(self.arch_sampler, bs, self.data_generator, self.device)
        lrs = self._set_schedules()
        epoch = self.step // o.steps_per_epoch
        logs: dict[str, float] = {}
        if epoch >= o.warmup_epochs:
            logs |= self._arch_step(weight_batch, arch_batch)
        losses = gan_step(
            self.supernet,
            self.discriminator,
            *weight_batch,
            self.criterion,
            self.w_optimizer,
            self.d_optimizer,
            self.supernet.weight_parameters(),
            self.guard,
            self.step,
            o.grad_clip,
        )
        self.step += 1
        if self.step % cfg.run.log_every == 0:
            logs["relaxation/temperature"] = self.supernet.relaxation.tau
            log_scalars(writer, self.step, losses, logs, lrs)
        if self.step % o.steps_per_epoch == 0:
            self._end_epoch(writer, epoch + 1)
        return {"loss": losses["l_g_total"]} if losses else {}

    def derive(
        self, method: str = "argmax", window: tuple[float, float] | None = None
    ) -> tuple[GeneratorGenotype, dict]:
        """The derived genotype and the derivation's report (argmax MACs and cost, repair swaps). ``method``: ``argmax``
        (each epoch's history) or ``derive.method`` (the run's result). ``window`` (in the cost's unit) replaces the
        run's target window (``darts-sr derive --target-ms``)."""
        c = self.cfg
        if window is None and c.cost.penalty != "none":
            window = (self.window.low, self.window.high)  # in the cost's unit
        scores = self.perturbation_scores() if method == "perturbation" else None
        return self.supernet.derive_with_report(c.supernet.max_skip_nodes, window=window, scores=scores)

    def perturbation_scores(self) -> tuple[Tensor, Tensor]:
        """``GeneratorSupernet.perturbation_scores`` on ``derive.batches`` fixed batches of the architecture half
        (the data the architecture step validates on), with the generator loss less its adversarial term (the
        discriminator is a moving target; the search's pixel and perceptual terms are what quality means here)."""
        n = self.cfg.derive.batches
        if n < 1:
            raise ConfigError(f"derive.batches: expected at least 1, got {n}")
        generator = torch.Generator().manual_seed(0)  # the same batches for every candidate and every call
        batches = [draw_batch(self.arch_sampler, self.cfg.data.batch_size, generator, self.device) for _ in range(n)]
        criterion = self.criterion.without("adversarial")

        def loss() -> float:
            return sum(float(criterion(self.supernet(lq), gt)[0]) for lq, gt in batches) / n

        started = time.perf_counter()
        scores = self.supernet.perturbation_scores(loss)
        log.info("perturbation scores: %d nodes in %.0f s", self.supernet.num_nodes, time.perf_counter() - started)
        return scores

    def _end_epoch(self, writer: Writer, epoch: int) -> None:
        scale = self.cfg.data.scale
        score = evaluate_pairs(self.supernet, self.val_pairs, "val", scale, PSNR_ONLY, self.device)
        genotype, report = self.derive()
        with torch.no_grad():
            expected = float(self.supernet.expected_macs())
            expected_cost = float(self.supernet.expected_cost())
            op_probs = self.supernet.op_probs()
            entropies = self.supernet.entropies()
        record = {
            "epoch": epoch,
            "step": self.step,
            "val_psnr_supernet": score["psnr_y"],
            "expected_macs_720p": expected,
            "derived_macs_720p": generator_macs(genotype),
            "derived_params": generator_params(genotype),
            "genotype": genotype.to_dict(),
            "argmax_macs_720p": report["argmax_macs"],
            "window_changes": report["window_changes"],
            **self._latency_record(genotype, report, expected_cost),
            "op_probs": op_probs.cpu().tolist(),
            # How decided the op choices are: the mean over nodes of each node's largest probability.
            "max_prob": float(op_probs.max(dim=1).values.mean()),
            "entropy": entropies.cpu().tolist(),
            **search_diagnostics(genotype),
        }
        self.history.append(record)
        save_genotype(genotype, self.run_dir / self.files.history_file(epoch))
        self._log_epoch(writer, record, genotype)
        self.checkpoint()
        log.info(
            "epoch %d: supernet val Y-PSNR %.2f dB, E[MACs] %.3f G, derived %.3f G / %d params%s",
            epoch,
            score["psnr_y"],
            expected / 1e9,
            record["derived_macs_720p"] / 1e9,
            record["derived_params"],
            "" if record.get("derived_ms") is None else f", {record['derived_ms']:.3f} ms predicted",
        )

    def _latency_record(self, genotype: GeneratorGenotype, report: dict, expected_cost: float) -> dict[str, Any]:
        """An epoch's milliseconds: the derived network's as the table predicts them (with ``cost.unit: latency``
        also the expected and argmax ones the search steers, and the multiplier); empty without a table."""
        record: dict[str, Any] = {}
        if self.latency_table is not None:
            lr_size = REFERENCE_LR_SIZE[self.cfg.data.scale]
            record["derived_ms"] = predict_ms(genotype, self.latency_table, lr_size)
        if self.cost.unit == "ms":
            record |= {"expected_ms": expected_cost, "argmax_ms": report["argmax_cost"]}
        if self.cfg.cost.control == "dual":
            record["cost_multiplier"] = self.cost_multiplier
        return record

    # --- TensorBoard -------------------------------------------------------------------------

    def log_start(self, writer: Writer) -> None:
        super().log_start(writer)
        net = self.supernet
        nodes = [f"node{k + 1:02d}" for k in range(net.num_nodes)]
        # One chart per node with a line per op (TensorBoard's Custom Scalars tab), not one chart per probability.
        writer.add_custom_scalars(
            {
                "op probabilities": {n: ["Multiline", [f"prob/{n}/{op}" for op in net.op_names]] for n in nodes},
                "input probabilities": {n: ["Multiline", [f"prob/{n}/input_.*"]] for n in nodes},
                "decidedness": {
                    "entropy per node": ["Multiline", ["entropy/node.*"]],
                    "mean max op probability": ["Multiline", ["arch/max_op_prob"]],
                    "shape": ["Multiline", ["arch/depth", "arch/nodes_on_stem"]],
                },
                "cost": {
                    "GMACs": ["Multiline", ["cost/derived_gmacs", "cost/expected_gmacs_epoch", "cost/penalised_gmacs"]],
                    "ms": ["Multiline", ["cost/derived_ms", "cost/expected_ms", "cost/penalised_ms"]],
                    "ratio to the target": ["Multiline", ["cost/ratio"]],
                },
            }
        )

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
        log_epoch(
            writer,
            step,
            genotype.describe(),
            {
                "val/psnr_supernet": record["val_psnr_supernet"],
                "cost/derived_gmacs": record["derived_macs_720p"] / 1e9,
                "cost/expected_gmacs_epoch": record["expected_macs_720p"] / 1e9,
                "cost/derived_params": record["derived_params"],
                "cost/derived_ms": record.get("derived_ms"),
                "cost/expected_ms": record.get("expected_ms"),
                "cost/lambda_epoch": record.get("cost_multiplier"),
                "arch/max_op_prob": record["max_prob"],
                "arch/depth": record["depth"],
                "arch/nodes_on_stem": record["nodes_on_stem"],
                **{f"entropy/node{k + 1:02d}": e for k, e in enumerate(record["entropy"])},
            },
        )
        log_samples(writer, net, self.val_pairs[: self.cfg.run.samples], step, self.device)

    def stage_summary(self) -> dict[str, Any]:
        method = self.cfg.derive.method
        if self.history and method == "argmax":
            last = self.history[-1]
            genotype = GeneratorGenotype.from_dict(last["genotype"])
        else:
            genotype, report = self.derive(method)
            last = {
                **(self.history[-1] if self.history else {}),
                "argmax_macs_720p": report["argmax_macs"],
                "window_changes": report["window_changes"],
                **(self._latency_record(genotype, report, float("nan")) if self.cost.unit == "ms" else {}),
            }
        save_genotype(genotype, self.run_dir / run_files.GENERATOR_GENOTYPE)
        if last.get("window_changes"):
            argmax = last["argmax_ms"] if self.cost.unit == "ms" else last["argmax_macs_720p"]
            log.warning(
                "the argmax network (%s) is outside the target window %s: %d node(s) take the most probable "
                "ops that fit it",
                self.cost.format(argmax),
                self.window,
                last["window_changes"],
            )
        derived_ms = None
        if self.latency_table is not None:
            derived_ms = predict_ms(genotype, self.latency_table, REFERENCE_LR_SIZE[self.cfg.data.scale])
        return {
            "genotype": genotype.to_dict(),
            "params": generator_params(genotype),
            "macs_720p": generator_macs(genotype),
            "target_macs_720p": self.target if self.cost.unit == "macs" else None,
            "argmax_macs_720p": last.get("argmax_macs_720p"),
            "window_changes": last.get("window_changes", 0),
            "unit": self.cfg.cost.unit,
            "derived_ms": derived_ms,  # the table's prediction (corrected where it says so); None without a table
            "target_ms": self.cfg.cost.target_ms,
            "argmax_ms": last.get("argmax_ms"),
            "cost_control": self.cfg.cost.control,
            "cost_multiplier": self.cost_multiplier if self.cfg.cost.control == "dual" else None,
            "latency_table": self.cfg.cost.latency_table,
            **search_diagnostics(genotype),
            "max_op_prob": last.get("max_prob"),
            "strategy": self.cfg.supernet.strategy,
            "derive_method": method,
            "supernet_val_psnr": last.get("val_psnr_supernet"),
            "epochs": self.cfg.optim.epochs,
            "perceptual_backbone": BACKBONE_LABEL[self.perceptual_pretrained],
        }


def save_run_figures(run_dir: Path, out_dir: Path) -> list[Path]:
    """The search's TensorBoard pictures of its last epoch as PNG files: op-probability heatmap, derived genotype
    and op-probability evolution, from the run's checkpoint history (``python -m darts_sr.search RUN OUT``)."""
    import matplotlib.pyplot as plt

    from darts_sr.io import load_checkpoint

    state = load_checkpoint(Path(run_dir) / run_files.GENERATOR_SEARCH.checkpoint)
    history = [r for r in state["history"] if "op_probs" in r]
    if not history:
        raise ValueError(f"{run_dir}: no epoch with op probabilities in the history")
    ops = list(state["config"]["supernet"]["ops"])
    last = history[-1]
    genotype = GeneratorGenotype.from_dict(last["genotype"])
    nodes = [f"node {k + 1}" for k in range(len(last["op_probs"]))]
    figures = {
        "op_probs": probability_heatmap(
            np.array(last["op_probs"]), nodes, ops, f"op probabilities, epoch {last['epoch']}"
        ),
        "genotype": genotype_graph(genotype, f"derived genotype, epoch {last['epoch']}"),
        "op_prob_evolution": probability_evolution(history, ops),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
