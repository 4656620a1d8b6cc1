"""The relaxation: how a supernet turns its architecture parameters into the weights it computes with.

The search space declares choices (an op per node, an input per node, an output gate per node, a kernel per
discriminator block); a ``Relaxation`` turns each choice's logits into weights. Supernets and the cost model
call it and nothing else, so the strategy is one config key (``supernet.strategy``), as NNI separates
``LayerChoice`` from ``DartsStrategy`` / ``GumbelDartsStrategy``:

- ``mixed`` (DARTS): softmax weights, sigmoid gates; every candidate is computed every step.
- ``sampled`` (GDAS / SNAS / FBNet): a hard Gumbel-softmax sample per choice and a hard-concrete sample per
  gate, with straight-through gradients: the forward pass is one discrete sub-network (one op per node, so a
  step costs one op instead of eight), the backward pass reaches every logit through the soft sample. The
  temperature ``tau`` is annealed by the search (``schedules.exponential``). In eval mode the sample is the
  argmax, i.e. the network ``derive()`` returns.

Probabilities for derivation, logging and the cost model are always the plain softmax / sigmoid of the logits
(``probabilities``/``gate_probabilities``), whatever the strategy.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor

MASKED = -1e9  # logit of an option a choice may not take (e.g. an input outside a node's window)


def probabilities(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last dimension; masked options get probability 0."""
    return F.softmax(logits if mask is None else logits.masked_fill(~mask, MASKED), dim=-1)


def gate_probabilities(logits: Tensor) -> Tensor:
    return torch.sigmoid(logits)


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """``hard``'s value with ``soft``'s gradient. Exact zeros stay exactly zero (``-s + s == 0``)."""
    return hard - soft.detach() + soft


def one_hot_argmax(probs: Tensor) -> Tensor:
    return F.one_hot(probs.argmax(dim=-1), probs.shape[-1]).to(probs.dtype)


class Relaxation(abc.ABC):
    """Turns choice logits into weights and gate logits into gates; ``sparse``: zero weights may be skipped."""

    name = "relaxation"
    sparse = False

    def __init__(self, tau: float = 1.0):
        self.tau = tau

    @abc.abstractmethod
    def choice(self, logits: Tensor, mask: Tensor | None = None, training: bool = True) -> Tensor:
        """(..., options) logits -> (..., options) weights for the options' outputs."""

    @abc.abstractmethod
    def gates(self, logits: Tensor, training: bool = True) -> Tensor:
        """(N,) logits -> (N,) gates in [0, 1]."""


class Mixed(Relaxation):
    """DARTS: every candidate weighted by its probability."""

    name = "mixed"

    def choice(self, logits: Tensor, mask: Tensor | None = None, training: bool = True) -> Tensor:
        return probabilities(logits, mask)

    def gates(self, logits: Tensor, training: bool = True) -> Tensor:
        return gate_probabilities(logits)


class Sampled(Relaxation):
    """Hard Gumbel-softmax choices and hard-concrete gates with straight-through gradients (GDAS, SNAS).

    Noise comes from the global torch generator, which checkpoints save, so a resumed search draws the same
    samples as an uninterrupted one.
    """

    name = "sampled"
    sparse = True

    def choice(self, logits: Tensor, mask: Tensor | None = None, training: bool = True) -> Tensor:
        probs = probabilities(logits, mask)
        if not training:
            return straight_through(one_hot_argmax(probs), probs)
        masked = logits if mask is None else logits.masked_fill(~mask, MASKED)
        gumbel = -torch.empty_like(masked).exponential_().log()  # Gumbel(0, 1)
        soft = F.softmax((masked + gumbel) / self.tau, dim=-1)
        return straight_through(one_hot_argmax(soft), soft)

    def gates(self, logits: Tensor, training: bool = True) -> Tensor:
        probs = gate_probabilities(logits)
        if not training:
            hard = (probs > 0.5).to(probs.dtype)
            soft = probs
        else:
            u = torch.rand_like(logits).clamp_(1e-6, 1 - 1e-6)
            soft = torch.sigmoid((logits + u.log() - (-u).log1p()) / self.tau)  # binary concrete (logistic noise)
            hard = (soft > 0.5).to(soft.dtype)
        if not bool(hard.any()):
            # An output needs at least one node: the most likely gate opens.
            hard = hard.clone()
            hard[probs.argmax()] = 1.0
        return straight_through(hard, soft)


STRATEGIES: dict[str, type[Relaxation]] = {"mixed": Mixed, "sampled": Sampled}


def make_relaxation(name: str, tau: float = 1.0) -> Relaxation:
    if name not in STRATEGIES:
        raise ValueError(f"unknown relaxation {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](tau)
