"""Random genotypes from the generator search space: the baseline a search has to beat.

Sampling is uniform over the supernet's discrete choices (an op and an input per node, a
non-empty set of output nodes), under the same skip cap the search's derivation applies, then
pruned of dead nodes. A MACs window is met by rejection, so within the window the sample stays
uniform over the space.
"""

from __future__ import annotations

import random

from darts_sr.errors import UserError
from darts_sr.nets.genotype import GeneratorGenotype, Node, live_nodes, prune
from darts_sr.nets.networks import MacsWindow, generator_macs


class SamplingError(UserError, RuntimeError):
    """No genotype in the MACs window after the allowed number of tries."""


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
) -> GeneratorGenotype:
    """A uniform random genotype; with ``macs_window`` one whose MACs@720p lie inside it."""
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
        if macs_window is None or macs_window.contains(generator_macs(genotype)):
            return genotype
    window = str(macs_window) if macs_window else "the space"
    raise SamplingError(f"no genotype within {window} after {max_tries} tries")


def matched_random_genotypes(count: int, window: MacsWindow, seed: int, **space) -> list[GeneratorGenotype]:
    """``count`` distinct random genotypes within ``window``."""
    rng = random.Random(seed)
    found: list[GeneratorGenotype] = []
    while len(found) < count:
        genotype = sample_genotype(rng, macs_window=window, **space)
        if genotype not in found:
            found.append(genotype)
    return found
