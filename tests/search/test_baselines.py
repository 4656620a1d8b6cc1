"""The practitioner's baselines: genotypes of the space inside the window, built by their rules."""

import random

import pytest

from darts_sr.config import ConfigError, SupernetConfig
from darts_sr.nets.networks import MacsWindow, generator_macs, generator_params
from darts_sr.search import baselines
from darts_sr.search.generator_stage import search_diagnostics
from darts_sr.search.sampling import sample_genotype

OPS = tuple(o for o in SupernetConfig().ops if o != "none")
WINDOW = MacsWindow.around(None, 4)


def test_the_structures_fill_the_window_by_their_rules():
    wide, chain = baselines.shallow_wide(WINDOW, OPS), baselines.deep_chain(WINDOW, OPS)
    for g in (wide, chain):
        assert WINDOW.contains(generator_macs(g)) and len(g.nodes) == 10 and g.channels == 16
    assert search_diagnostics(wide) == {"depth": 1, "nodes_on_stem": 10, "nodes": 10}
    assert search_diagnostics(chain) == {"depth": 10, "nodes_on_stem": 1, "nodes": 10}
    assert wide.outputs == tuple(range(1, 11)) and chain.outputs == (10,)
    # The nearest the target of all multisets of ten ops: TPSR's own ops, rewired (3.575 GMACs, 61,097 params).
    assert generator_macs(wide) == generator_macs(chain) == pytest.approx(WINDOW.target_macs, rel=1e-9)
    with pytest.raises(ConfigError, match="no stem genotype of at most 2 nodes"):
        baselines.shallow_wide(WINDOW, OPS, nodes=2)


def test_most_params_is_the_largest_of_its_draws():
    space = {"ops": OPS, "nodes": 10, "channels": 16, "scale": 4, "input_window": None, "max_skip_nodes": 2}
    best = baselines.most_params(WINDOW, 5, 3, **space)
    rng = random.Random(3)
    drawn = [sample_genotype(rng, macs_window=WINDOW, **space) for _ in range(5)]
    assert best in drawn and generator_params(best) == max(map(generator_params, drawn))
