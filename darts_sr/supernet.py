"""The generator supernet: every node mixes its candidate inputs and its candidate ops.

Architecture parameters (all ``nn.Parameter``s, kept apart from the weights):

- ``alpha``  (N, n_ops): softmax over ops, per node;
- ``beta``   (N, N): softmax over a node's candidate inputs (stem or an earlier node), masked;
- ``gamma``  (N,): independent sigmoid gates, one per node, for membership in the output sum.

Mixing is per node: a node first mixes its inputs, then applies every op once to that mixture.
Per-edge mixing (DARTS) would run every op on every candidate input, N(N+1)/2 instead of N op
sets: 5.5x the op evaluations for N = 10 (bench/search_step.py measures the step time).

Macro structure, mean shift and upsampler are those of ``darts_sr.networks.Generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darts_sr.genotype import GeneratorGenotype, Node, live_nodes, prune
from darts_sr.networks import REFERENCE_LR_SIZE, MeanShift, Upsampler, generator_macs, upsampler_macs
from operations import OPS, build_op, conv_macs

MASKED = -1e9


class GeneratorSupernet(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, sH, sW); a continuous relaxation of the generator search space."""

    def __init__(
        self,
        nodes: int = 10,
        channels: int = 16,
        scale: int = 4,
        ops: tuple[str, ...] = ("conv_3x3", "skip"),
        input_window: int | None = None,
    ):
        super().__init__()
        if nodes < 1:
            raise ValueError("a supernet needs at least one node")
        for op in ops:
            if op not in OPS:
                raise KeyError(f"unknown operation {op!r} in the search space; known: {', '.join(OPS)}")
        self.num_nodes, self.channels, self.scale, self.op_names = nodes, channels, scale, tuple(ops)
        self.mean_shift = MeanShift()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.node_ops = nn.ModuleList(nn.ModuleList(build_op(op, channels) for op in ops) for _ in range(nodes))
        self.output_act = nn.PReLU(1)
        self.upsampler = Upsampler(channels, scale)
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

    # --- parameter groups --------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta, self.gamma]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # --- probabilities -----------------------------------------------------------------------

    def op_probs(self) -> Tensor:  # (N, n_ops)
        return F.softmax(self.alpha, dim=-1)

    def input_probs(self) -> Tensor:  # (N, N), row k-1: over states 0..N-1, zero where masked
        return F.softmax(self.beta.masked_fill(~self.input_mask, MASKED), dim=-1)

    def output_probs(self) -> Tensor:  # (N,)
        return torch.sigmoid(self.gamma)

    # --- forward -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        op_p, in_p, out_p = self.op_probs(), self.input_probs(), self.output_probs()
        states = [self.stem(self.mean_shift.to_model(x))]  # each (B, C, H, W)
        for k, ops in enumerate(self.node_ops):
            candidates = torch.stack(states, dim=0)  # (k+1, B, C, H, W)
            mixed_input = torch.einsum("s,sbchw->bchw", in_p[k, : k + 1], candidates)
            states.append(sum(w * op(mixed_input) for w, op in zip(op_p[k], ops)))
        body = torch.einsum("n,nbchw->bchw", out_p, torch.stack(states[1:], dim=0))
        return self.mean_shift.from_model(self.upsampler(self.output_act(body)))

    # --- cost --------------------------------------------------------------------------------

    def expected_macs(self, lr_height: int | None = None, lr_width: int | None = None) -> Tensor:
        """E[MACs] of the derived generator, differentiable in the architecture parameters."""
        return expected_macs(
            self.op_probs(),
            self.input_probs(),
            self.output_probs(),
            self.op_macs_per_pixel,
            self.channels,
            self.scale,
            lr_height,
            lr_width,
        )

    # --- discretisation ----------------------------------------------------------------------

    def derive(self, max_skip_nodes: int | None = None, max_macs: float | None = None) -> GeneratorGenotype:
        """The most likely discrete generator, dead nodes pruned.

        ``max_skip_nodes`` caps parameter-free ``skip`` nodes (P-DARTS's remedy for DARTS's drift
        toward skip): the least confident skips above the cap take their best other op.
        ``max_macs`` makes cheaper choices, least costly in probability first, until the
        derived generator fits (the cost penalty should already have done most of this).
        """
        with torch.no_grad():
            op_p, in_p, out_p = self.op_probs(), self.input_probs(), self.output_probs()
        choice = op_p.argmax(dim=1).tolist()
        inputs = in_p.argmax(dim=1).tolist()
        outputs = tuple(k + 1 for k in range(self.num_nodes) if out_p[k] > 0.5) or (int(out_p.argmax()) + 1,)
        # Liveness depends on inputs and outputs only, so op changes below never revive or kill a node.
        live = sorted(live_nodes(tuple(Node("skip", i) for i in inputs), outputs))

        def genotype(choice: list[int]) -> GeneratorGenotype:
            nodes = tuple(Node(self.op_names[o], i) for o, i in zip(choice, inputs))
            return prune(nodes, outputs, self.channels, self.scale)

        skip = self.op_names.index("skip") if "skip" in self.op_names else None
        if max_skip_nodes is not None and skip is not None:
            live_skips = sorted((k - 1 for k in live if choice[k - 1] == skip), key=lambda k: -op_p[k, skip].item())
            for k in live_skips[max_skip_nodes:]:
                choice[k] = next(o for o in op_p[k].argsort(descending=True).tolist() if o != skip)
        if max_macs is not None:
            while generator_macs(genotype(choice)) > max_macs:
                step = self._cheapest_downgrade(choice, live, op_p, exclude=skip)
                if step is None:
                    break
                choice[step[0]] = step[1]
        return genotype(choice)

    def _cheapest_downgrade(self, choice: list[int], live: list[int], op_p: Tensor, exclude: int | None):
        """(node, op): the cheaper op that gives up least probability per MAC saved, or None."""
        macs, best = self.op_macs_per_pixel, None
        for k in (k - 1 for k in live):
            current = choice[k]
            for c in range(len(self.op_names)):
                if c == exclude or macs[c] >= macs[current]:
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
    """Expected MACs of the derived generator, counting only nodes the output depends on.

    Node k is live when it feeds the output or a live later node reads it; treating choices as
    independent, ``live_k = 1 - (1 - out_k) * prod_{j>k} (1 - live_j * P(input_j = k))``.
    For one-hot probabilities this is the derived (pruned) generator's exact MACs.
    """
    default_h, default_w = REFERENCE_LR_SIZE[scale]
    h, w = lr_height or default_h, lr_width or default_w
    n = op_probs.shape[0]
    live: list[Tensor] = [None] * n  # type: ignore[list-item]
    for k in reversed(range(n)):
        not_read = 1 - output_probs[k]
        for j in range(k + 1, n):
            not_read = not_read * (1 - live[j] * input_probs[j, k + 1])
        live[k] = 1 - not_read
    per_node = op_probs @ op_macs_per_pixel  # (N,) MACs per LR pixel
    body = (torch.stack(live) * per_node).sum() * (h * w)
    fixed = conv_macs(3, channels, 3, h, w) + channels * h * w + upsampler_macs(channels, scale, h, w)
    return body + fixed
