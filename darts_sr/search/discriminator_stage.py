"""Stage 2, the discriminator search: a discriminator supernet chosen for what it does to the generator.

A fixed tiny generator (a derived genotype: stage 1's result or ``stage2.generator``) is first pixel-pretrained for
``stage2.pretrain_steps`` steps (or loaded from ``stage2.generator_weights``). Then each step: (1) after the warm-up,
an architecture step for the discriminator supernet: by default the hypergradient of the generator's validation
objective (``stage2.objective``: pixel + perceptual, no adversarial term) through ``stage2.unroll_steps`` unrolled
generator steps taken under the adversarial loss from the current discriminator (``discriminator_architect``),
averaged over ``stage2.arch_batches`` independent batches; or with ``d_objective: adversarial`` the gradient of the
discriminator's own validation loss; plus an optional MACs penalty. (2) BasicSR's GAN step: the generator on its
perceptual-adversarial loss (adversarial weight ``stage2.adversarial``) with the supernet frozen, then the
supernet's weights on the relativistic loss.

The perceptual term of the objective is VGG19 features with ImageNet weights when they exist; without them and with
``stage2.objective.allow_random_backbone`` a randomly initialised VGG19 (fixed seed), which the log, TensorBoard
and the summary call RANDOM VGG19: random features, not the perceptual loss ESRGAN means.

Each epoch ends with the generator's validation PSNR, the derived discriminator genotype (kept as history),
TensorBoard summaries and a checkpoint. Stage 2 shares the run folder with stage 1 under ``--stage all``: its files
are named ``*_discriminator*`` and its TensorBoard events go to ``tb/discriminator``. Checkpoints are step-exact.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from darts_sr import distributed, run_files
from darts_sr.config import ConfigError, SearchConfig
from darts_sr.data import PatchSampler, load_training_pairs, load_validation_pairs, split_halves
from darts_sr.evaluation.scoring import PSNR_ONLY, evaluate_pairs
from darts_sr.io import atomic_write_text
from darts_sr.losses import LOSSES, GeneratorLoss, LossWeights, cost_penalty, relativistic_discriminator_loss
from darts_sr.nets.discriminator import DiscriminatorGenotype, discriminator_macs, discriminator_params
from darts_sr.nets.genotype import GeneratorGenotype, load_generator_genotype
from darts_sr.nets.networks import Generator, load_generator
from darts_sr.search.architect import adam_preconditioner
from darts_sr.search.discriminator_architect import mean_hypergradient
from darts_sr.search.discriminator_supernet import DiscriminatorSupernet, reference_macs
from darts_sr.search.plots import discriminator_figure, probability_heatmap
from darts_sr.training.gan import BACKBONE_LABEL, gan_step
from darts_sr.training.runner import Run, RunFolderError, draw_batch
from darts_sr.training.schedules import cosine
from darts_sr.training.tensorboard_logs import Writer, as_markdown, log_epoch, log_samples, log_scalars

log = logging.getLogger(__name__)

# The random-feature VGG19 of an offline objective is drawn from this seed, not from the run's RNG: the objective is
# then the same function in every run and seed, and building it does not shift the run's random stream.
RANDOM_BACKBONE_SEED = 0


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
        adversarial = cfg.loss.adversarial if s.adversarial is None else s.adversarial
        if adversarial <= 0:
            raise ConfigError(
                "stage 2 needs an adversarial weight > 0 (stage2.adversarial, or loss.adversarial when that is "
                "null): without it the discriminator cannot affect the generator"
            )
        for key in ("arch_batches", "unroll_steps"):
            if getattr(s, key) < 1:
                raise ConfigError(f"stage2.{key} must be at least 1, got {getattr(s, key)}")
        if s.d_objective == "generator" and s.objective.adversarial != 0:
            raise ConfigError(
                "stage2.objective.adversarial must be 0: the objective that steers alpha_D is the generator's "
                "validation loss without the discriminator"
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
            self.supernet = DiscriminatorSupernet(s.blocks, s.base_widths, s.norms, s.ops, s.heads).to(self.device)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"stage2: {e.args[0] if e.args else e}") from None

        distributed.broadcast_module(self.generator)
        distributed.broadcast_module(self.supernet)

        scale = cfg.data.scale
        train_half, arch_half = split_halves(load_training_pairs(cfg.data.train, scale))
        self.weight_sampler = PatchSampler(train_half, cfg.data.patch_size, scale, skip_small=cfg.data.skip_small)
        self.arch_sampler = PatchSampler(arch_half, cfg.data.patch_size, scale, skip_small=cfg.data.skip_small)
        self.val_pairs = load_validation_pairs(cfg.data.val, cfg.data.train, scale, cfg.data.val_crop)

        # The generator's training loss in this stage: `loss` with the search's adversarial weight.
        self.criterion = GeneratorLoss.from_config(dataclasses.replace(cfg.loss, adversarial=adversarial))
        self.criterion.to(self.device)
        self.perceptual_pretrained = self.criterion.perceptual_pretrained
        self.objective = self._build_objective() if s.d_objective == "generator" else None
        pretrained = None if self.objective is None else self.objective.perceptual_pretrained
        self.objective_backbone = BACKBONE_LABEL[pretrained]
        self.budget = s.budget_macs or float(reference_macs(self.supernet, s.macs_size))

        self.search_steps = s.epochs * s.steps_per_epoch
        self.total_steps = self.pretrain_steps + self.search_steps
        g_params = list(self.generator.parameters())
        self.p_optimizer = torch.optim.Adam(g_params, lr=s.pretrain_lr, betas=(0.9, 0.99))
        self.g_optimizer = torch.optim.Adam(g_params, lr=s.generator_lr, betas=(0.9, 0.99))
        self.d_optimizer = torch.optim.Adam(self.supernet.weight_parameters(), lr=s.d_lr, betas=(0.9, 0.99))
        # AdamW with a tiny eps: the generator-objective hypergradient is O(xi * adversarial); Adam's update does not
        # depend on that scale, but eps = 1e-8 or an L2 term added to the gradient would dominate it.
        self.a_optimizer = torch.optim.AdamW(
            self.supernet.arch_parameters(),
            lr=s.arch_lr,
            betas=(0.5, 0.999),
            eps=s.arch_eps,
            weight_decay=s.arch_weight_decay,
        )
        self.pretrained_psnr = None
        # Whether the architecture steps had a signal to follow (the summary's "hypergradient"): running sums of the
        # unit-normalised objective gradients, and per step the fraction of components whose sign agrees with the
        # previous step's.
        self.grad_stats: dict[str, Any] = {"steps": 0, "sum": None, "sumsq": None, "agreement": [], "previous": None}
        if resume:
            self.resume()
        log.info("stage 2: %s", self.describe_objective())

    def _build_objective(self) -> GeneratorLoss:
        """``stage2.objective`` as a loss; shares the training loss's VGG19 when it is the same network. Its VGG19
        weights are looked up in ``stage2.objective.pretrained_dir``, else in ``loss.pretrained_dir``."""
        obj = self.cfg.stage2.objective
        obj = dataclasses.replace(obj, pretrained_dir=obj.pretrained_dir or self.cfg.loss.pretrained_dir)
        try:
            weights = LossWeights.from_config(obj)
        except ValueError as e:
            raise ConfigError(f"stage2.objective: {e}") from None
        modules = {}
        if weights["perceptual"] > 0:
            shared = self.criterion.terms["perceptual"] if "perceptual" in self.criterion.terms else None
            if (
                shared is not None
                and shared.layer == obj.perceptual_layer
                and self.cfg.loss.pretrained_dir == obj.pretrained_dir
                and (shared.pretrained or obj.allow_random_backbone)
            ):
                modules["perceptual"] = shared
            else:
                try:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(RANDOM_BACKBONE_SEED)
                        modules["perceptual"] = LOSSES["perceptual"].build(obj)
                except ValueError as e:  # an unknown layer
                    raise ConfigError(f"stage2.objective.perceptual_layer: {e}") from None
        return GeneratorLoss(weights, modules).to(self.device)

    def describe_objective(self) -> str:
        s = self.cfg.stage2
        if self.objective is None:
            return "alpha_D follows the discriminator's own relativistic loss on val batches (d_objective adversarial)"
        w, obj = self.objective.weights, s.objective
        terms = [f"{w['pixel']:g} x L1"] if w["pixel"] > 0 else []
        if w["perceptual"] > 0:
            backbone = self.objective_backbone
            if self.objective.perceptual_pretrained is False:
                backbone += " (random features, NOT the ImageNet perceptual loss)"
            terms.append(f"{w['perceptual']:g} x {obj.perceptual_layer} features of {backbone}")
        return (
            f"alpha_D follows the generator's val loss {' + '.join(terms)} after {s.unroll_steps} virtual "
            f"{s.unroll_optimizer} step(s) under adversarial weight {self.criterion.weights['adversarial']:g}, "
            f"averaged over {s.arch_batches} batch(es) per architecture step"
        )

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
            "grad_stats": self.grad_stats,
        }

    def load_stage_state(self, state: dict[str, Any]) -> None:
        if state["generator_genotype"] != self.generator_genotype.to_dict():
            raise RunFolderError(f"{self.run_dir}: the checkpoint was searched against another generator")
        try:
            self.supernet.load_state_dict(state["supernet"])
        except RuntimeError:
            raise RunFolderError(
                f"{self.run_dir}: the checkpoint's discriminator supernet does not match stage2's search space "
                "(written by another version or config)"
            ) from None
        self.generator.load_state_dict(state["generator"])
        for name in ("p_optimizer", "g_optimizer", "d_optimizer", "a_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.pretrained_psnr = state["pretrained_psnr"]
        self.grad_stats = state["grad_stats"]

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

    def _generator_loss_under_supernet(self, generator: Any, lq: Tensor, gt: Tensor) -> Tensor:
        """The generator's training loss with the supernet's current architecture; both logits keep their graph.

        Unlike the G step, D(gt) is not detached: the relativistic generator loss depends on mean(D(gt)), and
        that is one of the ways the architecture changes the generator's gradient. The supernet's weights are
        frozen here, so the graph reaches only its architecture parameters. ``generator``: the module or its
        functional view at virtual weights.
        """
        sr = generator(lq)
        return self.criterion(sr, gt, self.supernet(gt), self.supernet(sr))[0]

    def _draw(self, sampler: PatchSampler) -> list[Tensor]:
        return draw_batch(sampler, self.cfg.data.batch_size, self.data_generator, self.device)

    def _objective_gradient(
        self, train_batch: list[Tensor], val_batch: list[Tensor], lr_now: float, details: dict[str, float]
    ) -> tuple[Tensor, Tensor]:
        """Sets the architecture parameters' ``.grad`` to the objective's gradient, averaged over
        ``stage2.arch_batches`` problems; the first uses the given batches, the others fresh draws. Returns the
        mean objective (detached) and the per-problem gradients (K, n_arch)."""
        s, arch = self.cfg.stage2, self.supernet.arch_parameters()
        sums: dict[str, float] = {}

        def record(terms: dict[str, Tensor]) -> None:
            for k, v in terms.items():
                sums[f"arch/val_{k}"] = sums.get(f"arch/val_{k}", 0.0) + float(v.detach()) / s.arch_batches

        if s.d_objective == "generator":
            problems = []
            for k in range(s.arch_batches):
                # Unroll batches from the train half (the first is the GAN step's own), the objective's from the
                # arch half, all drawn here in a fixed order so that a resumed run draws the same.
                trains = [
                    train_batch if k == 0 and t == 0 else self._draw(self.weight_sampler) for t in range(s.unroll_steps)
                ]
                val = val_batch if k == 0 else self._draw(self.arch_sampler)
                problems.append(([self._train_loss_fn(b) for b in trains], self._val_loss_fn(val, record)))
            weights = [p for p in self.generator.parameters() if p.requires_grad]
            precondition = adam_preconditioner(self.g_optimizer, weights) if s.unroll_optimizer == "adam" else None
            loss, samples = mean_hypergradient(arch, self.generator, problems, s.xi or lr_now, precondition)
        else:
            losses, rows = [], []
            for k in range(s.arch_batches):
                lq, gt = val_batch if k == 0 else self._draw(self.arch_sampler)
                with torch.no_grad():
                    sr = self.generator(lq)
                d_loss, terms = relativistic_discriminator_loss(self.supernet(gt), self.supernet(sr))
                grads = torch.autograd.grad(d_loss, arch, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(arch, grads)]
                rows.append(torch.cat([g.flatten() for g in grads]))
                losses.append(d_loss.detach())
                record(terms)
            samples, loss = torch.stack(rows), torch.stack(losses).mean()
            mean, offset = samples.mean(dim=0), 0
            for p in arch:
                p.grad = mean[offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        details |= sums
        return loss, samples

    def _train_loss_fn(self, batch: list[Tensor]) -> Callable[[Any], Tensor]:
        return lambda g: self._generator_loss_under_supernet(g, *batch)

    def _val_loss_fn(self, batch: list[Tensor], record: Callable[[dict[str, Tensor]], None]) -> Callable[[Any], Tensor]:
        def val_loss(generator: Any) -> Tensor:
            total, terms = self.objective(generator(batch[0]), batch[1])
            record(terms)
            return total

        return val_loss

    def _gradient_statistics(self, samples: Tensor) -> dict[str, float]:
        """Accumulates the step's mean objective gradient (unit-normalised: its scale follows xi, i.e. the learning
        rate schedule) for the summary's signal report; returns the sign agreement with the previous step."""
        mean = samples.detach().double().cpu().mean(dim=0)
        norm = mean.norm()
        if not bool(torch.isfinite(norm)) or norm == 0:
            return {}
        unit, stats = mean / norm, self.grad_stats
        stats["steps"] += 1
        stats["sum"] = unit if stats["sum"] is None else stats["sum"] + unit
        stats["sumsq"] = unit**2 if stats["sumsq"] is None else stats["sumsq"] + unit**2
        out = {}
        if stats["previous"] is not None:
            searched = (unit != 0) | (stats["previous"] != 0)  # a configured choice's gradient is exactly zero
            agreement = float((unit[searched].sign() == stats["previous"][searched].sign()).double().mean())
            stats["agreement"].append(agreement)
            out["grad/sign_agreement"] = agreement
        stats["previous"] = unit
        return out

    def signal_report(self) -> dict[str, Any]:
        """Did alpha_D follow a signal? Per searched component, |mean| / std over the architecture steps of the
        unit-normalised objective gradient (median per choice and overall), beside the median the same statistic has
        when the gradient is pure noise (about 0.674 / sqrt(steps)); and the mean sign agreement of consecutive
        steps (0.5 for noise)."""
        stats, n = self.grad_stats, self.grad_stats["steps"]
        report: dict[str, Any] = {"arch_steps": n, "batches_per_step": self.cfg.stage2.arch_batches}
        report["sign_agreement_mean"] = _mean(stats["agreement"])
        if n < 2:
            return report | {"snr_median": None, "snr_by_choice": None, "snr_noise_floor": None}
        mean = stats["sum"] / n
        std = ((stats["sumsq"] - n * mean**2).clamp_min(0) / (n - 1)).sqrt()
        snr = mean.abs() / std.clamp_min(1e-12)
        searched = stats["sumsq"] > 0
        groups = torch.split(torch.arange(mean.numel()), [p.numel() for p in self.supernet.arch_parameters()])
        by_choice = {}
        for name, index in zip(("ops", "width", "norm", "head"), groups):
            chosen = index[searched[index]]
            by_choice[name] = float(snr[chosen].median()) if chosen.numel() else None
        return report | {
            "snr_median": float(snr[searched].median()) if bool(searched.any()) else None,
            "snr_by_choice": by_choice,
            "snr_noise_floor": 0.674 / n**0.5,
        }

    def _arch_step(self, train_batch: list[Tensor], val_batch: list[Tensor], lr_now: float) -> dict[str, float]:
        s, arch = self.cfg.stage2, self.supernet.arch_parameters()
        details: dict[str, float] = {}
        self.supernet.set_weights_trainable(False)
        for p in arch:
            p.requires_grad_(True)
        try:
            loss, samples = self._objective_gradient(train_batch, val_batch, lr_now, details)
            details["grad/objective_norm"] = _norm([p.grad for p in arch])
            details |= self._gradient_statistics(samples)
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
        if self.step == 0 and self.pretrained_psnr is None and s.generator_weights:
            # The loaded generator's starting point, as pretraining logs its end: what the GAN steps cost in PSNR.
            self.pretrained_psnr = self._generator_psnr()
            writer.add_scalar("val/psnr_generator", self.pretrained_psnr, self.step)
            log.info("generator loaded from %s: val Y-PSNR %.2f dB", s.generator_weights, self.pretrained_psnr)
        weight_batch = self._draw(self.weight_sampler)
        arch_batch = self._draw(self.arch_sampler)
        search_step = self.step - self.pretrain_steps
        lr_now = cosine(search_step, self.search_steps, s.generator_lr, s.generator_lr_min)
        for group in self.g_optimizer.param_groups:
            group["lr"] = lr_now
        epoch = search_step // s.steps_per_epoch
        logs: dict[str, float] = {}
        if epoch >= s.warmup_epochs:
            logs |= self._arch_step(weight_batch, arch_batch, lr_now)
        losses = gan_step(
            self.generator,
            self.supernet,
            *weight_batch,
            self.criterion,
            self.g_optimizer,
            self.d_optimizer,
            list(self.generator.parameters()),
            self.guard,
            self.step,
            s.grad_clip,
        )
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

    def choice_probs(self) -> dict[str, Any]:
        """The supernet's current probabilities per choice: ops per block, width, norm, head."""
        net = self.supernet
        with torch.no_grad():
            return {
                "ops": [dict(zip(net.op_names, row)) for row in net.op_probs().tolist()],
                "width": dict(zip(map(str, net.widths), net.width_probs().tolist())),
                "norm": dict(zip(net.norms, net.norm_probs().tolist())),
                "head": dict(zip(net.heads, net.head_probs().tolist())),
            }

    def _end_epoch(self, writer: Writer, epoch: int) -> None:
        s = self.cfg.stage2
        psnr = self._generator_psnr()
        genotype = self.supernet.derive()
        with torch.no_grad():
            expected = float(self.supernet.expected_macs(s.macs_size))
        probs = self.choice_probs()
        record = {
            "epoch": epoch,
            "step": self.step,
            "val_psnr_generator": psnr,
            "expected_macs": expected,
            "derived_macs": discriminator_macs(genotype, s.macs_size, s.macs_size),
            "derived_params": discriminator_params(genotype),
            "width_probs": probs["width"],
            "norm_probs": probs["norm"],
            "head_probs": probs["head"],
            "max_probs": _max_probs(probs),
            "genotype": genotype.to_dict(),
        }
        self.history.append(record)
        atomic_write_text(self.run_dir / self.files.history_file(epoch), genotype.to_json() + "\n")
        self._log_epoch(writer, record, genotype)
        self.checkpoint()
        top = record["max_probs"]
        log.info(
            "D epoch %d: generator val Y-PSNR %.2f dB; derived D %s, width %d (p %.2f), norm %s (p %.2f), head %s "
            "(p %.2f), mean max op p %.2f: %.3f GMACs@%d, %d params",
            epoch,
            psnr,
            ",".join(genotype.blocks),
            genotype.base_width,
            top["width"],
            genotype.norm,
            top["norm"],
            genotype.head,
            top["head"],
            sum(top["ops"]) / len(top["ops"]),
            record["derived_macs"] / 1e9,
            s.macs_size,
            record["derived_params"],
        )

    # --- TensorBoard -------------------------------------------------------------------------

    def log_start(self, writer: Writer) -> None:
        super().log_start(writer)
        writer.add_text("generator", as_markdown(self.generator_genotype.describe()), 0)
        writer.add_text("objective", self.describe_objective(), 0)

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
        for h, p in record["head_probs"].items():
            writer.add_scalar(f"prob/head/{h}", p, step)
        blocks = [f"block {b}" for b in range(net.num_blocks)]
        writer.add_figure(
            "arch/op_probs", probability_heatmap(op_p, blocks, list(net.op_names), "op probabilities"), step
        )
        writer.add_figure("arch/genotype", discriminator_figure(genotype, f"epoch {record['epoch']}"), step)
        log_epoch(
            writer,
            step,
            genotype.describe(),
            {
                "val/psnr_generator": record["val_psnr_generator"],
                "cost/derived_gmacs": record["derived_macs"] / 1e9,
                "cost/expected_gmacs_epoch": record["expected_macs"] / 1e9,
                "cost/derived_params": record["derived_params"],
            },
        )
        log_samples(writer, self.generator, self.val_pairs[: self.cfg.run.samples], step, self.device)

    def stage_summary(self) -> dict[str, Any]:
        s = self.cfg.stage2
        genotype = (
            DiscriminatorGenotype.from_dict(self.history[-1]["genotype"]) if self.history else self.supernet.derive()
        )
        atomic_write_text(self.run_dir / run_files.DISCRIMINATOR_GENOTYPE, genotype.to_json() + "\n")
        last = self.history[-1] if self.history else {}
        probs, obj, signal = self.choice_probs(), s.objective, self.signal_report()
        top = _max_probs(probs)
        log.info(
            "D search: max probabilities width %.2f, norm %.2f, head %.2f, ops per block %s; hypergradient |mean|/std "
            "over %d steps %s (noise alone: %s), consecutive sign agreement %s",
            top["width"],
            top["norm"],
            top["head"],
            "/".join(f"{p:.2f}" for p in top["ops"]),
            signal["arch_steps"],
            _fmt(signal["snr_median"]),
            _fmt(signal.get("snr_noise_floor")),
            _fmt(signal["sign_agreement_mean"]),
        )
        return {
            "genotype": genotype.to_dict(),
            "params": discriminator_params(genotype),
            "macs": discriminator_macs(genotype, s.macs_size, s.macs_size),
            "macs_size": s.macs_size,
            "reference_macs": reference_macs(self.supernet, s.macs_size),
            "budget_macs": self.budget if s.penalty != "none" and s.penalty_weight > 0 else None,
            "d_objective": s.d_objective,
            # What steered alpha_D, and with which network: "RANDOM VGG19" is random features, not ESRGAN's loss.
            "objective": None
            if self.objective is None
            else {
                "pixel": self.objective.weights["pixel"],
                "perceptual": self.objective.weights["perceptual"],
                "perceptual_layer": obj.perceptual_layer,
                "backbone": self.objective_backbone,
            },
            "objective_description": self.describe_objective(),
            "adversarial_weight": self.criterion.weights["adversarial"],
            "arch_batches": s.arch_batches,
            "unroll_steps": s.unroll_steps,
            "unroll_optimizer": s.unroll_optimizer,
            # The final probabilities, and the largest per choice (1.0 for a configured, single-candidate choice).
            "probs": probs,
            "max_probs": top,
            "hypergradient": signal,
            "generator_genotype": self.generator_genotype.to_dict(),
            "generator_val_psnr_pretrained": self.pretrained_psnr,
            "generator_val_psnr": last.get("val_psnr_generator"),
            "pretrain_steps": self.pretrain_steps,
            "epochs": s.epochs,
            "perceptual_backbone": BACKBONE_LABEL[self.perceptual_pretrained],
        }


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors)))


def _max_probs(probs: dict[str, Any]) -> dict[str, Any]:
    """The largest probability of each choice: a list for the per-block ops, a number for width, norm, head."""
    return {
        "ops": [max(row.values()) for row in probs["ops"]],
        **{name: max(probs[name].values()) for name in ("width", "norm", "head")},
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
