"""Random genotypes from the generator search space: the baseline a search has to beat.

Sampling is uniform over the supernet's discrete choices (an op and an input per node, a
non-empty set of output nodes), under the same skip cap the search's derivation applies, then
pruned of dead nodes. A cost window (MACs, ``MacsWindow``; or milliseconds, ``LatencyWindow`` with a latency
table's prediction as the cost) is met by rejection, so within the window the sample stays uniform over the space.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import islice

from darts_sr.errors import UserError
from darts_sr.nets.genotype import GeneratorGenotype, Node, live_nodes, prune
from darts_sr.nets.networks import LatencyWindow, MacsWindow, generator_macs

Window = MacsWindow | LatencyWindow
CostFunction = Callable[[GeneratorGenotype], float]  # a genotype's cost in the window's unit


class SamplingError(UserError, RuntimeError):
    """No genotype in the cost window after the allowed number of tries."""


def _window_and_cost(
    window: Window | None, cost: CostFunction | None, macs_window: MacsWindow | None
) -> tuple[Window | None, CostFunction | None]:
    """``window`` and what measures a genotype against it: ``cost``, or MACs@720p for a ``MacsWindow``."""
    if macs_window is not None:
        if window is not None:
            raise ValueError("give window or macs_window, not both")
        window = macs_window
    if window is None or cost is not None:
        return window, cost
    if not isinstance(window, MacsWindow):
        raise ValueError(f"a {type(window).__name__} needs its cost function (cost=)")
    return window, generator_macs


def sample_genotype(
    rng: random.Random,
    ops: tuple[str, ...],
    nodes: int = 10,
    channels: int = 16,
    scale: int = 4,
    input_window: int | None = None,
    max_skip_nodes: int | None = 2,
    macs_window: MacsWindow | None = None,
    max_tries: int = 100_000,
    *,
    window: Window | None = None,
    cost: CostFunction | None = None,
) -> GeneratorGenotype:
    """A uniform random genotype; with ``window`` one whose ``cost`` lies inside it (``cost`` may be left out for a
    ``MacsWindow``: MACs@720p). ``macs_window`` is ``window`` with MACs, as earlier callers name it."""
    window, cost = _window_and_cost(window, cost, macs_window)
    choices = tuple(op for op in ops if op != "none")
    for _ in range(max_tries):
        raw = []
        for k in range(1, nodes + 1):
            lowest = 1 if input_window is None else max(1, k - input_window)
            inputs = [0, *range(lowest, k)]
            raw.append(Node(rng.choice(choices), rng.choice(inputs)))
        outputs = tuple(sorted(k for k in range(1, nodes + 1) if rng.random() < 0.5))
        if not outputs:
            continue
        live = live_nodes(tuple(raw), outputs)
        if max_skip_nodes is not None and sum(raw[k - 1].op == "skip" for k in live) > max_skip_nodes:
            continue
        genotype = prune(tuple(raw), outputs, channels, scale)
        if window is None or window.contains(cost(genotype)):
            return genotype
    where = str(window) if window else "the space"
    raise SamplingError(f"no genotype within {where} after {max_tries} tries")


def random_genotypes(
    window: Window, seed: int, cost: CostFunction | None = None, **space
) -> Iterator[GeneratorGenotype]:
    """Distinct random genotypes within ``window``, one after another from ``seed``: the first ``count`` are
    ``matched_random_genotypes(count, ...)``, and the ones after them replace any a caller rejects."""
    rng = random.Random(seed)
    found: list[GeneratorGenotype] = []
    while True:
        genotype = sample_genotype(rng, window=window, cost=cost, **space)
        if genotype not in found:
            found.append(genotype)
            yield genotype


def matched_random_genotypes(
    count: int, window: Window, seed: int, cost: CostFunction | None = None, **space
) -> list[GeneratorGenotype]:
    """``count`` distinct random genotypes within ``window`` (by ``cost``; MACs@720p for a ``MacsWindow``)."""
    return list(islice(random_genotypes(window, seed, cost, **space), count))
