"""The stage-2 architecture gradient: the discriminator is judged by what it does to the generator.

DARTS's unrolled step, applied across two networks. With generator weights ``w`` and the discriminator's
architecture parameters ``a``, ``T`` virtual generator steps under the adversarial training loss,

    w_{t+1}(a) = w_t - xi * P * dL_train_t(w_t, a)/dw_t,   w_0 = w,   t = 0 .. T-1,

move the generator the way the current discriminator would push it (``L_train_t`` on its own batch; ``P`` a fixed
diagonal preconditioner, 1 for DARTS's plain SGD step, or ``darts_sr.search.architect.adam_preconditioner`` so that each
virtual step is the size of the generator optimizer's real Adam step). The discriminator's architecture follows the
generator's validation objective after those steps, ``L_val(w_T(a))`` (no adversarial term; ``L_val`` does not
depend on ``a`` directly). For T = 1:

    dL_val(w_1(a))/da = -xi * d2L_train/(da dw) . P dL_val/dw_1.

The derivative is taken exactly, by double backpropagation through the unrolled steps, not by DARTS's
finite-difference Hessian-vector product: each virtual step's gradient is built with ``create_graph``, so the steps
are differentiable functions of ``a`` (and, for T > 1, of the previous step's weights: the generator's own
Hessian-vector products are included), and one backward pass from ``L_val`` gives the hypergradient. For T = 1 this
costs one extra backward pass where the central difference costs two extra forward and backward passes of
generator and discriminator, and needs no difference step. The virtual weights are tensors evaluated through
``torch.func.functional_call``: the generator's own weights are never modified, not even temporarily.

``mean_hypergradient`` averages the hypergradients of several independent problems (batches): one architecture
step from K batches, whose noise averages down by sqrt(K).

Loss callables take a callable generator (the module, or its functional view at virtual weights) and return a
scalar; they close over their own batches, so the same batch is used at every evaluation inside one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

GeneratorFn = Callable[[Tensor], Tensor]
GeneratorLossFn = Callable[[GeneratorFn], Tensor]


class _AtWeights:
    """The generator evaluated at the (virtual) weights ``params``: (B, 3, h, w) -> (B, 3, H, W), like the module."""

    def __init__(self, module: nn.Module, params: dict[str, Tensor]):
        self.module, self.params = module, params

    def __call__(self, x: Tensor) -> Tensor:
        return functional_call(self.module, self.params, (x,))


def cross_hypergradient(
    arch_params: Sequence[nn.Parameter],
    generator: nn.Module,
    train_loss: GeneratorLossFn | Sequence[GeneratorLossFn],
    val_loss: GeneratorLossFn,
    xi: float,
    precondition: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """Sets ``p.grad`` of the discriminator's architecture parameters to ``dL_val(w_T(a))/da``.

    ``train_loss(g)``: the generator's training loss under the current discriminator (its adversarial term is
    where ``a`` enters; its discriminator weights should be frozen so no graph is built into them); a sequence of
    them unrolls one virtual step per entry, in order (T = its length). ``val_loss(g)``: the generator's
    validation objective, with no adversarial term. ``precondition``: one tensor (or None = 1) per trainable
    generator parameter, in ``named_parameters`` order. Returns ``L_val(w_T)`` (detached). The generator's
    weights and ``.grad`` are left as they were.
    """
    if xi <= 0:
        raise ValueError(f"the unrolled step size xi must be positive, got {xi}")
    train_losses = [train_loss] if callable(train_loss) else list(train_loss)
    if not train_losses:
        raise ValueError("the unroll needs at least one training loss (one virtual step)")
    names, weights = zip(*((n, p) for n, p in generator.named_parameters() if p.requires_grad))
    scales = list(precondition) if precondition is not None else [None] * len(weights)
    if len(scales) != len(weights):
        raise ValueError(f"precondition has {len(scales)} entries for {len(weights)} trainable generator parameters")
    # Step 0 reads the module itself (gradients w.r.t. its leaves); later steps read the virtual weights, which
    # are functions of a through every earlier step.
    current: Sequence[Tensor] = weights
    for t, loss_fn in enumerate(train_losses):
        g_fn = generator if t == 0 else _AtWeights(generator, dict(zip(names, current)))
        grads = torch.autograd.grad(loss_fn(g_fn), current, create_graph=True, allow_unused=True)
        current = [
            (w.detach() if t == 0 else w) - xi * (torch.zeros_like(w) if g is None else g if s is None else s * g)
            for w, g, s in zip(current, grads, scales)
        ]
    loss = val_loss(_AtWeights(generator, dict(zip(names, current))))
    if loss.requires_grad:
        arch_grads = torch.autograd.grad(loss, arch_params, allow_unused=True)
    else:  # no path from a to the objective (e.g. no adversarial term): the hypergradient is zero
        arch_grads = [None] * len(arch_params)
    for p, g in zip(arch_params, arch_grads):
        p.grad = torch.zeros_like(p) if g is None else g.detach()
    return loss.detach()


def mean_hypergradient(
    arch_params: Sequence[nn.Parameter],
    generator: nn.Module,
    problems: Sequence[tuple[GeneratorLossFn | Sequence[GeneratorLossFn], GeneratorLossFn]],
    xi: float,
    precondition: Sequence[Tensor | None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Sets ``p.grad`` to the mean of ``cross_hypergradient`` over ``problems`` (``(train_loss, val_loss)`` pairs,
    each on its own batches).

    Returns the mean ``L_val`` (detached) and the individual hypergradients, (K, n_arch) flattened in
    ``arch_params`` order, from which the caller can estimate the mean's noise.
    """
    if not problems:
        raise ValueError("mean_hypergradient needs at least one problem")
    samples, losses = [], []
    for train_loss, val_loss in problems:
        losses.append(cross_hypergradient(arch_params, generator, train_loss, val_loss, xi, precondition))
        samples.append(torch.cat([p.grad.flatten() for p in arch_params]))
    stacked = torch.stack(samples)  # (K, n_arch)
    mean = stacked.mean(dim=0)
    offset = 0
    for p in arch_params:
        p.grad = mean[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return torch.stack(losses).mean(), stacked
