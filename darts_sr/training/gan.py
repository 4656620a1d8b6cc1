"""BasicSR's GAN step, shared by the search, stage 2 and retraining.

The discriminator is frozen for the generator step, then stepped on ``sr.detach()``. Every loss term is a named,
weighted entry of a loss dict that ends up in TensorBoard as ``loss/<name>``. A non-finite loss is never applied.
Under torchrun the gradients are averaged across processes before every optimizer step.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.optim import Optimizer

from darts_sr import distributed
from darts_sr.losses import GeneratorLoss, relativistic_discriminator_loss
from darts_sr.training.runner import NonFiniteGuard

# For summaries: which VGG19 a run's perceptual term used (GeneratorLoss.perceptual_pretrained).
BACKBONE_LABEL = {None: "unused", True: "ImageNet VGG19", False: "RANDOM VGG19"}


def set_requires_grad(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def optimizer_params(optimizer: Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def generator_loss(
    sr: Tensor, gt: Tensor, criterion: GeneratorLoss, discriminator: nn.Module | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The generator's weighted loss; the discriminator (if any) sees ``gt`` without gradient."""
    if criterion.needs_features:
        if not hasattr(discriminator, "forward_features"):
            raise ValueError(
                f"feature matching needs a discriminator with features, not {type(discriminator).__name__}"
            )
        real_logits, real_features = discriminator.forward_features(gt)
        fake_logits, fake_features = discriminator.forward_features(sr)
        real_features = [f.detach() for f in real_features]
        return criterion(sr, gt, real_logits.detach(), fake_logits, real_features, fake_features)
    if criterion.needs_discriminator:
        real_logits = discriminator(gt).detach()
        fake_logits = discriminator(sr)
        return criterion(sr, gt, real_logits, fake_logits)
    return criterion(sr, gt)


def gan_step(
    generator: nn.Module,
    discriminator: nn.Module | None,
    lq: Tensor,
    gt: Tensor,
    criterion: GeneratorLoss,
    g_optimizer: Optimizer,
    d_optimizer: Optimizer | None,
    g_params: list[nn.Parameter],
    guard: NonFiniteGuard,
    step: int,
    grad_clip: float | None = None,
) -> dict[str, float]:
    """One generator step (discriminator frozen), then one discriminator step on ``sr.detach()``."""
    set_requires_grad(discriminator, False)
    g_optimizer.zero_grad(set_to_none=True)
    sr = generator(lq)
    total, losses = generator_loss(sr, gt, criterion, discriminator)
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
        d_total, terms = relativistic_discriminator_loss(discriminator(gt), discriminator(sr.detach()))
        if not guard.ok(step, {**terms, "l_d_total": d_total}):
            return out
        d_total.backward()
        distributed.average_gradients(optimizer_params(d_optimizer))
        d_optimizer.step()
        out |= {k: float(v.detach()) for k, v in terms.items()}
    return out
