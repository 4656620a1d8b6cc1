"""The generator supernet: every node chooses an input and an op; gates choose the nodes summed at the output.

Architecture parameters (all ``nn.Parameter``s, kept apart from the weights):

- ``alpha``  (N, n_ops): logits over ops, per node;
- ``beta``   (N, N): logits over a node's candidate inputs (stem or an earlier node), masked;
- ``gamma``  (N,): one gate logit per node, for membership in the output.

The relaxation (``darts_sr.search.relaxation``: ``mixed`` or ``sampled``) turns them into the weights the forward pass
uses. Mixing is per node: a node first mixes its inputs, then applies its ops to that mixture (every op under
``mixed``, the sampled one under ``sampled``). Per-edge mixing (DARTS) would run every op on every candidate input,
N(N+1)/2 instead of N op sets: 5.5x the op evaluations for N = 10 (bench/search_step.py measures the step time).

``normalize`` (search-time only, as DARTS's affine-free search BN): the stem's and every op's output pass
through an affine-free BatchNorm, and the output is the gate-weighted *mean* of the node states times one
learnable gain (a weight, not an architecture parameter). Without it, states shrink with depth and the input and
output weights work as gain knobs: the loss wants amplitude, so every node drifts onto the stem and every gate
opens, whatever the quality of the shapes. The derived ``Generator`` stays TPSR-style, without normalisation.

Macro structure, mean shift and upsampler are those of ``darts_sr.nets.networks.Generator``.

The cost (``darts_sr.search.cost``): ``cost`` is a ``Cost``, MACs at the reference size by default or milliseconds
of a latency table; ``expected_cost``, ``argmax_cost`` and derivation's window rule take it (``expected_macs`` and
``argmax_macs`` are the MACs ones whatever ``cost`` is).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from darts_sr.nets.genotype import GeneratorGenotype, Node, live_nodes, prune
from darts_sr.nets.networks import REFERENCE_LR_SIZE, MeanShift, Upsampler, generator_macs
from darts_sr.search.cost import Cost, best_in_window, expected_cost, macs_cost
from darts_sr.search.relaxation import (
    MASKED,
    gate_probabilities,
    make_relaxation,
    one_hot_argmax,
    probabilities,
    straight_through,
)
from operations import OPS, build_op

log = logging.getLogger(__name__)

INITIAL_GAIN = 64.0


class GeneratorSupernet(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, sH, sW); a continuous relaxation of the generator search space."""

    def __init__(
        self,
        nodes: int = 10,
        channels: int = 16,
        scale: int = 4,
        ops: tuple[str, ...] = ("conv_3x3", "skip"),
        input_window: int | None = None,
        strategy: str = "mixed",
        normalize: bool = False,
        cost: Cost | None = None,
    ):
        super().__init__()
        if nodes < 1:
            raise ValueError("a supernet needs at least one node")
        for op in ops:
            if op not in OPS:
                raise KeyError(f"unknown operation {op!r} in the search space; known: {', '.join(OPS)}")
        if set(ops) <= {"none"}:
            raise ValueError("the search space needs an op other than 'none'")
        self.num_nodes, self.channels, self.scale, self.op_names = nodes, channels, scale, tuple(ops)
        self.relaxation, self.normalize = make_relaxation(strategy), normalize
        self.mean_shift = MeanShift()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.node_ops = nn.ModuleList(nn.ModuleList(build_op(op, channels) for op in ops) for _ in range(nodes))
        self.output_act = nn.PReLU(1)
        self.upsampler = Upsampler(channels, scale)
        if normalize:
            self.stem_norm = nn.BatchNorm2d(channels, affine=False)
            self.op_norms = nn.ModuleList(
                nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in ops) for _ in range(nodes)
            )
            # The output's amplitude: a weight, trained on the train half. It starts near the standard deviation of
            # natural images on TPSR's 0-255 scale (~64), so that unit-variance states reach the upsampler at the
            # amplitude an unnormalised generator has (from 1, Adam would need thousands of steps to get there).
            self.gain = nn.Parameter(torch.tensor(INITIAL_GAIN))
        self.alpha = nn.Parameter(1e-3 * torch.randn(nodes, len(ops)))
        self.beta = nn.Parameter(1e-3 * torch.randn(nodes, nodes))
        self.gamma = nn.Parameter(1e-3 * torch.randn(nodes))
        # input_mask[k, j]: node k+1 may read state j (0 = stem, j = node j).
        mask = torch.zeros(nodes, nodes, dtype=torch.bool)
        for k in range(1, nodes + 1):
            lowest = 0 if input_window is None else max(1, k - input_window)
            mask[k - 1, 0] = True
            mask[k - 1, lowest:k] = True
        self.register_buffer("input_mask", mask, persistent=False)
        self.register_buffer("op_macs_per_pixel", torch.tensor([float(OPS[o].macs(channels, 1, 1)) for o in ops]))
        # What the cost penalty and the window rule count: MACs at the reference size unless a search sets another.
        self.cost = macs_cost(ops, channels, scale) if cost is None else cost
        if self.cost.ops != self.op_names:
            raise ValueError(f"the cost is over ops {self.cost.ops}, the supernet's are {self.op_names}")

    # --- parameter groups --------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta, self.gamma]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # --- probabilities -----------------------------------------------------------------------

    def op_probs(self) -> Tensor:  # (N, n_ops)
        return probabilities(self.alpha)

    def input_probs(self) -> Tensor:  # (N, N), row k-1: over states 0..N-1, zero where masked
        return probabilities(self.beta, self.input_mask)

    def output_probs(self) -> Tensor:  # (N,)
        return gate_probabilities(self.gamma)

    def entropies(self) -> Tensor:
        """(N,) entropy of each node's op distribution, in nats (log(n_ops) when uniform, 0 when decided)."""
        p = self.op_probs()
        return -(p * p.clamp_min(1e-12).log()).sum(dim=-1)

    # --- forward -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        r, training = self.relaxation, self.training
        op_w, in_w = r.choice(self.alpha, training=training), r.choice(self.beta, self.input_mask, training)
        out_w = r.gates(self.gamma, training)
        stem = self.stem(self.mean_shift.to_model(x))
        states = [self.stem_norm(stem) if self.normalize else stem]  # each (B, C, H, W)
        for k, ops in enumerate(self.node_ops):
            candidates = torch.stack(states, dim=0)  # (k+1, B, C, H, W)
            mixed_input = torch.einsum("s,sbchw->bchw", in_w[k, : k + 1], candidates)
            chosen = op_w[k].detach().nonzero().flatten().tolist() if r.sparse else range(len(ops))
            states.append(sum(op_w[k, j] * self._op_output(k, j, mixed_input) for j in chosen))
        nodes = torch.stack(states[1:], dim=0)  # (N, B, C, H, W)
        if self.normalize:
            body = self.gain * torch.einsum("n,nbchw->bchw", out_w / out_w.sum(), nodes)
        else:
            body = torch.einsum("n,nbchw->bchw", out_w, nodes)
        return self.mean_shift.from_model(self.upsampler(self.output_act(body)))

    def _op_output(self, node: int, op: int, x: Tensor) -> Tensor:
        out = self.node_ops[node][op](x)
        return self.op_norms[node][op](out) if self.normalize else out

    # --- cost --------------------------------------------------------------------------------

    def argmax_cost(self, cost: Cost | None = None) -> Tensor:
        """The argmax network's cost (before the skip cap and the budget repair; default ``self.cost``),
        differentiable by straight-through: the value is what argmax derivation costs, the gradient that of the
        expected cost there. What the cost penalty acts on, so that it acts on what is derived."""
        op_p, in_p, out_p = self.op_probs(), self.input_probs(), self.output_probs()
        op_hard = one_hot_argmax(op_p.masked_fill(self._none_mask(), -1.0))
        out_hard = (out_p > 0.5).to(out_p.dtype)
        if not bool(out_hard.any()):
            out_hard = one_hot_argmax(out_p)
        return expected_cost(
            straight_through(op_hard, op_p),
            straight_through(one_hot_argmax(in_p), in_p),
            straight_through(out_hard, out_p),
            self.cost if cost is None else cost,
        )

    def expected_cost(self, cost: Cost | None = None) -> Tensor:
        """E[cost] of the derived generator (default ``self.cost``), differentiable in the architecture parameters."""
        cost = self.cost if cost is None else cost
        return expected_cost(self.op_probs(), self.input_probs(), self.output_probs(), cost)

    def macs_cost(self, lr_height: int | None = None, lr_width: int | None = None) -> Cost:
        """MACs at this LR size (default: the scale's 720p output) as a ``Cost``."""
        default_h, default_w = REFERENCE_LR_SIZE[self.scale]
        return macs_cost(self.op_names, self.channels, self.scale, (lr_height or default_h, lr_width or default_w))

    def argmax_macs(self, lr_height: int | None = None, lr_width: int | None = None) -> Tensor:
        """Exact MACs of the argmax network, straight-through (``argmax_cost`` in MACs, whatever ``self.cost``)."""
        return self.argmax_cost(self.macs_cost(lr_height, lr_width))

    def _none_mask(self) -> Tensor:
        """(n_ops,) True for ``none``, which a derived generator may not contain (DARTS drops it too)."""
        return torch.tensor([op == "none" for op in self.op_names], device=self.alpha.device)

    def expected_macs(self, lr_height: int | None = None, lr_width: int | None = None) -> Tensor:
        """E[MACs] of the derived generator, differentiable in the architecture parameters."""
        return self.expected_cost(self.macs_cost(lr_height, lr_width))

    # --- selection by measurement (DARTS-PT) -------------------------------------------------

    @torch.no_grad()
    def perturbation_scores(self, loss: Callable[[], float]) -> tuple[Tensor, Tensor]:
        """DARTS-PT's measure (Wang et al., ICLR 2021): for every node, how much ``loss`` (a validation loss of
        this supernet, on fixed batches) rises when one candidate op, or one candidate input, is removed and the
        node's remaining weights are renormalised. An op the network relies on costs much to remove, whatever
        its architecture weight says. Returns ``(op_scores (N, n_ops), input_scores (N, N))``; options that
        cannot be removed (masked inputs, a node's only input) score 0, masked inputs are never chosen.

        Batch norms use the batch's statistics without updating their running averages: removing an op moves
        the statistics of every later state, which stored averages would not follow.
        """
        op_scores = torch.zeros_like(self.alpha)
        input_scores = torch.zeros_like(self.beta)
        with self._batch_statistics():
            base = loss()
            for k in range(self.num_nodes):
                for o in range(len(self.op_names)):
                    op_scores[k, o] = self._loss_without(self.alpha, (k, o), loss) - base
                allowed = self.input_mask[k].nonzero().flatten().tolist()
                for j in allowed if len(allowed) > 1 else []:
                    input_scores[k, j] = self._loss_without(self.beta, (k, j), loss) - base
        return op_scores, input_scores

    def _loss_without(self, logits: nn.Parameter, index: tuple[int, int], loss: Callable[[], float]) -> float:
        saved = logits[index].item()
        logits[index] = MASKED
        try:
            return loss()
        finally:
            logits[index] = saved

    @contextlib.contextmanager
    def _batch_statistics(self):
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        saved = [(m.training, m.momentum) for m in norms]
        was_training = self.training
        self.eval()  # the relaxation's eval choices: Mixed weights, or the argmax path of Sampled
        for m in norms:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running: the stored averages stay as they are
        try:
            yield
        finally:
            for m, (training, momentum) in zip(norms, saved):
                m.train(training)
                m.momentum = momentum
            self.train(was_training)

    # --- discretisation ----------------------------------------------------------------------

    def derive(self, max_skip_nodes: int | None = None, max_macs: float | None = None) -> GeneratorGenotype:
        return self.derive_with_report(max_skip_nodes, max_macs)[0]

    def derive_with_report(
        self,
        max_skip_nodes: int | None = None,
        max_macs: float | None = None,
        window: tuple[float, float] | None = None,
        scores: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[GeneratorGenotype, dict]:
        """The most likely discrete generator, dead nodes pruned, and a report: ``argmax_macs`` and ``argmax_cost``
        (in ``self.cost``'s unit; both before the skip cap and any budget rule), ``cost`` (the derived generator's),
        ``window_changes`` (nodes whose op the window selection changed), ``repair_swaps`` (ops the repair changed)
        and ``over_budget`` (still above ``max_macs`` after it).

        ``none`` is never chosen (a node that computes nothing is expressed by not reading it).

        ``max_skip_nodes`` caps parameter-free ``skip`` nodes (P-DARTS's remedy for DARTS's drift
        toward skip): the least confident skips above the cap take their best other op.
        ``window=(low, high)``, in ``self.cost``'s unit (MACs, or ms as the table predicts them, corrected where the
        table says so): when the argmax network's cost falls outside it, the ops of the live nodes are chosen as the
        most probable combination (largest sum of log-probabilities) whose cost lies inside it, exactly, by dynamic
        programming over the nodes (``darts_sr.search.cost.best_in_window``; inputs and outputs stay the argmax ones).
        ``max_macs`` (the older rule) makes cheaper choices, least costly in probability first, until the
        derived generator fits.
        ``scores=(op_scores, input_scores)`` (``perturbation_scores``) replace the log-probabilities as what each
        node maximises: ops and inputs are chosen by measurement instead of by the architecture weights.
        """
        with torch.no_grad():
            op_p, in_p, out_p = self.op_probs(), self.input_probs(), self.output_probs()
            op_p = op_p.masked_fill(self._none_mask(), 0.0)
            if scores is None:
                op_score, in_score = op_p.clamp_min(1e-30).log(), in_p
            else:
                op_score = scores[0].masked_fill(self._none_mask(), -math.inf)
                in_score = scores[1].masked_fill(~self.input_mask, -math.inf)
        choice = op_score.argmax(dim=1).tolist()
        inputs = in_score.argmax(dim=1).tolist()
        outputs = tuple(k + 1 for k in range(self.num_nodes) if out_p[k] > 0.5) or (int(out_p.argmax()) + 1,)
        # Liveness depends on inputs and outputs only, so op changes below never revive or kill a node.
        live = sorted(live_nodes(tuple(Node("skip", i) for i in inputs), outputs))

        def genotype(choice: list[int]) -> GeneratorGenotype:
            nodes = tuple(Node(self.op_names[o], i) for o, i in zip(choice, inputs))
            return prune(nodes, outputs, self.channels, self.scale)

        argmax_macs = generator_macs(genotype(choice))
        argmax_cost = self.cost.of_genotype(genotype(choice))
        skip = self.op_names.index("skip") if "skip" in self.op_names else None
        if max_skip_nodes is not None and skip is not None:
            live_skips = sorted((k - 1 for k in live if choice[k - 1] == skip), key=lambda k: -op_score[k, skip].item())
            for k in live_skips[max_skip_nodes:]:
                choice[k] = next(o for o in op_score[k].argsort(descending=True).tolist() if o != skip)
        changes = 0
        cost = self.cost
        if window is not None and not window[0] <= cost.of_genotype(genotype(choice)) <= window[1]:
            within = best_in_window(op_score, live, window, cost, len(outputs), max_skip_nodes, skip)
            changes = sum(choice[k] != within[k] for k in range(self.num_nodes))
            choice = within
            if not window[0] <= cost.of_genotype(genotype(choice)) <= window[1]:
                log.warning(
                    "derive: no choice of ops for the %d live nodes fits %s-%s; the nearest costs %s",
                    len(live),
                    cost.format(window[0]).split()[0],
                    cost.format(window[1]),
                    cost.format(cost.of_genotype(genotype(choice))).split()[0],
                )
        swaps = 0
        if max_macs is not None:
            while generator_macs(genotype(choice)) > max_macs:
                step = self._cheapest_downgrade(choice, live, op_p, exclude=skip)
                if step is None:
                    break
                choice[step[0]] = step[1]
                swaps += 1
        derived = genotype(choice)
        over = max_macs is not None and generator_macs(derived) > max_macs
        if swaps or over:
            log.warning(
                "derive: the argmax network costs %.3f GMACs; the budget repair made %d swap(s)%s",
                argmax_macs / 1e9,
                swaps,
                ", and it is still over the budget" if over else "",
            )
        report = {
            "argmax_macs": argmax_macs,
            "argmax_cost": argmax_cost,
            "cost": self.cost.of_genotype(derived),
            "window_changes": changes,
            "repair_swaps": swaps,
            "over_budget": over,
        }
        return derived, report

    def _cheapest_downgrade(self, choice: list[int], live: list[int], op_p: Tensor, exclude: int | None):
        """(node, op): the cheaper op that gives up least probability per MAC saved, or None."""
        macs, best = self.op_macs_per_pixel, None
        for k in (k - 1 for k in live):
            current = choice[k]
            for c in range(len(self.op_names)):
                if c == exclude or self.op_names[c] == "none" or macs[c] >= macs[current]:
                    continue
                price = (op_p[k, current] - op_p[k, c]).item() / (macs[current] - macs[c]).item()
                if best is None or price < best[0]:
                    best = (price, k, c)
        return None if best is None else best[1:]

    def set_genotype(self, genotype: GeneratorGenotype, confidence: float = 10.0) -> None:
        """Sets architecture parameters so that ``derive()`` returns ``genotype`` (same node count).

        Nodes absent from the genotype (fewer nodes than the supernet) are left with no output gate.
        """
        if len(genotype.nodes) > self.num_nodes:
            raise ValueError(f"genotype has {len(genotype.nodes)} nodes, supernet {self.num_nodes}")
        with torch.no_grad():
            self.alpha.zero_()
            self.beta.zero_()
            self.gamma.fill_(-confidence)
            for k, node in enumerate(genotype.nodes):
                self.alpha[k, self.op_names.index(node.op)] = confidence
                self.beta[k, node.input] = confidence
            for o in genotype.outputs:
                self.gamma[o - 1] = confidence


def expected_macs(
    op_probs: Tensor,
    input_probs: Tensor,
    output_probs: Tensor,
    op_macs_per_pixel: Tensor,
    channels: int,
    scale: int,
    lr_height: int | None = None,
    lr_width: int | None = None,
) -> Tensor:
    """Expected MACs of the derived generator, counting only nodes the output depends on
    (``darts_sr.search.cost.expected_cost`` with MACs per LR pixel ``op_macs_per_pixel``).

    Node k is live when it feeds the output or a live later node reads it; treating choices as
    independent, ``live_k = 1 - (1 - out_k) * prod_{j>k} (1 - live_j * P(input_j = k))``.
    For one-hot probabilities this is the derived (pruned) generator's exact MACs.
    """
    default_h, default_w = REFERENCE_LR_SIZE[scale]
    h, w = lr_height or default_h, lr_width or default_w
    ops = tuple(f"op{i}" for i in range(len(op_macs_per_pixel)))
    fixed = macs_cost((), channels, scale, (h, w)).fixed
    cost = Cost("macs", ops, tuple(op_macs_per_pixel.tolist()), h * w, fixed)
    return expected_cost(op_probs, input_probs, output_probs, cost)
