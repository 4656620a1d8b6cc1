"""Stage 2, the discriminator search: a discriminator supernet chosen for what it does to the generator.

A fixed tiny generator (a derived genotype: stage 1's result or ``stage2.generator``) is first pixel-pretrained for
``stage2.pretrain_steps`` steps (or loaded from ``stage2.generator_weights``). Then each step: (1) after the warm-up,
an architecture step for the discriminator supernet: by default the hypergradient of the generator's validation
loss (pixel + perceptual, no adversarial term) through one unrolled generator step taken under the adversarial
loss from the current discriminator (``darts_sr.d_architect``), or with ``d_objective: adversarial`` the gradient
of the discriminator's own validation loss; plus an optional MACs penalty. (2) BasicSR's GAN step: the generator
on its perceptual-adversarial loss with the supernet frozen, then the supernet's weights on the relativistic loss.

Each epoch ends with the generator's validation PSNR, the derived discriminator genotype (kept as history),
TensorBoard summaries and a checkpoint. Stage 2 shares the run folder with stage 1 under ``--stage all``: its files
are named ``*_discriminator*`` and its TensorBoard events go to ``tb/discriminator``. Checkpoints are step-exact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from darts_sr import distributed, run_files
from darts_sr.config import ConfigError, SearchConfig
from darts_sr.d_architect import cross_hypergradient
from darts_sr.d_supernet import DiscriminatorSupernet, reference_macs
from darts_sr.data import PatchSampler, centre_crop, load_dataset, load_training_pairs, split_halves
from darts_sr.discriminator import DiscriminatorGenotype, discriminator_macs, discriminator_params
from darts_sr.evaluation import PSNR_ONLY, evaluate_pairs
from darts_sr.gan import BACKBONE_LABEL, gan_step
from darts_sr.genotype import GeneratorGenotype, load_generator_genotype
from darts_sr.io import atomic_write_text
from darts_sr.losses import GeneratorLoss, cost_penalty, relativistic_discriminator_loss
from darts_sr.networks import Generator, load_generator
from darts_sr.plots import discriminator_figure, probability_heatmap
from darts_sr.runner import Run, RunFolderError, draw_batch
from darts_sr.schedules import cosine
from darts_sr.tensorboard_logs import Writer, as_markdown, log_epoch, log_samples, log_scalars

log = logging.getLogger(__name__)


def resolve_generator_genotype(config: SearchConfig, run_dir: Path) -> GeneratorGenotype:
    """``stage2.generator`` (a JSON file or built-in name), else the run folder's stage-1 result."""
    spec = config.stage2.generator
    if spec is None:
        path = Path(run_dir) / run_files.GENERATOR_GENOTYPE
        if not path.is_file():
            raise ConfigError(
                "stage 2 needs a generator: pass --generator PATH.json (stage2.generator), or run --stage all so "
                f"that stage 1 writes {run_files.GENERATOR_GENOTYPE} into the run folder"
            )
        spec = str(path)
    genotype = load_generator_genotype(spec)
    if genotype.scale != config.data.scale:
        raise ConfigError(
            f"stage2.generator {spec}: the genotype is x{genotype.scale} but data.scale is {config.data.scale}"
        )
    return genotype


class DiscriminatorSearch(Run):
    """The stage-2 search in a run folder; ``run()`` returns the summary."""

    kind, files, label = "discriminator_search", run_files.DISCRIMINATOR_SEARCH, "search D"

    def __init__(self, config: SearchConfig, run_dir: Path, resume: bool = False):
        cfg, s = config, config.stage2
        if cfg.loss.adversarial <= 0:
            raise ConfigError(
                "stage 2 needs loss.adversarial > 0: without it the discriminator cannot affect the generator"
            )
        if s.d_objective == "generator" and cfg.loss.pixel <= 0 and cfg.loss.perceptual <= 0:
            raise ConfigError(
                "stage2.d_objective 'generator' needs loss.pixel or loss.perceptual > 0 (the val objective)"
            )
        super().__init__(config, run_dir, cfg.run)
        self.generator_genotype = resolve_generator_genotype(cfg, self.run_dir)
        if s.generator_weights:
            self.generator = load_generator(s.generator_weights, self.generator_genotype)
            self.pretrain_steps = 0
        else:
            self.generator = Generator(self.generator_genotype)
            self.pretrain_steps = s.pretrain_steps
        self.generator.to(self.device)
        try:
            self.supernet = DiscriminatorSupernet(s.blocks, s.base_widths, s.norms, s.ops).to(self.device)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"stage2: {e.args[0] if e.args else e}") from None

        distributed.broadcast_module(self.generator)
        distributed.broadcast_module(self.supernet)

        scale = cfg.data.scale
        train_half, arch_half = split_halves(load_training_pairs(cfg.data.train, scale))
        self.weight_sampler = PatchSampler(train_half, cfg.data.patch_size, scale)
        self.arch_sampler = PatchSampler(arch_half, cfg.data.patch_size, scale)
        self.val_pairs = centre_crop(load_dataset(cfg.data.val, scale, split="val"), cfg.data.val_crop, scale)

        self.criterion = GeneratorLoss.from_config(cfg.loss).to(self.device)
        self.perceptual_pretrained = self.criterion.perceptual_pretrained
        # The generator's validation objective: the same pixel and perceptual terms, no adversarial term.
        self.val_criterion = self.criterion.without("adversarial") if s.d_objective == "generator" else None
        self.budget = s.budget_macs or float(reference_macs(self.supernet, s.macs_size))

        self.search_steps = s.epochs * s.steps_per_epoch
        self.total_steps = self.pretrain_steps + self.search_steps
        g_params = list(self.generator.parameters())
        self.p_optimizer = torch.optim.Adam(g_params, lr=s.pretrain_lr, betas=(0.9, 0.99))
        self.g_optimizer = torch.optim.Adam(g_params, lr=s.generator_lr, betas=(0.9, 0.99))
        self.d_optimizer = torch.optim.Adam(self.supernet.weight_parameters(), lr=s.d_lr, betas=(0.9, 0.99))
        # AdamW with a tiny eps: the generator-objective hypergradient is O(xi * loss.adversarial); Adam's update
        # does not depend on that scale, but eps = 1e-8 or an L2 term added to the gradient would dominate it.
        self.a_optimizer = torch.optim.AdamW(
            self.supernet.arch_parameters(),
            lr=s.arch_lr,
            betas=(0.5, 0.999),
            eps=s.arch_eps,
            weight_decay=s.arch_weight_decay,
        )
        self.pretrained_psnr = None
        if resume:
            self.resume()

    # --- checkpointing -----------------------------------------------------------------------

    def stage_state(self) -> dict[str, Any]:
        return {
            "generator_genotype": self.generator_genotype.to_dict(),
            "generator": self.generator.state_dict(),
            "supernet": self.supernet.state_dict(),
            "p_optimizer": self.p_optimizer.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "pretrained_psnr": self.pretrained_psnr,
        }

    def load_stage_state(self, state: dict[str, Any]) -> None:
        if state["generator_genotype"] != self.generator_genotype.to_dict():
            raise RunFolderError(f"{self.run_dir}: the checkpoint was searched against another generator")
        self.generator.load_state_dict(state["generator"])
        self.supernet.load_state_dict(state["supernet"])
        for name in ("p_optimizer", "g_optimizer", "d_optimizer", "a_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.pretrained_psnr = state["pretrained_psnr"]

    def replicated_modules(self) -> list:
        return [self.generator, self.supernet]

    # --- steps -------------------------------------------------------------------------------

    def _pretrain_step(self, writer: Writer) -> None:
        lq, gt = draw_batch(self.weight_sampler, self.cfg.data.batch_size, self.data_generator, self.device)
        self.p_optimizer.zero_grad(set_to_none=True)
        loss = F.l1_loss(self.generator(lq), gt)
        if self.guard.ok(self.step, {"pretrain_l_g_pix": loss}):
            loss.backward()
            distributed.average_gradients(self.generator.parameters())
            if self.cfg.stage2.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.cfg.stage2.grad_clip)
            self.p_optimizer.step()
        self.step += 1
        if self.step % self.cfg.run.log_every == 0:
            writer.add_scalar("loss/pretrain_l_g_pix", float(loss.detach()), self.step)
        if self.step == self.pretrain_steps:
            self.pretrained_psnr = self._generator_psnr()
            writer.add_scalar("val/psnr_generator", self.pretrained_psnr, self.step)
            self.checkpoint()
            log.info("generator pixel-pretrained for %d steps: val Y-PSNR %.2f dB", self.step, self.pretrained_psnr)

    def _generator_loss_under_supernet(self, generator: torch.nn.Module, lq: Tensor, gt: Tensor) -> Tensor:
        """The generator's training loss with the supernet's current architecture; both logits keep their graph.

        Unlike the G step, D(gt) is not detached: the relativistic generator loss depends on mean(D(gt)), and
        that is one of the ways the architecture changes the generator's gradient. The supernet's weights are
        frozen here, so the graph reaches only its architecture parameters.
        """
        sr = generator(lq)
        return self.criterion(sr, gt, self.supernet(gt), self.supernet(sr))[0]

    def _arch_step(self, train_batch: list[Tensor], val_batch: list[Tensor], lr_now: float) -> dict[str, float]:
        s, arch = self.cfg.stage2, self.supernet.arch_parameters()
        details: dict[str, float] = {}
        self.supernet.set_weights_trainable(False)
        for p in arch:
            p.requires_grad_(True)
        try:
            if s.d_objective == "generator":

                def val_loss(generator: torch.nn.Module) -> Tensor:
                    total, terms = self.val_criterion(generator(val_batch[0]), val_batch[1])
                    details.update({f"arch/val_{k}": float(v.detach()) for k, v in terms.items()})
                    return total

                loss = cross_hypergradient(
                    arch,
                    self.generator,
                    lambda g: self._generator_loss_under_supernet(g, *train_batch),
                    val_loss,
                    xi=s.xi or lr_now,
                )
            else:
                lq, gt = val_batch
                with torch.no_grad():
                    sr = self.generator(lq)
                loss, terms = relativistic_discriminator_loss(self.supernet(gt), self.supernet(sr))
                grads = torch.autograd.grad(loss, arch, allow_unused=True)
                for p, g in zip(arch, grads):
                    p.grad = torch.zeros_like(p) if g is None else g
                details.update({f"arch/val_{k}": float(v.detach()) for k, v in terms.items()})
                loss = loss.detach()
            details["grad/objective_norm"] = _norm([p.grad for p in arch])
            if s.penalty != "none" and s.penalty_weight > 0:
                penalty, cost = cost_penalty(
                    self.supernet.expected_macs(s.macs_size), self.budget, s.penalty, s.penalty_weight
                )
                penalty_grads = torch.autograd.grad(penalty, arch, allow_unused=True)
                # Logged beside grad/objective_norm: the two must be of comparable size for both to steer.
                details["grad/penalty_norm"] = _norm([g for g in penalty_grads if g is not None])
                for p, g in zip(arch, penalty_grads):
                    if g is not None:
                        p.grad += g
                details |= cost
        finally:
            self.supernet.set_weights_trainable(True)
        distributed.average_gradients(arch)
        ok = all(bool(torch.isfinite(p.grad).all()) for p in arch)
        if self.guard.ok(self.step, {"arch/l_val_total": loss if ok else torch.tensor(float("nan"))}):
            self.a_optimizer.step()
        return details | {"arch/l_val_total": float(loss)}

    def one_step(self, writer: Writer) -> dict[str, Any]:
        if self.step < self.pretrain_steps:
            self._pretrain_step(writer)
            return {}
        cfg, s = self.cfg, self.cfg.stage2
        bs = cfg.data.batch_size
        weight_batch = draw_batch(self.weight_sampler, bs, self.data_generator, self.device)
        arch_batch = draw_batch(self.arch_sampler, bs, self.data_generator, self.device)
        search_step = self.step - self.pretrain_steps
        lr_now = cosine(search_step, self.search_steps, s.generator_lr, s.generator_lr_min)
        for group in self.g_optimizer.param_groups:
            group["lr"] = lr_now
        epoch = search_step // s.steps_per_epoch
        logs: dict[str, float] = {}
        if epoch >= s.warmup_epochs:
            logs |= self._arch_step(weight_batch, arch_batch, lr_now)
        losses = gan_step(
            self.generator, self.supernet, *weight_batch, self.criterion, self.g_optimizer, self.d_optimizer,
            list(self.generator.parameters()), self.guard, self.step, s.grad_clip,
        )  # fmt: skip
        self.step += 1
        if self.step % cfg.run.log_every == 0:
            lrs = {
                "generator": lr_now,
                "discriminator": self.d_optimizer.param_groups[0]["lr"],
                "arch": self.a_optimizer.param_groups[0]["lr"],
            }
            log_scalars(writer, self.step, losses, logs, lrs)
        if (search_step + 1) % s.steps_per_epoch == 0:
            self._end_epoch(writer, epoch + 1)
        return {"loss": losses["l_g_total"]} if losses else {}

    def _generator_psnr(self) -> float | None:
        scale = self.cfg.data.scale
        return evaluate_pairs(self.generator, self.val_pairs, "val", scale, PSNR_ONLY, self.device)["psnr_y"]

    def _end_epoch(self, writer: Writer, epoch: int) -> None:
        s = self.cfg.stage2
        psnr = self._generator_psnr()
        genotype = self.supernet.derive()
        with torch.no_grad():
            expected = float(self.supernet.expected_macs(s.macs_size))
            width_p, norm_p = self.supernet.width_probs().tolist(), self.supernet.norm_probs().tolist()
        record = {
            "epoch": epoch,
            "step": self.step,
            "val_psnr_generator": psnr,
            "expected_macs": expected,
            "derived_macs": discriminator_macs(genotype, s.macs_size, s.macs_size),
            "derived_params": discriminator_params(genotype),
            "width_probs": dict(zip(map(str, self.supernet.widths), width_p)),
            "norm_probs": dict(zip(self.supernet.norms, norm_p)),
            "genotype": genotype.to_dict(),
        }
        self.history.append(record)
        atomic_write_text(self.run_dir / self.files.history_file(epoch), genotype.to_json() + "\n")
        self._log_epoch(writer, record, genotype)
        self.checkpoint()
        log.info(
            "D epoch %d: generator val Y-PSNR %.2f dB; derived D %s, width %d, norm %s: %.3f GMACs@%d, %d params",
            epoch, psnr, ",".join(genotype.blocks), genotype.base_width, genotype.norm, record["derived_macs"] / 1e9,
            s.macs_size, record["derived_params"],
        )  # fmt: skip

    # --- TensorBoard -------------------------------------------------------------------------

    def log_start(self, writer: Writer) -> None:
        super().log_start(writer)
        writer.add_text("generator", as_markdown(self.generator_genotype.describe()), 0)

    def _log_epoch(self, writer: Writer, record: dict, genotype: DiscriminatorGenotype) -> None:
        step, net = self.step, self.supernet
        with torch.no_grad():
            op_p = net.op_probs().cpu().numpy()
        for b in range(net.num_blocks):
            for j, op in enumerate(net.op_names):
                writer.add_scalar(f"prob/block{b:02d}/{op}", op_p[b, j], step)
        for w, p in record["width_probs"].items():
            writer.add_scalar(f"prob/width/{w}", p, step)
        for n, p in record["norm_probs"].items():
            writer.add_scalar(f"prob/norm/{n}", p, step)
        blocks = [f"block {b}" for b in range(net.num_blocks)]
        writer.add_figure(
            "arch/op_probs", probability_heatmap(op_p, blocks, list(net.op_names), "op probabilities"), step
        )
        writer.add_figure("arch/genotype", discriminator_figure(genotype, f"epoch {record['epoch']}"), step)
        log_epoch(writer, step, genotype.describe(), {
            "val/psnr_generator": record["val_psnr_generator"],
            "cost/derived_gmacs": record["derived_macs"] / 1e9,
            "cost/expected_gmacs_epoch": record["expected_macs"] / 1e9,
            "cost/derived_params": record["derived_params"],
        })  # fmt: skip
        log_samples(writer, self.generator, self.val_pairs[: self.cfg.run.samples], step, self.device)

    def stage_summary(self) -> dict[str, Any]:
        s = self.cfg.stage2
        genotype = (
            DiscriminatorGenotype.from_dict(self.history[-1]["genotype"]) if self.history else self.supernet.derive()
        )
        atomic_write_text(self.run_dir / run_files.DISCRIMINATOR_GENOTYPE, genotype.to_json() + "\n")
        last = self.history[-1] if self.history else {}
        return {
            "genotype": genotype.to_dict(),
            "params": discriminator_params(genotype),
            "macs": discriminator_macs(genotype, s.macs_size, s.macs_size),
            "macs_size": s.macs_size,
            "reference_macs": reference_macs(self.supernet, s.macs_size),
            "budget_macs": self.budget if s.penalty != "none" and s.penalty_weight > 0 else None,
            "d_objective": s.d_objective,
            "generator_genotype": self.generator_genotype.to_dict(),
            "generator_val_psnr_pretrained": self.pretrained_psnr,
            "generator_val_psnr": last.get("val_psnr_generator"),
            "pretrain_steps": self.pretrain_steps,
            "epochs": s.epochs,
            "perceptual_backbone": BACKBONE_LABEL[self.perceptual_pretrained],
        }


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors)))
