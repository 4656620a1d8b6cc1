"""The generator supernet: TPSR reachable, expected MACs exact at one-hot, budget, collapse guard, gradients."""

import random

import pytest
import torch

from darts_sr.genotype import TPSR, GeneratorGenotype, Node, prune
from darts_sr.losses import cost_penalty
from darts_sr.networks import generator_macs
from darts_sr.supernet import GeneratorSupernet
from operations import GENERATOR_SEARCH_SPACE


def _supernet(nodes=10, channels=16, scale=4, **kw) -> GeneratorSupernet:
    torch.manual_seed(0)
    return GeneratorSupernet(nodes, channels, scale, GENERATOR_SEARCH_SPACE, **kw)


def _set_raw(net: GeneratorSupernet, nodes: list[Node], outputs: list[int], c: float = 1e4) -> None:
    """One-hot architecture parameters for an unpruned node list (dead nodes allowed)."""
    with torch.no_grad():
        net.alpha.zero_()
        net.beta.zero_()
        net.gamma.fill_(-c)
        for k, node in enumerate(nodes):
            net.alpha[k, net.op_names.index(node.op)] = c
            net.beta[k, node.input] = c
        for o in outputs:
            net.gamma[o - 1] = c


def test_tpsr_is_reachable():
    net = _supernet()
    net.set_genotype(TPSR)
    assert net.derive() == TPSR
    assert net.derive(max_skip_nodes=0, max_macs=1.05 * generator_macs(TPSR)) == TPSR


@pytest.mark.parametrize("seed", range(12))
def test_expected_macs_equal_exact_macs_for_one_hot(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    net = _supernet(nodes=n, channels=rng.choice([4, 16]), scale=rng.choice([2, 3, 4]))
    nodes = [Node(rng.choice(GENERATOR_SEARCH_SPACE), rng.randrange(k)) for k in range(1, n + 1)]
    outputs = sorted(rng.sample(range(1, n + 1), rng.randint(1, n)))
    _set_raw(net, nodes, outputs)
    derived = prune(tuple(nodes), tuple(outputs), net.channels, net.scale)
    assert net.derive() == derived
    exact = generator_macs(derived)
    assert net.expected_macs().item() == pytest.approx(exact, rel=1e-6)
    assert net.expected_macs(20, 30).item() == pytest.approx(generator_macs(derived, 20, 30), rel=1e-6)


def test_dead_nodes_cost_nothing():
    net = _supernet(nodes=3)
    # node 2 reads node 1 but feeds nothing: only nodes 1 and 3 are live.
    nodes = [Node("conv_3x3", 0), Node("conv_7x7", 1), Node("conv_5x5", 1)]
    _set_raw(net, nodes, [3])
    with_dead = net.expected_macs().item()
    _set_raw(net, [nodes[0], Node("skip", 1), nodes[2]], [3])
    assert with_dead == pytest.approx(net.expected_macs().item(), rel=1e-6)


def test_parameter_groups_are_disjoint_and_saved():
    net = _supernet()
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert {"alpha", "beta", "gamma"} <= set(net.state_dict())


def test_backward_reaches_every_weight_and_architecture_parameter():
    net = GeneratorSupernet(3, 4, 2, GENERATOR_SEARCH_SPACE)
    (net(torch.rand(2, 3, 6, 6)).square().mean() + net.expected_macs() * 1e-9).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_probabilities_sum_to_one_and_respect_the_input_window():
    net = _supernet(input_window=2)
    op_p, in_p = net.op_probs(), net.input_probs()
    assert torch.allclose(op_p.sum(1), torch.ones(10))
    assert torch.allclose(in_p.sum(1), torch.ones(10))
    # node 6 (row 5) may read the stem and nodes 4, 5 only
    allowed = torch.zeros(10, dtype=torch.bool)
    allowed[[0, 4, 5]] = True
    assert torch.all(in_p[5][~allowed] == 0) and torch.all(in_p[5][allowed] > 0)
    assert net.derive().nodes[5].input in (0, 4, 5)


def test_budget_is_respected_at_derivation():
    net = _supernet()
    biggest = GeneratorGenotype(tuple(Node("conv_7x7", k - 1) for k in range(1, 11)), (10,))
    net.set_genotype(biggest, confidence=2.0)
    assert generator_macs(net.derive()) > 2 * generator_macs(TPSR)
    for budget in (1e9, 2e9, generator_macs(TPSR)):
        derived = net.derive(max_macs=1.05 * budget)
        assert generator_macs(derived) <= 1.05 * budget


def test_cost_penalty_alone_brings_expected_macs_under_budget():
    net = _supernet()
    biggest = GeneratorGenotype(tuple(Node("conv_7x7", k - 1) for k in range(1, 11)), (10,))
    net.set_genotype(biggest, confidence=2.0)
    budget = 1.5e9
    optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    start = net.expected_macs().item()
    for _ in range(200):
        optimizer.zero_grad()
        cost_penalty(net.expected_macs(), budget, "hinge", 1.0)[0].backward()
        optimizer.step()
    assert start > 1.5 * budget
    assert net.expected_macs().item() <= 1.05 * budget
    # The argmax of a relaxation can still exceed it (discretisation gap); derive(max_macs=...) closes that.
    assert generator_macs(net.derive(max_macs=1.05 * budget)) <= 1.05 * budget


def test_skip_cap_replaces_least_confident_skips():
    net = _supernet(nodes=4)
    nodes = (Node("skip", 0), Node("skip", 1), Node("skip", 2), Node("skip", 3))
    net.set_genotype(GeneratorGenotype(tuple(Node("conv_3x3", n.input) for n in nodes), (4,)))
    with torch.no_grad():
        skip, sep = net.op_names.index("skip"), net.op_names.index("sep_3x3")
        net.alpha.zero_()
        for k, confidence in enumerate([3.0, 1.0, 2.0, 4.0]):
            net.alpha[k, skip] = confidence
            net.alpha[k, sep] = 0.5
    assert [n.op for n in net.derive().nodes] == ["skip"] * 4
    capped = net.derive(max_skip_nodes=2)
    assert [n.op for n in capped.nodes] == ["skip", "sep_3x3", "sep_3x3", "skip"]


def test_channels_last_computes_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    nchw = GeneratorSupernet(nodes=4, channels=8, scale=4)
    nhwc = GeneratorSupernet(nodes=4, channels=8, scale=4)
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 12, 12)
    outs, grads = [], []
    for net in (nchw, nhwc):
        y = net(x)
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach().contiguous())
        grads.append([p.grad.contiguous() for p in net.parameters()])
    assert nhwc.stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
