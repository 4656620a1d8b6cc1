"""The generator supernet: TPSR reachable, expected MACs exact at one-hot, budget, collapse guard, gradients."""

import random

import pytest
import torch

from conftest import set_one_hot
from darts_sr.losses import cost_penalty
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node, prune
from darts_sr.nets.networks import generator_macs
from darts_sr.search.supernet import GeneratorSupernet
from operations import GENERATOR_SEARCH_SPACE


def _supernet(nodes=10, channels=16, scale=4, **kw) -> GeneratorSupernet:
    torch.manual_seed(0)
    return GeneratorSupernet(nodes, channels, scale, GENERATOR_SEARCH_SPACE, **kw)


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
    set_one_hot(net, nodes, outputs)
    derived = prune(tuple(nodes), tuple(outputs), net.channels, net.scale)
    assert net.derive() == derived
    exact = generator_macs(derived)
    assert net.expected_macs().item() == pytest.approx(exact, rel=1e-6)
    assert net.expected_macs(20, 30).item() == pytest.approx(generator_macs(derived, 20, 30), rel=1e-6)


def test_dead_nodes_cost_nothing():
    net = _supernet(nodes=3)
    # node 2 reads node 1 but feeds nothing: only nodes 1 and 3 are live.
    nodes = [Node("conv_3x3", 0), Node("conv_7x7", 1), Node("conv_5x5", 1)]
    set_one_hot(net, nodes, [3])
    with_dead = net.expected_macs().item()
    set_one_hot(net, [nodes[0], Node("skip", 1), nodes[2]], [3])
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


# --- the relaxation, normalisation and cost control of the search ---------------------------------------------------


class _Scaled(torch.nn.Module):
    def __init__(self, op: torch.nn.Module, factor: float):
        super().__init__()
        self.op, self.factor = op, factor

    def forward(self, x):
        return self.factor * self.op(x)


def _output_and_arch_grads(net: GeneratorSupernet, x: torch.Tensor):
    net.zero_grad()
    out = net(x)
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in net.arch_parameters()]


@pytest.mark.parametrize("normalize", [True, False])
def test_scaling_one_op_output_is_no_signal_when_states_are_normalised(normalize):
    """With search-time normalisation, an op's amplitude cannot be learned through the architecture weights: scaling
    one node's op output by a constant leaves the output and the architecture gradients as they were. Without it
    (today's unnormalised supernet) the same scaling changes both."""
    net = _supernet(nodes=4, channels=4, normalize=normalize).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.3)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    before = _output_and_arch_grads(net, x)
    net.node_ops[1][net.op_names.index("conv_5x5")] = _Scaled(net.node_ops[1][net.op_names.index("conv_5x5")], 10.0)
    after = _output_and_arch_grads(net, x)
    changes = [((a - b).norm() / a.norm()).item() for a, b in zip([before[0], *before[1]], [after[0], *after[1]])]
    if normalize:
        assert max(changes) < 1e-3, changes  # batch norm's eps is all that is left
    else:
        assert min(changes) > 1e-2, changes


def test_sampled_strategy_runs_one_op_per_node_and_reaches_every_logit():
    net = _supernet(nodes=4, channels=4, strategy="sampled", normalize=True)
    calls = []
    for k, ops in enumerate(net.node_ops):
        for j, op in enumerate(ops):
            op.register_forward_hook(lambda *a, k=k, j=j: calls.append((k, j)))
    out = net(torch.rand(2, 3, 8, 8))
    assert sorted(k for k, _ in calls) == [0, 1, 2, 3]  # one op per node
    out.mean().backward()
    # Straight-through: every gate logit gets a gradient, and within a node on the output path every op logit
    # does, not only the sampled op's.
    assert (net.gamma.grad != 0).all()
    assert ((net.alpha.grad != 0).all(dim=1)).any()
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(torch.ones(1, 3, 8, 8)), net(torch.ones(1, 3, 8, 8)))  # eval = the argmax path


def test_none_is_searchable_but_never_derived():
    net = _supernet(nodes=3, channels=4)
    net = GeneratorSupernet(3, 4, 4, ("none", "conv_3x3", "skip"))
    with torch.no_grad():
        net.alpha[:, 0] = 5.0  # none is the most likely op everywhere
    derived = net.derive(max_skip_nodes=2)
    assert all(n.op != "none" for n in derived.nodes)
    assert net.argmax_macs().item() == pytest.approx(generator_macs(derived), rel=1e-6)


def test_argmax_macs_is_the_derived_cost_and_has_a_gradient_below_target():
    """The regime the search starts in: the derived network is far below TPSR's MACs. The penalty must push."""
    net = _supernet()
    target = generator_macs(TPSR)
    macs = net.argmax_macs()
    derived, report = net.derive_with_report()
    assert macs.item() == pytest.approx(report["argmax_macs"], rel=1e-6) and macs.item() < 0.8 * target
    penalty, _ = cost_penalty(macs, target, "log_ratio", 1.0, loss=torch.tensor(0.05), dead_zone=0.01)
    grads = torch.autograd.grad(penalty, net.arch_parameters())
    assert all(g.abs().sum() > 0 for g in grads)
    # A step down the gradient raises the expected cost: it points toward the target.
    with torch.no_grad():
        before = net.expected_macs().item()
        for p, g in zip(net.arch_parameters(), grads):
            p -= 100.0 * g / g.norm()
        assert net.expected_macs().item() > before


@pytest.mark.parametrize("target", [2.0e9, generator_macs(TPSR)])
def test_cost_penalty_alone_lands_the_derived_network_on_the_target(target):
    net = _supernet()
    optimizer = torch.optim.AdamW(net.arch_parameters(), lr=0.05, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 300, eta_min=1e-3)  # as optim.arch_lr_min does
    for _ in range(300):
        optimizer.zero_grad()
        cost_penalty(net.argmax_macs(), target, "log_ratio", 1.0, loss=torch.tensor(1.0), dead_zone=0.01)[0].backward()
        optimizer.step()
        schedule.step()
    derived, report = net.derive_with_report(max_skip_nodes=2, max_macs=1.03 * target)
    assert report["repair_swaps"] == 0
    # The argmax alone lands within +-7% (one conv_3x3 -> conv_5x5 flip is 6.6% of TPSR's MACs)...
    assert abs(report["argmax_macs"] / target - 1) <= 0.07
    # ...and the most probable ops inside the +-3% window close the rest without any repair.
    derived, report = net.derive_with_report(max_skip_nodes=2, window=(0.97 * target, 1.03 * target))
    assert abs(generator_macs(derived) / target - 1) <= 0.03 and report["repair_swaps"] == 0


def test_window_selection_is_the_most_probable_choice_inside_the_window():
    """Against brute force on a small supernet: the dynamic programme finds the best combination in the window."""
    import itertools

    net = GeneratorSupernet(3, 16, 4, ("conv_3x3", "conv_5x5", "sep_3x3", "skip"))
    torch.manual_seed(3)
    with torch.no_grad():
        net.alpha.normal_(0, 1.0)
        net.beta.fill_(0.0)
        net.gamma.fill_(5.0)  # all three nodes are outputs: all live, all read the stem
    log_p = net.op_probs().log()
    nodes = lambda ops: tuple(Node(net.op_names[o], 0) for o in ops)  # noqa: E731
    combos = itertools.product(range(4), repeat=3)
    macs = {ops: generator_macs(GeneratorGenotype(nodes(ops), (1, 2, 3))) for ops in combos}
    argmax_macs = generator_macs(net.derive(max_skip_nodes=1))
    above = sorted(m for m in set(macs.values()) if m > 1.2 * argmax_macs)
    low, high = above[0], above[min(5, len(above) - 1)]  # a window the argmax network misses
    inside = [ops for ops, m in macs.items() if low <= m <= high and sum(o == 3 for o in ops) <= 1]
    best = max(inside, key=lambda ops: sum(log_p[k, o].item() for k, o in enumerate(ops)))
    derived, report = net.derive_with_report(max_skip_nodes=1, window=(low, high))
    assert report["window_changes"] > 0 and len(inside) > 3
    assert derived.nodes == nodes(best)


@pytest.mark.parametrize("strategy", ["mixed", "sampled"])
def test_perturbation_scores_are_the_loss_rise_of_removing_each_candidate(strategy):
    """Against the definition: rebuild the loss with one op (or input) removed and its node renormalised, by hand;
    batch norms see batch statistics and keep their running averages; architecture parameters come back intact."""
    torch.manual_seed(0)
    net = GeneratorSupernet(3, 4, 2, ("conv_3x3", "sep_3x3", "skip"), strategy=strategy, normalize=True)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.5)
    lq, gt = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 16, 16)
    loss = lambda: float((net(lq) - gt).abs().mean())  # noqa: E731
    arch_before = [p.detach().clone() for p in net.arch_parameters()]
    stats_before = [b.clone() for name, b in net.named_buffers() if "running" in name]
    net.train()
    op_scores, input_scores = net.perturbation_scores(loss)
    assert net.training and all(torch.equal(a, p) for a, p in zip(arch_before, net.arch_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(stats_before, (b for n, b in net.named_buffers() if "running" in n)))

    def by_hand(logits: torch.nn.Parameter, index: tuple[int, int]) -> float:
        norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        state = {k: v.clone() for k, v in net.state_dict().items()}
        net.eval()
        for m in norms:
            m.train()
        with torch.no_grad():
            base = loss()
            logits[index] = -1e9
            removed = loss()
        net.load_state_dict(state)
        net.train()
        return removed - base

    for k, o in [(0, 0), (1, 2), (2, 1)]:
        assert op_scores[k, o].item() == pytest.approx(by_hand(net.alpha, (k, o)), abs=1e-6)
    assert input_scores[2, 1].item() == pytest.approx(by_hand(net.beta, (2, 1)), abs=1e-6)
    assert input_scores[0].abs().sum() == 0  # node 1 can only read the stem: nothing to remove
    assert input_scores[1, 2] == 0  # masked (node 2 cannot read node 2)


def test_derivation_by_scores_follows_the_scores_not_the_probabilities():
    net = GeneratorSupernet(3, 16, 4, ("conv_3x3", "conv_5x5", "skip"))
    with torch.no_grad():
        net.alpha.copy_(torch.tensor([[3.0, 0, 0]] * 3))  # conv_3x3 most probable everywhere
        net.beta.fill_(0.0)
        net.beta[:, 0] = 3.0  # every node most probably reads the stem
        net.gamma.fill_(5.0)
    op_scores = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.2, 0.1], [0.3, 0.0, 0.9]])
    input_scores = torch.zeros(3, 3)
    input_scores[1, 1], input_scores[2, 2] = 1.0, 1.0  # node 2 reads node 1, node 3 reads node 2
    derived, _ = net.derive_with_report(scores=(op_scores, input_scores))
    assert [(n.op, n.input) for n in derived.nodes] == [("conv_5x5", 0), ("conv_5x5", 1), ("skip", 2)]
    by_probability = net.derive()
    assert [(n.op, n.input) for n in by_probability.nodes] == [("conv_3x3", 0)] * 3
    # Within a MACs window the dynamic programme maximises the summed scores: a window only all-conv_3x3 fits.
    window = (generator_macs(by_probability) - 1, generator_macs(by_probability) + 1)
    inside, report = net.derive_with_report(window=window, scores=(op_scores, torch.zeros(3, 3)))
    assert [n.op for n in inside.nodes] == ["conv_3x3"] * 3 and report["window_changes"] > 0


def test_a_window_no_combination_reaches_gives_the_nearest_achievable_cost(caplog):
    net = GeneratorSupernet(3, 16, 4, ("conv_3x3", "conv_7x7", "skip"))
    with torch.no_grad():
        net.alpha.copy_(torch.tensor([[0.0, 0.0, 3.0]] * 3))  # skip most probable: the argmax costs least
        net.beta.fill_(0.0)
        net.gamma.fill_(5.0)
    widest = generator_macs(GeneratorGenotype(tuple(Node("conv_7x7", 0) for _ in range(3)), (1, 2, 3)))
    with caplog.at_level("WARNING"):
        derived, report = net.derive_with_report(max_skip_nodes=2, window=(1.5 * widest, 1.6 * widest))
    assert [n.op for n in derived.nodes] == ["conv_7x7"] * 3 and report["window_changes"] == 3
    assert any("nearest costs" in m for m in caplog.messages)
