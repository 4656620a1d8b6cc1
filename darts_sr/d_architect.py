"""The stage-2 architecture gradient: the discriminator is judged by what it does to the generator.

DARTS's unrolled step, applied across two networks. With generator weights ``w`` and the discriminator's
architecture parameters ``a``, one virtual generator step under the adversarial training loss,

    w'(a) = w - xi * dL_train(w, a)/dw,

moves the generator the way the current discriminator would push it. The discriminator's architecture follows
the generator's validation loss (pixel + perceptual, no adversarial term) after that step:

    dL_val(w'(a))/da = -xi * d2L_train/(da dw) . dL_val/dw'  (L_val does not depend on a directly).

The mixed second derivative is taken exactly, by double backpropagation, not by DARTS's finite-difference
Hessian-vector product: the virtual step already needs ``dL_train/dw``; built with ``create_graph`` it is also the
graph that the Hessian-vector product differentiates, so the exact product costs one extra backward pass where the
central difference costs two extra forward and backward passes of generator and discriminator, and needs no
step size. The generator (tens of thousands of weights) is copied for the virtual step, so its own weights are
never modified, not even temporarily.

Loss callables take the generator module and return a scalar; they close over their own batches, so the same
batch is used at every evaluation inside one step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

GeneratorLossFn = Callable[[nn.Module], Tensor]


def cross_hypergradient(
    arch_params: Sequence[nn.Parameter],
    generator: nn.Module,
    train_loss: GeneratorLossFn,
    val_loss: GeneratorLossFn,
    xi: float,
) -> Tensor:
    """Sets ``p.grad`` of the discriminator's architecture parameters to ``dL_val(w'(a))/da``.

    ``train_loss(g)``: the generator's training loss under the current discriminator (its adversarial term is
    where ``a`` enters; its discriminator weights should be frozen so no graph is built into them);
    ``val_loss(g)``: the generator's validation objective, with no adversarial term. Returns ``L_val(w')``
    (detached). The generator's weights and ``.grad`` are left as they were.
    """
    if xi <= 0:
        raise ValueError(f"the unrolled step size xi must be positive, got {xi}")
    names, weights = zip(*((n, p) for n, p in generator.named_parameters() if p.requires_grad))
    # Phase 1: dL_train/dw at w, kept differentiable in a for the Hessian-vector product of phase 3.
    grads = torch.autograd.grad(train_loss(generator), weights, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
    # Phase 2: the virtual step, on a copy; v = dL_val/dw' at w'.
    virtual = copy.deepcopy(generator)
    virtual_params = dict(virtual.named_parameters())
    with torch.no_grad():
        for name, w, g in zip(names, weights, grads):
            virtual_params[name].copy_(w - xi * g)
    moved = [virtual_params[name] for name in names]
    loss = val_loss(virtual)
    v = torch.autograd.grad(loss, moved, allow_unused=True)
    # Phase 3: d/da (dL_train/dw . v) by double backpropagation, scaled by -xi.
    dot = sum((g * vi).sum() for g, vi in zip(grads, v) if vi is not None)
    arch_grads = (
        torch.autograd.grad(dot, arch_params, allow_unused=True)
        if isinstance(dot, Tensor) and dot.requires_grad
        else [None] * len(arch_params)
    )
    for p, g in zip(arch_params, arch_grads):
        p.grad = torch.zeros_like(p) if g is None else -xi * g.detach()
    return loss.detach()
