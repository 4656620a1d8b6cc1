"""The comparison's report from hand-made records: what a null result rules out, each baseline's gap with its
interval, and what each method cost (to choose a genotype and to retrain it), checkable by hand."""

import json

import pytest

from conftest import small_genotype
from darts_sr.experiments import compare, records, stats

GENOTYPE = small_genotype().to_dict()


def record(model: str, group: str, seed: int, psnr: float, wall_s: float, load: float) -> dict:
    return {
        "model": model,
        "group": group,
        "seed": seed,
        "genotype": GENOTYPE,
        "params": 1000,
        "macs_720p": 1e9,
        "recipe_hash": "r",
        "selection": "holdout",
        "scores": {"pixel": {"holdout": {"psnr_y": psnr}}},
        "wall_time_s": wall_s,
        "provenance": {"load_average": {"before": [load, 0, 0], "after": [load + 0.5, 0, 0]}},
    }


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "experiment"
    models = {
        **{f"searched_{i}": {"group": "searched", "choice_s": 600.0 + 60 * i} for i in range(3)},
        "baseline_best_of_4": {"group": "baseline", "choice_s": 120.0},
        **{f"random_{i}": {"group": "random", "choice_s": 0.0} for i in range(5)},
        "tpsr": {"group": "tpsr"},
    }
    records.write_json(out / records.EXPERIMENT, {"selection": "holdout", "models": models})
    values = {"searched_0": (27.80, 27.84), "searched_1": (27.70, 27.74), "searched_2": (27.75, 27.77)}
    values |= {"baseline_best_of_4": (27.72, 27.76), "tpsr": (27.78, 27.80)}
    for name, pair in values.items():
        for seed, psnr in enumerate(pair):
            group = models[name]["group"]
            records.write_json(out / f"{name}_seed{seed}.json", record(name, group, seed, psnr, 720.0, 2.0))
    for i, psnr in enumerate((27.68, 27.72, 27.75, 27.70, 27.79)):
        records.write_json(out / f"random_{i}_seed0.json", record(f"random_{i}", "random", 0, psnr, 660.0, 1.0))
    return out


def test_the_report_states_the_detectable_gap_the_baselines_interval_and_each_methods_cost(folder):
    text = records.report(folder)
    (s,) = json.loads((folder / records.SUMMARY).read_text())["statistics"]
    random_sd = stats.mean_sd([27.68, 27.72, 27.75, 27.70, 27.79])[1]
    assert s["detectable_gap"]["gap"] == pytest.approx(stats.smallest_detectable_gap(random_sd, 3, 5))
    assert f"A gain of {s['detectable_gap']['gap']:.3f} dB or more would have been detected with 80% power" in text

    searched = [27.82, 27.72, 27.76]
    ci = stats.gap_to_fixed(searched, [27.72, 27.76], s["noise_floor"])
    entry = s["baselines"]["baseline_best_of_4"]
    assert entry["searched_minus"] == pytest.approx(sum(searched) / 3 - 27.74) and entry[
        "searched_minus_ci"
    ] == pytest.approx([ci.low, ci.high])
    assert f"| {entry['searched_minus']:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] |" in text

    cost = {c["method"]: c for c in json.loads((folder / records.SUMMARY).read_text())["cost"]}
    assert cost["searched"]["choice_minutes"] == pytest.approx(11.0) and cost["searched"]["trainings"] == 6
    assert cost["baseline_best_of_4"]["choice_minutes"] == pytest.approx(2.0)
    assert cost["random"]["train_minutes"] == pytest.approx(11.0) and cost["random"]["load"] == [1.0, 1.5]
    assert cost["tpsr"]["choice_minutes"] is None  # not recorded: unknown, not free
    assert "| searched | 3 | 11.0 | 12.0 (6) | 2.0–2.5 |" in text and "| tpsr | 1 | - | 12.0 (2) |" in text


def test_an_experiment_without_choice_costs_has_no_cost_section(folder):
    experiment = json.loads((folder / records.EXPERIMENT).read_text())
    for m in experiment["models"].values():
        m.pop("choice_s", None)
    records.write_json(folder / records.EXPERIMENT, experiment)
    assert "## Cost" not in records.report(folder)


def test_what_choosing_a_genotype_cost(tmp_path):
    run = tmp_path / "search"
    run.mkdir()
    assert compare.search_seconds(run) is None  # no summary: unknown
    (run / "summary.json").write_text(json.dumps({"wall_time_s": 428.3}))
    assert compare.search_seconds(run) == 428.3
    (tmp_path / "proxy").mkdir()
    for i, wall in enumerate((18.8, 20.2)):
        (tmp_path / "proxy" / f"candidate_{i}_seed0.json").write_text(json.dumps({"wall_time_s": wall}))
    (tmp_path / "proxy" / "choice.txt").write_text("candidate_1\n")
    assert compare.baseline_seconds(tmp_path / "best_of_2.json") == pytest.approx(39.0)
    assert compare.baseline_seconds(tmp_path / "shallow_wide.json") == 0.0
    assert compare.baseline_seconds(tmp_path / "mine.json") is None
