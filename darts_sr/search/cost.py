"""What a generator of the search space costs, in the one unit a search steers: MACs or milliseconds.

A ``Cost`` is a per-op cost vector (what one live node costs for each op it may take) plus fixed parts as a function
of the number of output nodes k (stem, output sum + PReLU, upsampler), and optionally an affine correction of the
total (``a * raw + b``). It is built either from MACs (``macs_cost``: ``generator_macs``'s numbers, exactly) or from
a latency lookup table (``latency_cost``: the table's per-op milliseconds, stem, output sum of k nodes and upsampler
at one shape, and its correction when the table marks it used), so one code path serves both units:

- ``expected_cost``: the expected cost under the supernet's op, input and output probabilities, differentiable in
  all three (soft liveness, as before; the fixed part as its expectation over the number of outputs, a
  Poisson-binomial of the output gates). For one-hot probabilities it is the derived network's cost.
- ``Cost.of_genotype``: a discrete genotype's cost; in milliseconds it is ``predict_ms(genotype, table)`` exactly (the
  same parts, summed by ``math.fsum``, the same correction).
- ``best_in_window``: derivation's window rule, the most probable op combination whose cost lies in the window, by
  an exact dynamic programme over the live nodes (costs as exact rationals, so real-valued milliseconds work as
  integer MACs did). A window on the corrected value is a window on the raw sum mapped through the inverse of
  ``a * raw + b`` (``a > 0``), so the programme runs on raw sums.

``search_cost`` builds a search's ``Cost`` and target window (``MacsWindow`` or ``LatencyWindow``) from its config
(``cost.unit``), checking that the latency table covers the supernet's ops at its channels and the scale's reference
LR size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from darts_sr.config import ConfigError
from darts_sr.evaluation.latency import LatencyTable, LatencyTableError
from darts_sr.nets.genotype import GeneratorGenotype, live_nodes
from darts_sr.nets.networks import REFERENCE_LR_SIZE, LatencyWindow, MacsWindow, upsampler_macs
from operations import OPS, conv_macs

if TYPE_CHECKING:
    from darts_sr.config import SearchConfig

UNITS = {"macs": ("GMACs", 1e9), "ms": ("ms", 1.0)}  # unit -> (label, divisor) for messages


@dataclass(frozen=True)
class Cost:
    """A generator's cost: ``body_scale * sum(per_op[op of each live node]) + sum(fixed_parts(k))`` for k outputs,
    then ``a * raw + b`` when ``correction = (a, b)``.

    ``per_op`` follows ``ops`` (the supernet's order; ``none`` costs 0); ``fixed[k - 1]`` are the fixed parts with k
    outputs, the last entry standing for every larger k; ``dtype``: the precision the expected cost is computed in
    (None: the probabilities' own, as the MACs cost always was; milliseconds use float64, so the argmax network's
    expected cost agrees with ``predict_ms`` to float64 rounding).
    """

    unit: str  # "macs" or "ms"
    ops: tuple[str, ...]
    per_op: tuple[float, ...]
    body_scale: float
    fixed: tuple[tuple[float, ...], ...]
    correction: tuple[float, float] | None = None
    dtype: torch.dtype | None = None

    def __post_init__(self):
        if len(self.per_op) != len(self.ops):
            raise ValueError(f"per_op has {len(self.per_op)} entries for {len(self.ops)} ops")
        if not self.fixed:
            raise ValueError("a cost needs its fixed parts for at least one output")
        if self.correction is not None and not self.correction[0] > 0:
            raise ValueError(f"the correction a * raw + b needs a > 0 to be steered toward a target (a = {self.a})")

    @property
    def a(self) -> float:
        return 1.0 if self.correction is None else self.correction[0]

    def fixed_parts(self, outputs: int) -> tuple[float, ...]:
        if outputs < 1:
            raise ValueError(f"a generator has at least one output, not {outputs}")
        return self.fixed[min(outputs, len(self.fixed)) - 1]

    def fixed_total(self, outputs: int) -> float:
        parts = self.fixed_parts(outputs)
        return sum(parts) if all(isinstance(p, int) for p in parts) else math.fsum(parts)

    def corrected(self, raw):
        """``a * raw + b`` (``Correction.apply``'s arithmetic), or ``raw`` without a correction."""
        return raw if self.correction is None else self.correction[0] * raw + self.correction[1]

    # --- a discrete generator ----------------------------------------------------------------------------------------

    def of_ops(self, ops: Sequence[str], outputs: int) -> float:
        """The cost of a generator whose live nodes take ``ops`` and which has ``outputs`` output nodes."""
        price = dict(zip(self.ops, self.per_op))
        body = [self.body_scale * price[op] for op in ops]  # exact: MACs are integers, ms have body_scale 1
        return self.corrected(math.fsum([*self.fixed_parts(outputs), *body]))

    def of_genotype(self, genotype: GeneratorGenotype) -> float:
        """``genotype``'s cost (its live nodes); in ms, equal to ``predict_ms(genotype, table)``."""
        live = sorted(live_nodes(genotype.nodes, genotype.outputs))
        return self.of_ops([genotype.nodes[k - 1].op for k in live], len(genotype.outputs))

    def format(self, value: float) -> str:
        """``value`` in this cost's display unit, e.g. '3.510 GMACs' or '12.345 ms'."""
        label, divisor = UNITS[self.unit]
        return f"{value / divisor:.3f} {label}"

    # --- exact arithmetic for the window rule ----------------------------------------------------------------------

    def raw_window(self, window: tuple[float, float]) -> tuple[Fraction, Fraction]:
        """The window on the raw sum of parts whose corrected value lies in ``window`` (a > 0 keeps the order)."""
        low, high = (Fraction(v) for v in window)
        if self.correction is None:
            return low, high
        a, b = (Fraction(v) for v in self.correction)
        return (low - b) / a, (high - b) / a


def _fraction(value: float) -> Fraction:
    return Fraction(value) if isinstance(value, float) else Fraction(int(value))


def expected_cost(op_probs: Tensor, input_probs: Tensor, output_probs: Tensor, cost: Cost) -> Tensor:
    """Expected cost of the derived generator, counting only nodes the output depends on.

    Node k is live when it feeds the output or a live later node reads it; treating choices as independent,
    ``live_k = 1 - (1 - out_k) * prod_{j>k} (1 - live_j * P(input_j = k))``. The fixed part is its expectation over
    the number of outputs K (a sum of independent gates; K = 0 derives as the single most likely output, K = 1).
    For one-hot probabilities this is the derived (pruned) generator's exact cost.
    """
    if cost.dtype is not None:
        op_probs, input_probs, output_probs = (t.to(cost.dtype) for t in (op_probs, input_probs, output_probs))
    n = op_probs.shape[0]
    live: list[Tensor] = [None] * n  # type: ignore[list-item]
    for k in reversed(range(n)):
        not_read = 1 - output_probs[k]
        for j in range(k + 1, n):
            not_read = not_read * (1 - live[j] * input_probs[j, k + 1])
        live[k] = 1 - not_read
    per_op = torch.tensor(cost.per_op, dtype=op_probs.dtype, device=op_probs.device)
    per_node = op_probs @ per_op  # (N,) cost of each node's op, in units of body_scale
    body = (torch.stack(live) * per_node).sum() * cost.body_scale
    totals = [cost.fixed_total(k) for k in range(1, n + 1)]
    if len(set(totals)) == 1:
        fixed = totals[0]
    else:
        p_outputs = output_count_distribution(output_probs)  # (N + 1,): P(K = 0), ..., P(K = N)
        weights = torch.cat([p_outputs[:1] + p_outputs[1:2], p_outputs[2:]])  # K = 0 derives as K = 1
        fixed = (weights * torch.tensor(totals, dtype=weights.dtype, device=weights.device)).sum()
    return cost.corrected(body + fixed)


def output_count_distribution(gates: Tensor) -> Tensor:
    """(N + 1,) distribution of the number of open gates among N independent ones (Poisson-binomial),
    differentiable in the gate probabilities."""
    dist = torch.ones(1, dtype=gates.dtype, device=gates.device)
    zero = torch.zeros(1, dtype=gates.dtype, device=gates.device)
    for p in gates:
        dist = torch.cat([dist * (1 - p), zero]) + torch.cat([zero, dist * p])
    return dist


def best_in_window(
    op_score: Tensor,
    live: Sequence[int],
    window: tuple[float, float],
    cost: Cost,
    outputs: int,
    max_skips: int | None,
    skip: int | None,
) -> list[int]:
    """Per node, the op of the combination with the largest summed score (log-probability, or a measured score)
    whose cost lies in ``window`` (skip cap kept), for the ``live`` nodes (1-based) of a generator with ``outputs``
    output nodes; other nodes keep their best op. When no combination of ops for these live nodes lands in the window
    (op granularity: five nodes cannot make TPSR's MACs within 3%), the combination of the achievable cost nearest the
    window, so a derived network never lands far off the target silently.

    Exact: costs are rationals (a float is one), scaled to integers by their common denominator, and the programme
    keeps, per (skips used, summed body cost), the best score. Distinct sums are at most the multisets of ops over the
    live nodes (8,008 for 10 nodes and 7 ops), so real-valued milliseconds cost no more than integer MACs. Ties go to
    the op listed first, then to fewer skips and the lower cost.
    """
    options = [o for o, name in enumerate(cost.ops) if name != "none"]
    exact = [_fraction(cost.body_scale) * _fraction(c) for c in cost.per_op]
    denominator = math.lcm(*(f.denominator for f in exact))
    steps = [int(f * denominator) for f in exact]  # each op's cost in units of 1 / denominator
    raw_low, raw_high = cost.raw_window(window)
    fixed = sum(_fraction(p) for p in cost.fixed_parts(outputs))
    low = math.ceil((raw_low - fixed) * denominator)  # bounds on the live nodes' summed cost, in those units
    high = math.floor((raw_high - fixed) * denominator)
    score = op_score.tolist()
    skips = len(live) if max_skips is None else min(max_skips, len(live))
    best: dict[tuple[int, int], float] = {(0, 0): 0.0}  # (skips, cost) -> largest summed score
    back = []
    for k in live:
        new: dict[tuple[int, int], float] = {}
        arg: dict[tuple[int, int], int] = {}
        for o in options:
            c, ds = steps[o], int(o == skip)
            for (s, m), value in best.items():
                if s + ds > skips:
                    continue
                key, candidate = (s + ds, m + c), value + score[k - 1][o]
                if candidate > new.get(key, -math.inf):
                    new[key], arg[key] = candidate, o
        best = new
        back.append(arg)
    choice = op_score.argmax(dim=1).tolist()
    if not best:  # no option at all under the skip cap: nothing to choose
        return choice

    def distance(m: int) -> int:  # 0 inside the window
        return max(low - m, 0) + max(m - high, 0)

    nearest = min(distance(m) for _, m in best)
    s, m = max((key for key in best if distance(key[1]) == nearest), key=lambda key: (best[key], -key[0], -key[1]))
    for k, arg in zip(reversed(live), reversed(back)):
        o = arg[(s, m)]
        choice[k - 1] = o
        s, m = s - int(o == skip), m - steps[o]
    return choice


# --- the two units -------------------------------------------------------------------------------------------------


def macs_cost(ops: Sequence[str], channels: int, scale: int, lr_size: tuple[int, int] | None = None) -> Cost:
    """MACs at ``lr_size`` (default: the scale's 720p output), as ``generator_macs`` counts them: per-op MACs per LR
    pixel times the LR pixels, and stem + output PReLU + upsampler, whatever the number of outputs."""
    h, w = lr_size or REFERENCE_LR_SIZE[scale]
    per_pixel = tuple(float(OPS[o].macs(channels, 1, 1)) for o in ops)
    fixed = (conv_macs(3, channels, 3, h, w), channels * h * w, upsampler_macs(channels, scale, h, w))
    return Cost("macs", tuple(ops), per_pixel, h * w, (fixed,))


def latency_cost(
    table: LatencyTable, ops: Sequence[str], channels: int, scale: int, nodes: int, lr_size: tuple[int, int]
) -> Cost:
    """Milliseconds from ``table`` at ``(channels, *lr_size)``: each op's time, and stem + output sum of k nodes +
    upsampler for k = 1..``nodes`` (``output_ms`` extrapolates beyond the measured k), with the table's correction
    when it marks it used. Raises ``LatencyTableError`` naming the first missing (op, channels, size)."""
    h, w = lr_size
    shape = (channels, h, w)
    where = f"{channels} channels, LR {h}x{w}"
    if table.scale != scale:
        raise LatencyTableError(f"the table is for x{table.scale}; the search is x{scale}")
    missing = [op for op in ops if op != "none" and (op, *shape) not in table.ops]
    missing += [
        part for part, entries in (("stem", table.stem), ("upsampler", table.upsampler)) if shape not in entries
    ]
    if shape not in table.output:
        missing.append("output sum")
    if missing:
        known = ", ".join(f"{c} ch {th}x{tw}" for c, th, tw in table.shapes()) or "none"
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LatencyTableError(f"no entry for ({missing[0]}, {where}){more}; the table's shapes: {known}")
    per_op = tuple(table.op_ms(op, shape) for op in ops)
    fixed = tuple((table.stem[shape], table.output_ms(k, shape), table.upsampler[shape]) for k in range(1, nodes + 1))
    correction = table.correction
    used = None if correction is None or not correction.used else (correction.a, correction.b)
    if used is not None and not used[0] > 0:
        raise LatencyTableError(
            f"its correction measured = {used[0]:.3g} * predicted + {used[1]:.3g} is not increasing"
        )
    return Cost("ms", tuple(ops), per_op, 1, fixed, used, torch.float64)


def search_cost(config: SearchConfig) -> tuple[Cost, MacsWindow | LatencyWindow, LatencyTable | None]:
    """The search's cost, its target window, and the latency table when ``cost.latency_table`` names one (with
    ``cost.unit: macs`` it only reports the derived network's predicted ms). ConfigError, one line, naming the key or
    the table file, when the table cannot be read or does not cover the supernet's ops at ``supernet.channels`` and
    the scale's reference LR size."""
    c, s, scale = config.cost, config.supernet, config.data.scale
    table = None
    if c.latency_table is not None:
        try:
            table = LatencyTable.load(c.latency_table)  # its errors name the file
        except LatencyTableError as e:
            raise ConfigError(f"cost.latency_table: {e}") from None
        try:
            ms = latency_cost(table, s.ops, s.channels, scale, s.nodes, REFERENCE_LR_SIZE[scale])
        except LatencyTableError as e:
            raise ConfigError(f"cost.latency_table: {c.latency_table}: {e}") from None
    if c.unit == "latency":
        return ms, LatencyWindow(c.target_ms, c.tolerance), table
    window = MacsWindow.around(c.target_macs, scale, c.tolerance)
    return macs_cost(s.ops, s.channels, scale), window, table
