"""Latency as the search's cost: a hand-made latency table, the supernet's expected and argmax milliseconds, the window
rule in ms (against brute force), the config's errors, MACs unchanged, and short searches that land on target_ms."""

import itertools
import json
import math
import random
from dataclasses import replace

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli, set_one_hot, small_genotype, write_latency_table
from darts_sr.config import ConfigError, SearchConfig, load_config, to_dict
from darts_sr.evaluation.latency import LatencyTable, predict_ms
from darts_sr.nets.genotype import GeneratorGenotype, Node, load_generator_genotype, prune
from darts_sr.nets.networks import REFERENCE_LR_SIZE, LatencyWindow, MacsWindow, generator_macs
from darts_sr.search.cost import best_in_window, expected_cost, latency_cost, macs_cost, search_cost
from darts_sr.search.generator_stage import GeneratorSearch
from darts_sr.search.sampling import SamplingError, matched_random_genotypes, random_genotypes, sample_genotype
from darts_sr.search.supernet import GeneratorSupernet
from darts_sr.training.runner import draw_batch, prepare_run_folder, save_config
from operations import GENERATOR_SEARCH_SPACE, OPS, conv_macs

# Milliseconds at 4 channels, made up (not dyadic, so the window rule's exact arithmetic is exercised): each op, the
# stem, the upsampler and the output sum of k = 1..3 nodes (k > 3 extrapolated by the table's least-squares line).
OP_MS = {
    "conv_3x3": 1.3,
    "conv_5x5": 2.7,
    "conv_7x7": 4.6,
    "sep_3x3": 0.61,
    "sep_5x5": 0.83,
    "sep_7x7": 1.17,
    "dil_3x3": 1.41,
    "skip": 0.02,
}
STEM_MS, UPSAMPLER_MS, OUTPUT_MS = 0.9, 2.1, (0.05, 0.09, 0.14)
SMALL = (12, 16)  # the unit tests' LR size
REFERENCE = REFERENCE_LR_SIZE[4]  # what a x4 search reads its table at
TARGET_MS = 5.8  # reachable within 3% by every live-node count and output count of a 3-node supernet


def _table_json(path, sizes=(SMALL, REFERENCE), ops=OP_MS, correction=None, channels=(4,)):
    """A latency table as ``darts-sr latency-table`` writes it, by hand; the same ms at every size in ``sizes``."""
    return write_latency_table(path, ops, STEM_MS, UPSAMPLER_MS, OUTPUT_MS, sizes, channels, correction)


@pytest.fixture
def table(tmp_path):
    return LatencyTable.load(_table_json(tmp_path / "table.json"))


@pytest.fixture
def corrected(tmp_path):
    return LatencyTable.load(_table_json(tmp_path / "corrected.json", correction={"a": 1.2, "b": 0.3, "used": True}))


def _supernet(table, nodes=4, ops=GENERATOR_SEARCH_SPACE, size=SMALL, seed=0) -> GeneratorSupernet:
    torch.manual_seed(seed)
    cost = latency_cost(table, ops, 4, 4, nodes, size)
    return GeneratorSupernet(nodes, 4, 4, ops, cost=cost)


def _randomise(net: GeneratorSupernet, seed: int, spread: float = 1.0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, spread)


# --- the cost in milliseconds ----------------------------------------------------------------------------------------


def test_latency_cost_reads_the_table(table):
    cost = latency_cost(table, GENERATOR_SEARCH_SPACE, 4, 4, 5, SMALL)
    assert cost.unit == "ms" and cost.per_op == tuple(OP_MS[op] for op in GENERATOR_SEARCH_SPACE)
    assert cost.fixed_parts(2) == (STEM_MS, OUTPUT_MS[1], UPSAMPLER_MS)
    # Beyond the measured output sums, the table's own extrapolation.
    assert cost.fixed_parts(5)[1] == table.output_ms(5, (4, *SMALL)) > OUTPUT_MS[-1]
    assert latency_cost(table, ("none", "conv_3x3"), 4, 4, 2, SMALL).per_op == (0.0, OP_MS["conv_3x3"])


def test_expected_latency_is_the_hand_sum_for_one_hot_probabilities(table):
    net = _supernet(table, nodes=4)
    # Node 2 feeds nothing (dead); nodes 3 and 4 are the outputs; node 3 reads node 1.
    nodes = [Node("conv_5x5", 0), Node("conv_7x7", 1), Node("sep_3x3", 1), Node("skip", 0)]
    set_one_hot(net, nodes, [3, 4])
    hand = STEM_MS + OP_MS["conv_5x5"] + OP_MS["sep_3x3"] + OP_MS["skip"] + OUTPUT_MS[1] + UPSAMPLER_MS
    derived = prune(tuple(nodes), (3, 4), 4, 4)
    assert net.derive() == derived
    assert net.expected_cost().item() == pytest.approx(hand, rel=1e-12)
    assert net.argmax_cost().item() == pytest.approx(hand, rel=1e-12)
    assert predict_ms(derived, table, SMALL) == pytest.approx(hand, rel=1e-15)


def test_expected_latency_is_differentiable_in_ops_inputs_and_outputs(table):
    net = _supernet(table, nodes=4)
    _randomise(net, 1, spread=0.5)
    expected = net.expected_cost()
    assert expected.dtype == torch.float64 and expected.requires_grad
    expected.backward()
    for name, p in zip(("alpha", "beta", "gamma"), net.arch_parameters()):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # The fixed part's expectation over the number of outputs moves with the gates: more open gates, more ms.
    with torch.no_grad():
        net.gamma.fill_(-3.0)
        few = net.expected_cost().item()
        net.gamma.fill_(3.0)
        many = net.expected_cost().item()
    assert many > few
    # A finite difference agrees with the gradient (float64 architecture parameters for the difference).
    net.double().zero_grad()
    net.expected_cost().backward()
    grad = net.gamma.grad[2].item()
    with torch.no_grad():
        net.gamma[2] += 1e-6
        up = net.expected_cost().item()
        net.gamma[2] -= 2e-6
        down = net.expected_cost().item()
    assert grad == pytest.approx((up - down) / 2e-6, rel=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_argmax_latency_is_predict_ms_of_the_argmax_network(table, corrected, seed):
    for t in (table, corrected):
        net = _supernet(t, nodes=random.Random(seed).randint(1, 6), seed=seed)
        _randomise(net, seed, spread=2.0)
        derived, report = net.derive_with_report()  # no skip cap, no window: the argmax network
        assert net.argmax_cost().item() == pytest.approx(predict_ms(derived, t, SMALL), rel=1e-12)
        # The derivation's own number is predict_ms exactly (same parts, math.fsum, same correction).
        assert report["argmax_cost"] == report["cost"] == predict_ms(derived, t, SMALL)


def test_the_correction_applies_to_expected_argmax_and_genotype_costs(table, corrected):
    raw, fixed = _supernet(table, nodes=3), _supernet(corrected, nodes=3)
    fixed.load_state_dict(raw.state_dict())
    _randomise(raw, 3)
    fixed.load_state_dict(raw.state_dict())
    assert fixed.expected_cost().item() == pytest.approx(1.2 * raw.expected_cost().item() + 0.3, rel=1e-12)
    assert fixed.argmax_cost().item() == pytest.approx(1.2 * raw.argmax_cost().item() + 0.3, rel=1e-12)
    genotype = raw.derive()
    assert predict_ms(genotype, corrected, SMALL) == fixed.cost.of_genotype(genotype)
    assert predict_ms(genotype, corrected, SMALL, corrected=False) == raw.cost.of_genotype(genotype)
    # A correction the table does not mark used is not applied.
    unused = corrected
    unused.correction.used = False
    assert latency_cost(unused, GENERATOR_SEARCH_SPACE, 4, 4, 3, SMALL).correction is None


# --- the window rule in milliseconds ---------------------------------------------------------------------------------


def _brute_force(net: GeneratorSupernet, t: LatencyTable, low: float, high: float, max_skips: int):
    """Every op combination of a supernet whose nodes all read the stem and are all outputs: the most probable one
    whose predicted ms lie in [low, high] under the skip cap."""
    log_p = net.op_probs().log()
    options = [o for o, name in enumerate(net.op_names) if name != "none"]
    best, best_score = None, -math.inf
    for ops in itertools.product(options, repeat=net.num_nodes):
        if sum(net.op_names[o] == "skip" for o in ops) > max_skips:
            continue
        genotype = GeneratorGenotype(
            tuple(Node(net.op_names[o], 0) for o in ops), tuple(range(1, net.num_nodes + 1)), 4, 4
        )
        score = sum(log_p[k, o].item() for k, o in enumerate(ops))
        if low <= predict_ms(genotype, t, SMALL) <= high and score > best_score:
            best, best_score = genotype, score
    return best


@pytest.mark.parametrize("nodes, seed", [(2, 0), (3, 1), (3, 2), (4, 3)])
def test_window_rule_in_ms_matches_brute_force_and_lands_within_tolerance(table, corrected, nodes, seed):
    checked = 0
    for t in (table, corrected):
        net = _supernet(t, nodes=nodes, seed=seed)
        _randomise(net, seed)
        with torch.no_grad():
            net.beta.fill_(0.0)
            net.beta[:, 0] = 5.0  # every node reads the stem...
            net.gamma.fill_(5.0)  # ...and is an output: all live
        argmax_ms = predict_ms(net.derive(max_skip_nodes=1), t, SMALL)
        for factor in (0.75, 1.3, 1.6):
            target = factor * argmax_ms
            low, high = 0.97 * target, 1.03 * target
            derived, report = net.derive_with_report(max_skip_nodes=1, window=(low, high))
            expected = _brute_force(net, t, low, high, max_skips=1)
            if expected is None:  # nothing fits: the nearest achievable cost, with a warning
                continue
            assert report["window_changes"] > 0
            assert derived == expected, (factor, t.correction)
            assert abs(predict_ms(derived, t, SMALL) / target - 1) <= 0.03
            checked += 1
    assert checked >= 4


def test_window_rule_reaches_a_latency_target_on_ten_nodes(table):
    net = _supernet(table, nodes=10, seed=5)
    _randomise(net, 5)
    for target in (8.0, 12.0, 20.0):
        derived, report = net.derive_with_report(max_skip_nodes=2, window=(0.97 * target, 1.03 * target))
        assert abs(predict_ms(derived, table, SMALL) / target - 1) <= 0.03 and report["window_changes"] > 0
        assert report["cost"] == predict_ms(derived, table, SMALL)


def test_exact_window_arithmetic_on_real_valued_costs():
    """0.1 + 0.2 is not 0.3 in floats; the window rule adds exact rationals, so a window exactly at a sum holds."""
    from darts_sr.search.cost import Cost

    cost = Cost("ms", ("a", "b"), (0.1, 0.2), 1, ((0.0,),))
    scores = torch.tensor([[0.0, -1.0], [-1.0, 0.0]])  # node 1 prefers a, node 2 prefers b
    window = (0.1 + 0.1, 0.1 + 0.1)  # only a + a fits
    assert best_in_window(scores, [1, 2], window, cost, 1, None, None) == [0, 0]


# --- MACs: today's numbers, exactly ----------------------------------------------------------------------------------


def _todays_expected_macs(op_probs, input_probs, output_probs, op_macs_per_pixel, channels, scale, h, w):
    """The MACs formula as it was before costs were generalised (darts_sr.search.supernet.expected_macs), verbatim."""
    from darts_sr.nets.networks import upsampler_macs

    n = op_probs.shape[0]
    live = [None] * n
    for k in reversed(range(n)):
        not_read = 1 - output_probs[k]
        for j in range(k + 1, n):
            not_read = not_read * (1 - live[j] * input_probs[j, k + 1])
        live[k] = 1 - not_read
    per_node = op_probs @ op_macs_per_pixel
    body = (torch.stack(live) * per_node).sum() * (h * w)
    fixed = conv_macs(3, channels, 3, h, w) + channels * h * w + upsampler_macs(channels, scale, h, w)
    return body + fixed


@pytest.mark.parametrize("seed", range(6))
def test_macs_cost_gives_todays_numbers_exactly(seed):
    rng = random.Random(seed)
    nodes, channels, scale = rng.randint(1, 10), rng.choice([4, 16]), rng.choice([2, 3, 4])
    torch.manual_seed(seed)
    net = GeneratorSupernet(nodes, channels, scale, GENERATOR_SEARCH_SPACE)
    _randomise(net, seed, spread=rng.choice([0.3, 3.0]))
    assert net.cost == macs_cost(GENERATOR_SEARCH_SPACE, channels, scale)  # the default
    h, w = REFERENCE_LR_SIZE[scale]
    per_pixel = torch.tensor([float(OPS[o].macs(channels, 1, 1)) for o in GENERATOR_SEARCH_SPACE])
    probs = net.op_probs(), net.input_probs(), net.output_probs()
    today = _todays_expected_macs(*probs, per_pixel, channels, scale, h, w)
    assert torch.equal(net.expected_cost(), today) and torch.equal(net.expected_macs(), today)
    assert torch.equal(expected_cost(*probs, macs_cost(GENERATOR_SEARCH_SPACE, channels, scale)), today)
    assert torch.equal(net.argmax_cost(), net.argmax_macs())
    derived, report = net.derive_with_report(max_skip_nodes=2)
    assert report["cost"] == generator_macs(derived) and report["argmax_cost"] == report["argmax_macs"]


# --- the config ------------------------------------------------------------------------------------------------------

TINY = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
    "supernet": {"nodes": 3, "channels": 4},
    "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005},
    "discriminator": {"base_width": 4},
    "optim": {"epochs": 3, "steps_per_epoch": 3, "warmup_epochs": 1},
    "run": {"log_every": 1, "samples": 1},
}


def _latency_config(tmp_path, table_path, **cost) -> SearchConfig:
    data = {k: dict(v) for k, v in TINY.items()}
    data["cost"] = {"unit": "latency", "target_ms": TARGET_MS, "latency_table": str(table_path), **cost}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(SearchConfig, path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["cost.unit=latency", "cost.latency_table=t.json"], "cost.target_ms: required with cost.unit: latency"),
        (["cost.unit=latency", "cost.target_ms=5"], "cost.latency_table: required with cost.unit: latency"),
        (["cost.target_ms=5"], "cost.target_ms: only used with cost.unit: latency"),
        (["cost.unit=latency", "cost.target_ms=5", "cost.latency_table=t", "cost.target_macs=2e9"], "cost.target_macs"),
        (["cost.unit=latency", "cost.target_ms=-1", "cost.latency_table=t"], "cost.target_ms: expected a positive"),
        (["cost.control=dual", "cost.dual_lr=0"], "cost.dual_lr: expected a positive number"),
        (["cost.control=dual", "cost.penalty=none"], "cost.control: dual"),
        (["cost.unit=ms"], "cost.unit: 'ms' is not one of ['macs', 'latency']"),
    ],
)
def test_cost_config_errors_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(SearchConfig, None, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_table_that_does_not_cover_the_search_is_a_one_line_error_naming_file_and_entry(tmp_path):
    short = _table_json(tmp_path / "short.json", ops={k: v for k, v in OP_MS.items() if k != "sep_5x5"})
    with pytest.raises(ConfigError) as error:
        search_cost(_latency_config(tmp_path, short))
    message = str(error.value)
    assert message.startswith(f"cost.latency_table: {short}: ") and "\n" not in message
    assert "(sep_5x5, 4 channels, LR 180x320)" in message
    small_only = _table_json(tmp_path / "small.json", sizes=(SMALL,))
    with pytest.raises(ConfigError, match=r"small\.json: no entry for \(conv_3x3, 4 channels, LR 180x320\)"):
        search_cost(_latency_config(tmp_path, small_only))
    with pytest.raises(ConfigError, match="cost.latency_table: .*missing.json: cannot read"):
        search_cost(_latency_config(tmp_path, tmp_path / "missing.json"))
    wide = _latency_config(tmp_path, _table_json(tmp_path / "t.json"))
    wide.supernet.channels = 8
    with pytest.raises(ConfigError, match=r"no entry for \(conv_3x3, 8 channels, LR 180x320\)"):
        search_cost(wide)
    # The command line says it in one line, status 2, before reading any data.
    result = run_cli(
        "train_search.py",
        *("--set", "cost.unit=latency", "--set", "cost.target_ms=5", "--set", f"cost.latency_table={short}"),
        *("--set", "supernet.channels=4", "--out", tmp_path / "run"),
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cost.latency_table: ") and "sep_5x5" in last


# --- random genotypes in a latency window ---------------------------------------------------------------------------


def test_the_latency_window_has_the_macs_windows_interface():
    window = LatencyWindow(5.8)
    assert (window.target, window.tolerance) == (5.8, 0.05) and str(window) == "5.800 ms ± 5%"
    assert window.low == pytest.approx(5.51) and window.high == pytest.approx(6.09)
    assert window.contains(5.51) and window.contains(6.0) and not window.contains(6.1) and not window.contains(5.5)
    assert window.record() == {"target_ms": 5.8, "tolerance": 0.05}
    macs = MacsWindow.around(None, 4)
    assert macs.target == macs.target_macs and macs.record() == {"target_macs_720p": macs.target, "tolerance": 0.03}


SPACE = {"ops": GENERATOR_SEARCH_SPACE, "nodes": 4, "channels": 4, "scale": 4, "input_window": None,
         "max_skip_nodes": 2}  # fmt: skip


@pytest.mark.parametrize("which, target", [("table", TARGET_MS), ("corrected", 1.2 * TARGET_MS + 0.3)])
def test_random_genotypes_in_a_latency_window_lie_inside_by_prediction_and_are_reproducible(
    which, target, table, corrected
):
    table = {"table": table, "corrected": corrected}[which]
    window = LatencyWindow(target, 0.03)
    cost = latency_cost(table, GENERATOR_SEARCH_SPACE, 4, 4, SPACE["nodes"], SMALL).of_genotype
    found = matched_random_genotypes(12, window, 3, cost, **SPACE)
    assert len(set(found)) == 12
    for g in found:
        assert window.contains(predict_ms(g, table, SMALL))
        assert sum(n.op == "skip" for n in g.nodes) <= 2 and (g.channels, g.scale) == (4, 4)
    # Reproducible; a longer draw extends a shorter one (the draws after the first K replace rejected ones).
    assert matched_random_genotypes(12, window, 3, cost, **SPACE) == found
    assert list(itertools.islice(random_genotypes(window, 3, cost, **SPACE), 5)) == found[:5]
    assert matched_random_genotypes(12, window, 4, cost, **SPACE) != found
    # The window decides: without it some draws of the same space fall outside.
    rng = random.Random(3)
    anywhere = [sample_genotype(rng, **SPACE) for _ in range(50)]
    assert not all(window.contains(predict_ms(g, table, SMALL)) for g in anywhere)


def test_the_sampler_takes_a_macs_window_as_before_and_refuses_a_window_without_its_cost(table):
    macs = MacsWindow(generator_macs(small_genotype()), 0.5)
    space = SPACE | {"nodes": 3}
    old = [sample_genotype(random.Random(1), macs_window=macs, **space) for _ in range(3)]
    assert old == [sample_genotype(random.Random(1), window=macs, **space) for _ in range(3)]
    assert old == [sample_genotype(random.Random(1), window=macs, cost=generator_macs, **space) for _ in range(3)]
    with pytest.raises(ValueError, match="LatencyWindow needs its cost function"):
        sample_genotype(random.Random(1), window=LatencyWindow(TARGET_MS), **space)
    with pytest.raises(ValueError, match="not both"):
        sample_genotype(random.Random(1), window=macs, macs_window=macs, **space)
    cost = latency_cost(table, GENERATOR_SEARCH_SPACE, 4, 4, 3, SMALL).of_genotype
    with pytest.raises(SamplingError, match=r"no genotype within 0\.100 ms ± 5% after 20 tries"):
        sample_genotype(random.Random(1), window=LatencyWindow(0.1), cost=cost, max_tries=20, **space)


# --- searches --------------------------------------------------------------------------------------------------------


def _search(config, run_dir, resume=False) -> GeneratorSearch:
    return GeneratorSearch(config, prepare_run_folder(run_dir, resume=resume, overwrite=False), resume=resume)


def test_a_latency_search_lands_on_target_ms_and_says_so(tmp_path):
    table_path = _table_json(tmp_path / "table.json")
    config, run = _latency_config(tmp_path, table_path), tmp_path / "run"
    search = _search(config, run)
    save_config(run, to_dict(config))
    summary = search.run()
    genotype = load_generator_genotype(run / "genotype_generator.json")
    table = LatencyTable.load(table_path)
    assert summary["unit"] == "latency" and summary["target_ms"] == TARGET_MS
    assert summary["derived_ms"] == predict_ms(genotype, table, REFERENCE)
    assert abs(summary["derived_ms"] / TARGET_MS - 1) <= 0.03
    assert summary["macs_720p"] == generator_macs(genotype) and summary["target_macs_720p"] is None
    saved = json.loads((run / "summary.json").read_text())
    assert {"params", "macs_720p", "argmax_macs_720p", "window_changes", "derived_ms", "target_ms", "unit"} <= set(
        saved
    )
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"cost/derived_ms", "cost/expected_ms", "cost/ratio", "cost/penalised_ms", "penalty/cost"} <= scalars
    assert {"cost/derived_gmacs", "cost/expected_gmacs_epoch"} <= scalars
    from darts_sr.experiments.search_report import row

    assert f"| {summary['derived_ms'] / TARGET_MS:.3f} (ms) |" in row(run)  # the report reads a latency run in ms
    ratio = [e.value for e in events.Scalars("cost/ratio")]
    penalised = [e.value for e in events.Scalars("cost/penalised_ms")]
    assert ratio == pytest.approx([p / TARGET_MS for p in penalised], rel=1e-6)


def test_dual_ascent_moves_the_multiplier_by_the_log_ratio_and_clamps_it(tmp_path):
    config = _latency_config(tmp_path, _table_json(tmp_path / "table.json"), control="dual", dual_lr=0.5, dual_max=2.0)
    search = _search(config, tmp_path / "run")
    batches = [
        draw_batch(s, 2, search.data_generator, search.device) for s in (search.weight_sampler, search.arch_sampler)
    ]
    with torch.no_grad():
        search.supernet.alpha.zero_()
        search.supernet.alpha[:, search.supernet.op_names.index("conv_7x7")] = 5.0  # far above 5.8 ms
        search.supernet.gamma.fill_(5.0)
    details = search._arch_step(*batches)
    assert details["cost/ratio"] > 1.5 and details["cost/lambda"] == 0.0  # the term used lambda before the step
    assert search.cost_multiplier == pytest.approx(0.5 * math.log(details["cost/ratio"]))
    search.cost_multiplier = 1.9
    search._arch_step(*batches)
    assert search.cost_multiplier == 2.0  # clamped
    search.cost_multiplier = -1.0  # below the target it goes negative, i.e. it pushes the cost up (two-sided)
    details = search._arch_step(*batches)
    assert search.cost_multiplier == pytest.approx(-1.0 + 0.5 * math.log(details["cost/ratio"]))


def test_a_dual_search_lands_on_target_ms_and_resumes_exactly(tmp_path):
    import signal

    from darts_sr.training.runner import StopRequested

    config = _latency_config(tmp_path, _table_json(tmp_path / "table.json"), control="dual")
    whole = _search(config, tmp_path / "whole")
    summary = whole.run()
    assert abs(summary["derived_ms"] / TARGET_MS - 1) <= 0.03
    assert summary["cost_control"] == "dual" and summary["cost_multiplier"] != 0.0
    events = EventAccumulator(str(tmp_path / "whole" / "tb"), size_guidance={"scalars": 0}).Reload()
    assert {"cost/lambda", "cost/lambda_epoch", "cost/ratio"} <= set(events.Tags()["scalars"])

    cut = _search(config, tmp_path / "cut")
    one_step = cut.one_step

    def stop_at_step_five(*args):
        one_step(*args)
        if cut.step == 5:
            cut.stop.signum = signal.SIGTERM

    cut.one_step = stop_at_step_five
    with pytest.raises(StopRequested):
        cut.run()
    resumed = _search(config, tmp_path / "cut", resume=True)
    assert resumed.cost_multiplier == cut.cost_multiplier != 0.0
    again = resumed.run()
    assert again["cost_multiplier"] == summary["cost_multiplier"]
    for a, b in zip(whole.supernet.arch_parameters(), resumed.supernet.arch_parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("control", ["penalty", "dual"])
def test_the_cost_control_alone_brings_the_argmax_latency_near_the_target(table, control):
    """The control without the window rule: on cost alone, the argmax network of a 10-node supernet reaches a
    latency target from the uniform start (the window rule then closes the rest, as with MACs)."""
    from darts_sr.losses import cost_penalty

    net = _supernet(table, nodes=10)
    target, lam = 16.0, 0.0
    optimizer = torch.optim.AdamW(net.arch_parameters(), lr=0.05, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 300, eta_min=1e-3)
    loss = torch.tensor(1.0)
    for _ in range(300):
        optimizer.zero_grad()
        ms = net.argmax_cost()
        if control == "dual":
            log_ratio = (ms / target).log()
            (loss * lam * log_ratio).backward()
            lam = min(max(lam + 10.0 * log_ratio.item(), -10.0), 10.0)  # cost.dual_lr, cost.dual_max defaults
        else:
            cost_penalty(ms, target, "log_ratio", 1.0, loss=loss, dead_zone=0.01)[0].backward()
        optimizer.step()
        schedule.step()
    derived, report = net.derive_with_report(max_skip_nodes=2)
    assert abs(report["argmax_cost"] / target - 1) <= 0.1, report["argmax_cost"]  # measured: penalty +5.2%, dual -5.1%
    derived, report = net.derive_with_report(max_skip_nodes=2, window=(0.97 * target, 1.03 * target))
    assert abs(predict_ms(derived, table, SMALL) / target - 1) <= 0.03


def test_a_checkpoint_from_before_the_new_cost_keys_resumes_and_derives(tmp_path):
    """Runs searched before cost.unit existed (their checkpoints lack the new keys) still resume and derive: a key
    added since reads as its default. A changed value is still refused."""
    from darts_sr.io import atomic_torch_save, load_checkpoint
    from darts_sr.training.runner import RunFolderError

    data = {k: dict(v) for k, v in TINY.items()} | {"cost": {"target_macs": 2.0e8}}
    data["optim"] = {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0}
    config = load_config(
        SearchConfig, None, [f"{s}.{k}={json.dumps(v)}" for s, d in data.items() for k, v in d.items()]
    )
    _search(config, tmp_path / "run").run()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    for key in ("unit", "target_ms", "latency_table", "control", "dual_lr", "dual_max"):
        del state["config"]["cost"][key]
    del state["cost_multiplier"]
    atomic_torch_save(state, path)
    resumed = _search(config, tmp_path / "run", resume=True)
    assert resumed.step == 2 and resumed.cost_multiplier == 0.0
    with pytest.raises(RunFolderError, match="another config .*cost"):
        _search(replace(config, cost=replace(config.cost, weight=2.0)), tmp_path / "run", resume=True)


def test_landing_derives_again_at_target_times_target_over_measured_and_keeps_the_nearest(tmp_path, capsys):
    """``derive --land`` times each derived network here (a hand-made table predicts nothing about this machine, so
    the first measurement is off target) and retargets by the rule; the network written is the nearest round's."""
    from darts_sr.search import derive

    table_path = _table_json(tmp_path / "table.json")
    config, run = _latency_config(tmp_path, table_path), tmp_path / "run"
    _search(config, run).run()
    save_config(run, to_dict(config))
    out, record = tmp_path / "landed.json", tmp_path / "landing.json"
    # The first derivation at 6.0 ms (--target-ms), not the run's 5.8: the rule scales the target derived at.
    argv = [str(run), "--method", "argmax", "--land", "--land-rounds", "3", "--timings", "3", "--target-ms", "6.0"]
    assert derive.main([*argv, "--out", str(out), "--json", str(record)]) == 0
    landing = json.loads(record.read_text())
    rounds = landing["rounds"]
    assert landing["target_ms"] == TARGET_MS and 1 <= len(rounds) <= 3
    assert rounds[0]["derive_target_ms"] == 6.0
    for before, after in zip(rounds, rounds[1:]):
        assert abs(before["error"]) > 0.05  # it went on only while off target
        assert after["derive_target_ms"] == pytest.approx(
            before["derive_target_ms"] * TARGET_MS / before["measured_ms"]
        )
    for r in rounds:
        assert r["measured_ms"] == pytest.approx(sorted(r["timings_ms"])[1])  # the median of three timings
        assert r["error"] == pytest.approx(r["measured_ms"] / TARGET_MS - 1) and len(r["load_before"]) == 3
    chosen = rounds[landing["chosen_round"]]
    assert abs(chosen["error"]) == min(abs(r["error"]) for r in rounds)
    assert landing["landed"] == (abs(chosen["error"]) <= 0.05)
    assert load_generator_genotype(out).to_dict() == chosen["genotype"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["genotype"] == chosen["genotype"]


def test_landing_a_macs_search_or_json_without_landing_is_a_one_line_error(tmp_path, capsys):
    from darts_sr.search import derive

    data = {k: dict(v) for k, v in TINY.items()} | {"cost": {"target_macs": 2.0e8}}
    data["optim"] = {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0}
    config = load_config(
        SearchConfig, None, [f"{s}.{k}={json.dumps(v)}" for s, d in data.items() for k, v in d.items()]
    )
    run = tmp_path / "run"
    _search(config, run).run()
    save_config(run, to_dict(config))
    capsys.readouterr()  # the search's progress
    for extra, message in ((["--land"], "landing needs a latency search"), (["--json", "x.json"], "only with --land")):
        assert derive.main([str(run), "--method", "argmax", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
