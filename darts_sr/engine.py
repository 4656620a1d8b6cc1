"""What search and retraining share: run folders, seeding, checkpoints, the GAN step, logging.

BasicSR's GAN step: the discriminator is frozen for the generator step, then stepped on
``sr.detach()``. Every loss term is a named, weighted entry of a loss dict that ends up in
TensorBoard as ``loss/<name>``. A non-finite loss is never applied.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from darts_sr import distributed
from darts_sr.config import LossConfig
from darts_sr.io import atomic_torch_save, atomic_write_text, load_checkpoint
from darts_sr.losses import GeneratorLoss, LossWeights, PerceptualLoss, relativistic_discriminator_terms

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoints/last.pt"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked."""


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint has been written."""


class NonFiniteLoss(RuntimeError):
    """Too many consecutive non-finite losses; the message names the step and the term."""


def prepare_run_folder(path: Path, resume: bool, overwrite: bool) -> Path:
    """Creates ``path``; refuses a non-empty one unless resuming or overwriting. Under torchrun rank 0
    decides and creates, and every rank gets its answer."""
    return distributed.on_main(lambda: _prepare_run_folder(path, resume, overwrite), RunFolderError)


def _prepare_run_folder(path: Path, resume: bool, overwrite: bool) -> Path:
    path = Path(path)
    if resume:
        if not (path / CHECKPOINT_NAME).is_file():
            raise RunFolderError(f"{path}: nothing to resume (no {CHECKPOINT_NAME})")
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
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def seed_everything(seed: int) -> torch.Generator:
    """Seeds the global generators and returns a dedicated generator for data sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def summary_writer(log_dir: Path, purge_step: int | None) -> SummaryWriter | NullWriter:
    """TensorBoard events from rank 0 only; the other ranks log into a writer that drops everything."""
    return SummaryWriter(str(log_dir), purge_step=purge_step) if distributed.is_main() else NullWriter()


class NullWriter:
    """SummaryWriter's interface, writing nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def log_scalars(writer: SummaryWriter | NullWriter, step: int, losses: dict[str, float], logs: dict[str, float],
                lrs: dict[str, float]) -> None:  # fmt: skip
    """A step's scalars: GAN-step losses and architecture-step terms under ``loss/``, other namespaced keys
    (``grad/``, ``cost/``) as they are, learning rates under ``lr/``."""
    for k, v in losses.items():
        writer.add_scalar(f"loss/{k}", v, step)
    for k, v in logs.items():
        writer.add_scalar(k if "/" in k and not k.startswith("arch/") else f"loss/{k}", v, step)
    for k, v in lrs.items():
        writer.add_scalar(f"lr/{k}", v, step)


def log_samples(writer: SummaryWriter | NullWriter, net: nn.Module, pairs: list, step: int,
                device: torch.device) -> None:  # fmt: skip
    """SR beside HR for each validation pair, as TensorBoard images."""
    from darts_sr.data import to_tensor, to_uint8

    for pair in pairs:
        with torch.no_grad():
            sr = to_uint8(net.eval()(to_tensor(pair.lr).to(device)).cpu())
        net.train()
        writer.add_image(f"samples/{pair.name}", np.concatenate([sr, pair.hr], axis=1), step, dataformats="HWC")


def replica_report(modules: list[nn.Module | None]) -> dict[str, float | int]:
    """For the summary: how many processes trained, and how far any replica's parameters are from rank 0's."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    return {"world_size": distributed.world_size(), "replica_max_abs_diff": distributed.max_replica_difference(params)}


BACKBONE_LABEL = {None: "unused", True: "ImageNet VGG19", False: "RANDOM VGG19"}


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(state, run_dir / CHECKPOINT_NAME)


def load_run_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=device)


def rng_state(data_generator: torch.Generator) -> dict[str, Tensor]:
    return {"data": data_generator.get_state(), "torch": torch.get_rng_state()}


def restore_rng_state(data_generator: torch.Generator, state: dict[str, Tensor]) -> None:
    data_generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])


def draw_batch(sampler: Any, batch_size: int, generator: torch.Generator, device: torch.device) -> list[Tensor]:
    """``[lr, hr]`` on ``device``: this process's shard of the step's batch (all of it without torchrun)."""
    return [t.to(device) for t in sampler.sample(batch_size, generator, *distributed.shard())]


def build_criterion(loss: LossConfig, device: torch.device) -> tuple[GeneratorLoss, bool | None]:
    """The weighted generator loss of a phase and whether its VGG19 is pretrained (None: unused)."""
    weights = LossWeights(loss.pixel, loss.perceptual, loss.adversarial)
    perceptual = None
    if weights.perceptual > 0:
        perceptual = PerceptualLoss(loss.perceptual_layer, loss.pretrained_dir, loss.allow_random_backbone)
        if not perceptual.pretrained:
            log.warning("the perceptual loss uses a RANDOMLY INITIALISED VGG19 (loss.allow_random_backbone=true)")
    return GeneratorLoss(weights, perceptual).to(device), None if perceptual is None else perceptual.pretrained


def set_requires_grad(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def generator_loss(
    sr: Tensor, hr: Tensor, criterion: GeneratorLoss, discriminator: nn.Module | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The generator's weighted loss; the discriminator (if any) sees ``hr`` without gradient."""
    if criterion.needs_discriminator:
        real_logits = discriminator(hr).detach()
        fake_logits = discriminator(sr)
        return criterion(sr, hr, real_logits, fake_logits)
    return criterion(sr, hr)


class NonFiniteGuard:
    """Counts consecutive non-finite losses; raises after ``limit`` of them."""

    def __init__(self, limit: int):
        self.limit, self.consecutive = limit, 0

    def ok(self, step: int, losses: dict[str, Tensor]) -> bool:
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


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def gan_step(
    generator: nn.Module,
    discriminator: nn.Module | None,
    lr: Tensor,
    hr: Tensor,
    criterion: GeneratorLoss,
    g_optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer | None,
    g_params: list[nn.Parameter],
    guard: NonFiniteGuard,
    step: int,
    grad_clip: float | None = None,
) -> dict[str, float]:
    """One generator step (discriminator frozen), then one discriminator step on ``sr.detach()``."""
    set_requires_grad(discriminator, False)
    g_optimizer.zero_grad(set_to_none=True)
    sr = generator(lr)
    total, losses = generator_loss(sr, hr, criterion, discriminator)
    losses = {**losses, "l_g_total": total}
    if not guard.ok(step, losses):
        return {}
    total.backward()
    distributed.average_gradients(g_params)
    if grad_clip:
        nn.utils.clip_grad_norm_(g_params, grad_clip)
    g_optimizer.step()
    out = {k: float(v.detach()) for k, v in losses.items()}
    if criterion.needs_discriminator and d_optimizer is not None:
        set_requires_grad(discriminator, True)
        d_optimizer.zero_grad(set_to_none=True)
        terms = relativistic_discriminator_terms(discriminator(hr), discriminator(sr.detach()))
        d_total = (terms["l_d_real"] + terms["l_d_fake"]) / 2
        if not guard.ok(step, {**terms, "l_d_total": d_total}):
            return out
        d_total.backward()
        distributed.average_gradients(optimizer_params(d_optimizer))
        d_optimizer.step()
        out |= {k: float(v.detach()) for k, v in terms.items()}
    return out


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


def run_steps(
    owner: Any, total: int, one_step: Callable[[Any], None], checkpoint: Callable[[], None], desc: str
) -> None:
    """Calls ``one_step(bar)`` until ``owner.step == total``; on a signal, checkpoints and raises StopRequested."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=owner.step, desc=desc, unit="step", dynamic_ncols=True,
               disable=not distributed.is_main())  # fmt: skip
    with owner.stop, bar:
        while owner.step < total:
            one_step(bar)
            # torchrun forwards a signal to every worker, but not necessarily between the same two steps.
            if distributed.any_rank(owner.stop.signum is not None):
                checkpoint()
                name = signal.Signals(owner.stop.signum or signal.SIGTERM).name
                raise StopRequested(
                    f"stopped by {name} at step {owner.step}; checkpoint written, continue with --resume"
                )
