"""The bilevel architecture step: architecture parameters follow the validation loss.

``arch_gradients`` fills ``.grad`` of the architecture parameters, either first order (the
validation loss's gradient at the current weights) or second order (DARTS's unrolled step:
the gradient at ``w' = w - xi * P dL_train/dw``, minus ``xi`` times a Hessian-vector product
in the direction ``P dL_val/dw'``, taken by central finite differences). ``P`` is a diagonal
preconditioner: 1 for DARTS's plain SGD step; ``adam_preconditioner`` makes the virtual step
the size of the weight optimizer's real Adam step (with P = 1 and xi = Adam's learning rate,
the virtual step is thousands of times smaller than the real one, and second order is first
order at three times the cost). Weights are restored exactly afterwards.

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
    precondition: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """Sets ``p.grad`` for every architecture parameter; returns the validation loss (detached).

    ``precondition``: one tensor (or None = 1) per entry of ``weight_params``, for the second-order step.
    """
    if order == "first":
        loss = val_loss()
        grads = torch.autograd.grad(loss, arch_params, allow_unused=True)
        _set_grads(arch_params, grads)
        return loss.detach()
    if order != "second":
        raise ValueError(f"order must be 'first' or 'second', got {order!r}")
    pairs = list(zip(weight_params, precondition or [None] * len(weight_params)))
    weights = [p for p, _ in pairs if p.requires_grad]
    scales = [s for p, s in pairs if p.requires_grad]
    backup = [p.detach().clone() for p in weights]
    try:
        # Phase 1: virtual weight step on the training loss.
        grads_w = torch.autograd.grad(train_loss(), weights, allow_unused=True)
        with torch.no_grad():
            for p, g, s in zip(weights, grads_w, scales):
                if g is not None:
                    p.sub_(xi * (g if s is None else s * g))
        # Phase 2: validation loss at the virtual weights.
        loss = val_loss()
        grads = torch.autograd.grad(loss, [*arch_params, *weights], allow_unused=True)
        d_arch, d_weights = grads[: len(arch_params)], grads[len(arch_params) :]
        # The chain rule through w' = w - xi P g_train: the Hessian term acts on P dL_val/dw'.
        d_weights = [g if g is None or s is None else s * g for g, s in zip(d_weights, scales)]
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


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> list[Tensor | None]:
    """Per parameter, Adam's current per-coordinate step scale ``1 / (sqrt(v_hat) + eps)``: with ``xi`` = the
    learning rate, ``xi * P * g`` is the size of Adam's real step. None where Adam has no state yet."""
    out: list[Tensor | None] = []
    for p in params:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            out.append(None)
            continue
        group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
        beta2, eps = group["betas"][1], group["eps"]
        step = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - beta2**step)
        out.append(1.0 / (v_hat.sqrt() + eps))
    return out
