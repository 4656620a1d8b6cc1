"""Genotypes: the TPSR encoding, JSON round trip, validation messages."""

import json

import pytest

from darts_sr.nets.genotype import (
    TPSR,
    GeneratorGenotype,
    GenotypeError,
    Node,
    load_generator_genotype,
    prune,
    save_genotype,
)


def test_tpsr_encodes_the_published_wiring():
    # TPSR's published wiring: its node i is our node i+1; (op, input) per node, outputs n9 + n8 + n6.
    published = {
        0: ("sep_5x5", "stem"),
        1: ("conv_7x7", 0),
        2: ("conv_7x7", 1),
        4: ("conv_3x3", 2),
        5: ("conv_5x5", 4),
        6: ("sep_3x3", 5),
        3: ("conv_3x3", 2),
        7: ("conv_5x5", 3),
        8: ("conv_3x3", 7),
        9: ("conv_7x7", "stem"),
    }
    for tpsr_node, (op, src) in published.items():
        node = TPSR.nodes[tpsr_node]
        assert node.op == op
        assert node.input == (0 if src == "stem" else src + 1)
    assert set(TPSR.outputs) == {9 + 1, 8 + 1, 6 + 1}
    assert (TPSR.channels, TPSR.scale) == (16, 4)


def test_json_round_trip(tmp_path):
    path = tmp_path / "g.json"
    save_genotype(TPSR, path)
    assert load_generator_genotype(path) == TPSR
    assert GeneratorGenotype.from_dict(json.loads(TPSR.to_json())) == TPSR
    assert load_generator_genotype("tpsr") is TPSR


def _tpsr_dict(**changes):
    d = TPSR.to_dict()
    d.update(changes)
    return d


@pytest.mark.parametrize(
    "data, message",
    [
        (_tpsr_dict(nodes=[{"op": "conv_9x9", "input": 0}], outputs=[1]), "unknown op 'conv_9x9'"),
        (_tpsr_dict(nodes=[{"op": "none", "input": 0}], outputs=[1]), "'none' exists only in the supernet"),
        (_tpsr_dict(nodes=[{"op": "conv_3x3", "input": 1}], outputs=[1]), "node 1: input 1 is not an earlier node"),
        (
            _tpsr_dict(nodes=[{"op": "conv_3x3", "input": 0}, {"op": "conv_3x3", "input": 3}], outputs=[2]),
            "node 2: input 3 is not an earlier node",
        ),
        (_tpsr_dict(nodes=[{"op": "conv_3x3", "input": -1}], outputs=[1]), "input -1"),
        (_tpsr_dict(outputs=[]), "'outputs' is empty"),
        (_tpsr_dict(outputs=[11]), "output 11 is not a node"),
        (_tpsr_dict(scale=5), "scale 5 is not supported"),
        (_tpsr_dict(colour="red"), "unknown key(s) ['colour']"),
        ({"nodes": [{"op": "conv_3x3", "input": 0, "stride": 2}], "outputs": [1]}, "node 1: unknown key(s) ['stride']"),
        ({"nodes": [{"op": "conv_3x3"}], "outputs": [1]}, "node 1: missing key(s) ['input']"),
        ({"outputs": [1]}, "missing key(s) ['nodes']"),
        (_tpsr_dict(nodes=[{"op": "conv_3x3", "input": True}], outputs=[1]), "must be int"),
        (_tpsr_dict(kind="discriminator"), "expected 'generator'"),
        (
            _tpsr_dict(nodes=[{"op": "conv_3x3", "input": 0}, {"op": "conv_3x3", "input": 0}], outputs=[2]),
            "do not reach the output",
        ),
    ],
)
def test_validation_messages(data, message):
    with pytest.raises(GenotypeError) as info:
        GeneratorGenotype.from_dict(data)
    assert message in str(info.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="bad.json: not valid JSON"):
        load_generator_genotype(bad)
    bad.write_text(json.dumps(_tpsr_dict(scale=7)))
    with pytest.raises(GenotypeError, match="bad.json: scale 7"):
        load_generator_genotype(bad)
    with pytest.raises(GenotypeError, match="missing.json: cannot read"):
        load_generator_genotype(tmp_path / "missing.json")


def test_prune_drops_dead_nodes_and_renumbers():
    nodes = (Node("conv_3x3", 0), Node("skip", 1), Node("sep_3x3", 0), Node("conv_5x5", 1))
    g = prune(nodes, outputs=(4,), channels=8, scale=2)
    assert g.nodes == (Node("conv_3x3", 0), Node("conv_5x5", 1))
    assert g.outputs == (2,)
    assert prune(TPSR.nodes, TPSR.outputs, 16, 4) == TPSR


def test_canonical_form_identifies_networks_up_to_node_order():
    g = lambda nodes, outputs: GeneratorGenotype(tuple(Node(op, i) for op, i in nodes), outputs)  # noqa: E731
    # Parallel branches on the stem, renumbered: the same network.
    a = g([("conv_3x3", 0), ("conv_7x7", 0), ("skip", 0)], (1, 2, 3))
    b = g([("skip", 0), ("conv_3x3", 0), ("conv_7x7", 0)], (1, 2, 3))
    assert a != b and a.canonical_form() == b.canonical_form()
    # Two identical siblings: reading the one or the other is the same network.
    c = g([("conv_3x3", 0), ("conv_3x3", 0), ("conv_5x5", 1)], (2, 3))
    d = g([("conv_3x3", 0), ("conv_3x3", 0), ("conv_5x5", 2)], (1, 3))
    assert c.canonical_form() == d.canonical_form()
    # What does change the network: an op, an input, output membership.
    assert g([("conv_3x3", 0), ("conv_3x3", 0), ("conv_7x7", 1)], (2, 3)).canonical_form() != c.canonical_form()
    assert g([("conv_3x3", 0), ("conv_3x3", 1), ("conv_5x5", 1)], (2, 3)).canonical_form() != c.canonical_form()
    assert g([("conv_3x3", 0), ("conv_3x3", 0), ("conv_5x5", 1)], (1, 2, 3)).canonical_form() != c.canonical_form()
    assert TPSR.canonical_form() == GeneratorGenotype.from_dict(TPSR.to_dict()).canonical_form()


def test_the_hand_designed_references_are_plain_chains_by_name():
    from darts_sr.nets.genotype import ESPCN_LIKE, FSRCNN_LIKE

    for name, genotype, ops in (
        ("espcn_like", ESPCN_LIKE, ["conv_5x5", "conv_3x3"]),
        ("fsrcnn_like", FSRCNN_LIKE, ["conv_5x5"] + ["conv_3x3"] * 4),
    ):
        assert load_generator_genotype(name) is genotype
        assert [n.op for n in genotype.nodes] == ops
        assert [n.input for n in genotype.nodes] == list(range(len(ops)))  # each node reads the one before
        assert genotype.outputs == (len(ops),) and genotype.channels == 16
