"""The bilevel architecture step: architecture parameters follow the validation loss.

``arch_gradients`` fills ``.grad`` of the architecture parameters, either first order (the
validation loss's gradient at the current weights) or second order (DARTS's unrolled step:
the gradient at ``w' = w - xi * dL_train/dw``, minus ``xi`` times a Hessian-vector product
taken by central finite differences). Weights are restored exactly afterwards.

Loss callables take no arguments and return a scalar: they close over their own batches, so
the same batch is used at every evaluation inside one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

LossFn = Callable[[], Tensor]


def arch_gradients(
    arch_params: Sequence[nn.Parameter],
    weight_params: Sequence[nn.Parameter],
    train_loss: LossFn,
    val_loss: LossFn,
    order: str = "first",
    xi: float = 0.0,
) -> Tensor:
    """Sets ``p.grad`` for every architecture parameter; returns the validation loss (detached)."""
    if order == "first":
        loss = val_loss()
        grads = torch.autograd.grad(loss, arch_params, allow_unused=True)
        _set_grads(arch_params, grads)
        return loss.detach()
    if order != "second":
        raise ValueError(f"order must be 'first' or 'second', got {order!r}")
    weights = [p for p in weight_params if p.requires_grad]
    backup = [p.detach().clone() for p in weights]
    try:
        # Phase 1: virtual weight step on the training loss.
        grads_w = torch.autograd.grad(train_loss(), weights, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(weights, grads_w):
                if g is not None:
                    p.sub_(xi * g)
        # Phase 2: validation loss at the virtual weights.
        loss = val_loss()
        grads = torch.autograd.grad(loss, [*arch_params, *weights], allow_unused=True)
        d_arch, d_weights = grads[: len(arch_params)], grads[len(arch_params) :]
        # Phase 3: Hessian-vector product d2L_train/(da dw) . dL_val/dw' by central differences at w.
        norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in d_weights if g is not None))
        eps = 0.01 / (norm.item() + 1e-12)
        plus = _train_arch_grads_at(arch_params, weights, backup, d_weights, eps, train_loss)
        minus = _train_arch_grads_at(arch_params, weights, backup, d_weights, -eps, train_loss)
        hessian_term = [None if gp is None else (gp - gm) / (2 * eps) for gp, gm in zip(plus, minus)]
        final = [_sub(da, None if h is None else xi * h) for da, h in zip(d_arch, hessian_term)]
        _set_grads(arch_params, final)
        return loss.detach()
    finally:
        _restore(weights, backup)


def _train_arch_grads_at(arch_params, weights, origin, direction, eps, train_loss):
    with torch.no_grad():
        for p, w0, d in zip(weights, origin, direction):
            p.copy_(w0 if d is None else w0 + eps * d)
    return torch.autograd.grad(train_loss(), arch_params, allow_unused=True)


def _restore(weights, backup):
    with torch.no_grad():
        for p, w0 in zip(weights, backup):
            p.copy_(w0)


def _sub(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return None if b is None else -b
    return a if b is None else a - b


def _set_grads(params: Sequence[nn.Parameter], grads: Sequence[Tensor | None]) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.zeros_like(p) if g is None else g.detach().clone()
