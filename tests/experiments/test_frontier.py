"""darts-sr frontier: trained genotypes of one recipe, timed together, and the front of PSNR against latency."""

import json
from dataclasses import replace

import pytest

from conftest import write_latency_table
from darts_sr.experiments import frontier
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node
from darts_sr.training.trials import TrialRecord, write_record


def tiny(*ops: str) -> dict:
    """A 4-channel chain of ``ops``: cheap to time at 720p."""
    nodes = tuple(Node(op, k) for k, op in enumerate(ops))
    return GeneratorGenotype(nodes, (len(ops),), channels=4, scale=4).to_dict()


def record(folder, model, group, genotype, seed, psnr, recipe="r1", key=None):
    write_record(
        folder / f"{model}_seed{seed}.json",
        TrialRecord(
            key=key or f"{model}-{seed}",
            recipe_hash=recipe,
            identity={},
            seed=seed,
            genotype=genotype,
            params=100,
            macs_720p=1e8,
            selection="holdout",
            scores={"pixel": {"holdout": {"psnr_y": psnr}}},
            model=model,
            group=group,
        ),
    )


@pytest.fixture
def table(tmp_path):
    return write_latency_table(tmp_path / "t.json", {"conv_3x3": 1.0}, 0.5, 2.0, (0.1,), sizes=((180, 320),))


def point(name, group, ms, *psnrs):
    p = frontier.Point(name, group, {"n": name}, 0, 0.0, dict(enumerate(psnrs)))
    p.measured_ms = ms
    return p


def test_the_front_the_best_under_a_limit_and_the_matched_percentile():
    points = [
        point("r_fast", "random", 10, 27.0),
        point("r_mid", "random", 20, 27.3, 27.1),  # mean 27.2
        point("r_slow_worse", "random", 40, 27.1),  # slower and worse than r_mid: off the front
        point("s", "searched", 21, 27.25),
        point("t", "tpsr", 80, 27.6),
    ]
    frontier.mark_front(points)
    assert [p.name for p in points if p.on_front] == ["r_fast", "r_mid", "s", "t"]
    best = frontier.under_limit(points, 33)
    assert best["random"].name == "r_mid" and best["searched"].name == "s" and "tpsr" not in best
    m = frontier.matched_percentiles(points, 0.1)["s"]
    assert m["randoms"] == 1 and m["best_random"] == pytest.approx(27.2) and m["percentile"] == 100


def test_records_of_two_experiments_merge_by_genotype_and_trial(tmp_path, table, one_thread):
    a, b, out = tmp_path / "compare", tmp_path / "calibrate", tmp_path / "out"
    a.mkdir(), b.mkdir()
    chain1, chain2, chain3 = tiny("conv_3x3"), tiny("conv_3x3", "conv_3x3"), tiny("conv_3x3", "conv_3x3", "conv_3x3")
    record(a, "searched_0", "searched", chain2, 0, 27.30)
    record(a, "searched_0", "searched", chain2, 1, 27.40)
    record(a, "random_0", "random", chain1, 0, 27.00)
    record(a, "random_1", "random", chain3, 0, 27.20, key="shared")
    record(b, "matched_random_4", "matched", chain3, 0, 27.20, key="shared")  # the same trial: counted once
    record(b, "matched_random_4", "matched", chain3, 1, 27.60)
    argv = [str(a), str(b), "--table", str(table), "--out", str(out), "--repeats", "3", "--warmup", "1"]
    assert frontier.main([*argv, "--limit-ms", "1000"]) == 0
    summary = json.loads((out / frontier.FRONTIER_JSON).read_text())
    by_name = {p["name"]: p for p in summary["points"]}
    assert set(by_name) == {"searched_0", "random_0", "random_1"}
    assert by_name["random_1"]["seeds"] == {"0": 27.2, "1": 27.6} and by_name["random_1"]["group"] == "random"
    assert by_name["searched_0"]["psnr"] == pytest.approx(27.35)
    assert all(p["measured_ms"] > 0 for p in summary["points"])
    assert summary["best_under_limit"] == {"random": "random_1", "searched": "searched_0"}
    assert (out / frontier.FRONTIER_PNG).stat().st_size > 0 and "searched_0" in (out / frontier.FRONTIER_MD).read_text()
    timed = json.loads((out / frontier.TIMINGS).read_text())
    assert len(timed["ms"]) == 3 and len(timed["load_before"]) == 3

    # A second report reuses the timings; --retime times again.
    def refuse(*args, **kwargs):
        raise AssertionError("timed again")

    frontier.measure_many, measure = refuse, frontier.measure_many
    try:
        assert frontier.main([*argv, "--limit-ms", "1000"]) == 0
        with pytest.raises(AssertionError, match="timed again"):
            frontier.main([*argv, "--retime"])
    finally:
        frontier.measure_many = measure


def test_records_of_two_recipes_are_refused_in_one_line(tmp_path, table, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    record(a, "random_0", "random", tiny("conv_3x3"), 0, 27.0, recipe="r1")
    record(b, "random_0", "random", tiny("conv_3x3"), 1, 27.0, recipe="r2")
    assert frontier.main([str(a), str(b), "--table", str(table), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "random_0_seed1.json" in err[0] and "one recipe" in err[0]
    assert not (tmp_path / "o" / frontier.FRONTIER_JSON).exists()


def test_the_width_ladders_16_channel_rung_is_tpsr():
    assert frontier._group("width", TPSR.to_dict()) == "tpsr"
    assert frontier._group("width", tiny("conv_3x3")) == "tpsr_width"
    assert frontier._group("matched", tiny("conv_3x3")) == "random"


def test_a_genotype_recorded_by_two_experiments_keeps_its_most_specific_name(tmp_path):
    """TPSR is calibrate's width_c16 and compare's tpsr, the same trials: one point, named tpsr, each seed once."""
    calibration, comparison = tmp_path / "calibration", tmp_path / "comparison"
    calibration.mkdir(), comparison.mkdir()
    for seed, psnr in enumerate((27.4, 27.5, 27.6)):
        record(calibration, "width_c16", "width", TPSR.to_dict(), seed, psnr, key=f"t{seed}")
    for seed, psnr in enumerate((27.4, 27.5)):
        record(comparison, "tpsr", "tpsr", TPSR.to_dict(), seed, psnr, key=f"t{seed}")
    _, points = frontier.collect([calibration, comparison])
    (p,) = points
    assert (p.name, p.group, p.seeds) == ("tpsr", "tpsr", {0: 27.4, 1: 27.5, 2: 27.6})


def test_models_named_alike_by_two_experiments_keep_apart_by_folder(tmp_path):
    """Every compare has a searched_0: two searches' genotypes stay two points, named by their folder."""
    fast, slow = tmp_path / "t30", tmp_path / "t50"
    fast.mkdir(), slow.mkdir()
    record(fast, "searched_0", "searched", tiny("conv_3x3"), 0, 27.3)
    record(slow, "searched_0", "searched", tiny("conv_3x3", "conv_3x3"), 0, 27.5)
    record(slow, "random_0", "random", tiny("conv_5x5"), 0, 27.4)
    _, points = frontier.collect([fast, slow])
    assert sorted(p.name for p in points) == ["random_0", "t30/searched_0", "t50/searched_0"]
    matched = frontier.matched_percentiles([replace(p, measured_ms=10.0) for p in points], 0.1)
    assert sorted(matched) == ["t30/searched_0", "t50/searched_0"]
