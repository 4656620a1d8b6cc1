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

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from darts_sr import distributed, engine
from darts_sr.config import ConfigError, SearchConfig, to_dict
from darts_sr.d_architect import cross_hypergradient
from darts_sr.d_supernet import DiscriminatorSupernet, reference_macs
from darts_sr.data import PatchSampler, load_dataset
from darts_sr.discriminator import (
    DiscriminatorGenotype,
    block_layout,
    block_norm,
    discriminator_macs,
    discriminator_params,
)
from darts_sr.evaluation import evaluate_pairs
from darts_sr.genotype import GeneratorGenotype, load_generator_genotype
from darts_sr.io import atomic_torch_save, atomic_write_text, load_checkpoint
from darts_sr.losses import GeneratorLoss, LossWeights, cost_penalty, relativistic_discriminator_terms
from darts_sr.networks import Generator, load_generator
from darts_sr.plots import probability_heatmap
from darts_sr.search import centre_crop, cosine_lr, load_training_pairs, split_halves

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoints/discriminator_last.pt"
GENOTYPE_NAME = "genotype_discriminator.json"
SUMMARY_NAME = "summary_discriminator.json"
TENSORBOARD_DIR = "tb/discriminator"
STAGE1_GENOTYPE_NAME = "genotype_generator.json"


def resolve_generator_genotype(config: SearchConfig, run_dir: Path) -> GeneratorGenotype:
    """``stage2.generator`` (a JSON file or built-in name), else the run folder's stage-1 result."""
    spec = config.stage2.generator
    if spec is None:
        path = Path(run_dir) / STAGE1_GENOTYPE_NAME
        if not path.is_file():
            raise ConfigError(
                "stage 2 needs a generator: pass --generator PATH.json (stage2.generator), or run --stage all so "
                f"that stage 1 writes {STAGE1_GENOTYPE_NAME} into the run folder"
            )
        spec = str(path)
    genotype = load_generator_genotype(spec)
    if genotype.scale != config.data.scale:
        raise ConfigError(
            f"stage2.generator {spec}: the genotype is x{genotype.scale} but data.scale is {config.data.scale}"
        )
    return genotype


class DiscriminatorSearch:
    """The stage-2 search in a run folder; ``run()`` returns the summary."""

    def __init__(self, config: SearchConfig, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir = config, Path(run_dir)
        cfg, s = config, config.stage2
        if cfg.loss.adversarial <= 0:
            raise ConfigError(
                "stage 2 needs loss.adversarial > 0: without it the discriminator cannot affect the generator"
            )
        if s.d_objective == "generator" and cfg.loss.pixel <= 0 and cfg.loss.perceptual <= 0:
            raise ConfigError(
                "stage2.d_objective 'generator' needs loss.pixel or loss.perceptual > 0 (the val objective)"
            )
        self.device = distributed.init(cfg.run.device)
        self.data_generator = engine.seed_everything(cfg.run.seed)
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

        self.criterion, self.perceptual_pretrained = engine.build_criterion(cfg.loss, self.device)
        perceptual = self.criterion.perceptual
        # The generator's validation objective: the same pixel and perceptual weights, no adversarial term.
        self.val_criterion = None
        if s.d_objective == "generator":
            self.val_criterion = GeneratorLoss(LossWeights(cfg.loss.pixel, cfg.loss.perceptual, 0.0), perceptual)
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
        self.guard = engine.NonFiniteGuard(cfg.run.max_bad_steps)
        self.step, self.history, self.wall_before, self.pretrained_psnr = 0, [], 0.0, None
        if resume:
            self._load(load_checkpoint(self.run_dir / CHECKPOINT_NAME, self.device))
        self.stop = engine.SignalStop()
        self.started = time.time()

    # --- checkpointing -----------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "kind": "discriminator_search",
            "step": self.step,
            "config": to_dict(self.cfg),
            "generator_genotype": self.generator_genotype.to_dict(),
            "generator": self.generator.state_dict(),
            "supernet": self.supernet.state_dict(),
            "p_optimizer": self.p_optimizer.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "rng": engine.rng_state(self.data_generator),
            "history": self.history,
            "pretrained_psnr": self.pretrained_psnr,
            "wall_time": self.wall_before + time.time() - self.started,
            "bad_steps": self.guard.consecutive,
        }

    def _load(self, state: dict) -> None:
        if state.get("kind") != "discriminator_search":
            raise engine.RunFolderError(f"{self.run_dir}: {CHECKPOINT_NAME} is not a discriminator search")
        if state["generator_genotype"] != self.generator_genotype.to_dict():
            raise engine.RunFolderError(f"{self.run_dir}: the checkpoint was searched against another generator")
        self.generator.load_state_dict(state["generator"])
        self.supernet.load_state_dict(state["supernet"])
        for name in ("p_optimizer", "g_optimizer", "d_optimizer", "a_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        engine.restore_rng_state(self.data_generator, state["rng"])
        self.step, self.history, self.pretrained_psnr = state["step"], state["history"], state["pretrained_psnr"]
        self.wall_before, self.guard.consecutive = state["wall_time"], state["bad_steps"]
        log.info("resumed the discriminator search in %s at step %d", self.run_dir, self.step)

    def _checkpoint(self) -> None:
        atomic_torch_save(self._state(), self.run_dir / CHECKPOINT_NAME)

    # --- steps -------------------------------------------------------------------------------

    def _pretrain_step(self, writer: SummaryWriter) -> None:
        lr, hr = engine.draw_batch(self.weight_sampler, self.cfg.data.batch_size, self.data_generator, self.device)
        self.p_optimizer.zero_grad(set_to_none=True)
        loss = F.l1_loss(self.generator(lr), hr)
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
            self._checkpoint()
            log.info("generator pixel-pretrained for %d steps: val Y-PSNR %.2f dB", self.step, self.pretrained_psnr)

    def _generator_loss_under_supernet(self, generator: torch.nn.Module, lr: Tensor, hr: Tensor) -> Tensor:
        """The generator's training loss with the supernet's current architecture; both logits keep their graph.

        Unlike the G step, D(hr) is not detached: the relativistic generator loss depends on mean(D(hr)), and
        that is one of the ways the architecture changes the generator's gradient. The supernet's weights are
        frozen here, so the graph reaches only its architecture parameters.
        """
        sr = generator(lr)
        return self.criterion(sr, hr, self.supernet(hr), self.supernet(sr))[0]

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
                lr, hr = val_batch
                with torch.no_grad():
                    sr = self.generator(lr)
                terms = relativistic_discriminator_terms(self.supernet(hr), self.supernet(sr))
                loss = (terms["l_d_real"] + terms["l_d_fake"]) / 2
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

    def _one_step(self, writer: SummaryWriter, bar: tqdm) -> None:
        if self.step < self.pretrain_steps:
            self._pretrain_step(writer)
            bar.update(1)
            return
        cfg, s = self.cfg, self.cfg.stage2
        bs = cfg.data.batch_size
        weight_batch = engine.draw_batch(self.weight_sampler, bs, self.data_generator, self.device)
        arch_batch = engine.draw_batch(self.arch_sampler, bs, self.data_generator, self.device)
        search_step = self.step - self.pretrain_steps
        lr_now = cosine_lr(search_step, self.search_steps, s.generator_lr, s.generator_lr_min)
        for group in self.g_optimizer.param_groups:
            group["lr"] = lr_now
        epoch = search_step // s.steps_per_epoch
        logs: dict[str, float] = {}
        if epoch >= s.warmup_epochs:
            logs |= self._arch_step(weight_batch, arch_batch, lr_now)
        losses = engine.gan_step(
            self.generator, self.supernet, *weight_batch, self.criterion, self.g_optimizer, self.d_optimizer,
            list(self.generator.parameters()), self.guard, self.step, s.grad_clip,
        )  # fmt: skip
        self.step += 1
        bar.update(1)
        if losses:
            bar.set_postfix(loss=f"{losses['l_g_total']:.4f}", refresh=False)
        if self.step % cfg.run.log_every == 0:
            lrs = {
                "generator": lr_now,
                "discriminator": self.d_optimizer.param_groups[0]["lr"],
                "arch": self.a_optimizer.param_groups[0]["lr"],
            }
            engine.log_scalars(writer, self.step, losses, logs, lrs)
        if (search_step + 1) % s.steps_per_epoch == 0:
            self._end_epoch(writer, epoch + 1)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> dict:
        self.started = time.time()
        writer = engine.summary_writer(self.run_dir / TENSORBOARD_DIR, purge_step=self.step or None)
        if self.step == 0:
            self._log_start(writer)
        try:
            engine.run_steps(
                self, self.total_steps, lambda bar: self._one_step(writer, bar), self._checkpoint, "search D"
            )
        finally:
            writer.close()
        return self._finish()

    def _generator_psnr(self) -> float | None:
        return evaluate_pairs(self.generator, self.val_pairs, "val", self.cfg.data.scale, device=self.device).psnr_y

    def _end_epoch(self, writer: SummaryWriter, epoch: int) -> None:
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
        atomic_write_text(
            self.run_dir / "history" / f"genotype_discriminator_epoch_{epoch:03d}.json", genotype.to_json() + "\n"
        )
        self._log_epoch(writer, record, genotype)
        self._checkpoint()
        log.info(
            "D epoch %d: generator val Y-PSNR %.2f dB; derived D %s, width %d, norm %s: %.3f GMACs@%d, %d params",
            epoch, psnr, ",".join(genotype.blocks), genotype.base_width, genotype.norm, record["derived_macs"] / 1e9,
            s.macs_size, record["derived_params"],
        )  # fmt: skip

    # --- TensorBoard -------------------------------------------------------------------------

    def _log_start(self, writer: SummaryWriter) -> None:
        text = json.dumps(to_dict(self.cfg), indent=2).replace("\n", "  \n")
        writer.add_text("config", text, 0)
        writer.add_text("generator", self.generator_genotype.describe().replace("\n", "  \n"), 0)
        if self.perceptual_pretrained is False:
            writer.add_text("warning", "perceptual loss uses a RANDOMLY INITIALISED VGG19", 0)

    def _log_epoch(self, writer: SummaryWriter, record: dict, genotype: DiscriminatorGenotype) -> None:
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
        writer.add_text("genotype", genotype.describe().replace("\n", "  \n"), step)
        if record["val_psnr_generator"] is not None:
            writer.add_scalar("val/psnr_generator", record["val_psnr_generator"], step)
        writer.add_scalar("cost/derived_gmacs", record["derived_macs"] / 1e9, step)
        writer.add_scalar("cost/expected_gmacs_epoch", record["expected_macs"] / 1e9, step)
        writer.add_scalar("cost/derived_params", record["derived_params"], step)
        engine.log_samples(writer, self.generator, self.val_pairs[: self.cfg.run.samples], step, self.device)

    def _finish(self) -> dict:
        s = self.cfg.stage2
        genotype = (
            DiscriminatorGenotype.from_dict(self.history[-1]["genotype"]) if self.history else self.supernet.derive()
        )
        atomic_write_text(self.run_dir / GENOTYPE_NAME, genotype.to_json() + "\n")
        last = self.history[-1] if self.history else {}
        summary = {
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
            "steps": self.step,
            "wall_time_s": round(self.wall_before + time.time() - self.started, 1),
            "perceptual_backbone": engine.BACKBONE_LABEL[self.perceptual_pretrained],
            "distributed": engine.replica_report([self.generator, self.supernet]),
        }
        atomic_write_text(self.run_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
        return summary


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors)))


def discriminator_figure(genotype: DiscriminatorGenotype, title: str = "") -> Figure:
    """Blocks left to right as boxes whose height grows with width; op, channels and stride written in each."""
    import matplotlib.pyplot as plt

    layout = block_layout(len(genotype.blocks), genotype.base_width)
    widest = max(c_out for _, c_out, _ in layout)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * (len(layout) + 1), 3.0))
    for i, (op, (_, c_out, stride)) in enumerate(zip(genotype.blocks, layout)):
        height = 0.4 + 1.6 * c_out / widest
        color = "tab:blue" if stride == 1 else "tab:purple"
        ax.add_patch(plt.Rectangle((i - 0.4, -height / 2), 0.8, height, color=color, alpha=0.8))
        ax.text(i, 0, f"{op}\n{c_out}\ns{stride}\n{block_norm(i, genotype.norm)}", ha="center", va="center", fontsize=6)
    ax.add_patch(plt.Rectangle((len(layout) - 0.4, -0.3), 0.8, 0.6, color="tab:red", alpha=0.8))
    ax.text(len(layout), 0, "pool\nMLP", ha="center", va="center", fontsize=6, color="w")
    ax.set_xlim(-0.7, len(layout) + 0.7)
    ax.set_ylim(-1.3, 1.3)
    ax.axis("off")
    ax.set_title(title or f"discriminator, base width {genotype.base_width}, norm {genotype.norm}", fontsize=9)
    fig.tight_layout()
    return fig
