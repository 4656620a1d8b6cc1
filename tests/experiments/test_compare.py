"""The comparison as an experiment: honest split, sampling in the MACs window, records that round-trip, skip and
rebuild the report, on tiny recipes; random genotypes of matched latency by a hand-made latency table."""

import json
import logging
import shutil
import signal
from dataclasses import replace
from itertools import islice
from pathlib import Path

import pytest

from conftest import TPSR_DIR, small_genotype, write_latency_table, write_tiny_train_yaml
from darts_sr.config import ConfigError, SupernetConfig, TrainConfig, load_config
from darts_sr.data import HOLDOUT, NEAR_DUPLICATES, list_images, load_training_pairs
from darts_sr.evaluation.latency import LatencyTable, predict_ms
from darts_sr.experiments import compare, records
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node, live_nodes, save_genotype
from darts_sr.nets.networks import REFERENCE_LR_SIZE, LatencyWindow, MacsWindow, generator_macs
from darts_sr.search.sampling import matched_random_genotypes
from darts_sr.training import trials
from darts_sr.training.retrain import Retrainer
from darts_sr.training.runner import StopRequested, prepare_run_folder
from darts_sr.training.trials import HOLDOUT_VAL, Trial, refuse_reported_validation, resolve_validation

SMALL = small_genotype()


@pytest.fixture
def tiny_yaml(tmp_path):
    return write_tiny_train_yaml(tmp_path / "tiny.yaml", pixel_phase={"steps": 2}, gan_phase={"steps": 1}, val_every=1)


def test_random_genotypes_stay_in_the_window_under_the_skip_cap():
    s = SupernetConfig()
    space = {"ops": list(s.ops), "nodes": 10, "channels": 16, "scale": 4, "input_window": None, "max_skip_nodes": 2}
    target = generator_macs(TPSR) * 0.95
    found = matched_random_genotypes(12, MacsWindow(target), 0, **space | {"ops": tuple(space["ops"])})
    assert len(set(found)) == 12
    for g in found:
        assert 0.97 * target <= generator_macs(g) <= 1.03 * target
        assert sum(n.op == "skip" for n in g.nodes) <= 2  # pruned: every node left is live
        assert live_nodes(g.nodes, g.outputs) == set(range(1, len(g.nodes) + 1))
    # A longer draw extends a shorter one: random_0..k keep their genotypes when --random grows.
    assert matched_random_genotypes(5, MacsWindow(target), 0, **space | {"ops": tuple(space["ops"])}) == found[:5]


@pytest.mark.parametrize(
    "recipe_file", ["configs/compare_cpu.yaml", "configs/compare_cpu_short.yaml", "configs/compare_cpu_realistic.yaml"]
)
def test_the_validation_slice_never_overlaps_training(recipe_file, tmp_path, shared):
    recipe = load_config(TrainConfig, recipe_file)
    assert recipe.data.val == HOLDOUT_VAL
    split = resolve_validation(recipe, tmp_path)
    val = {p.resolve() for p in Path(split.data.val).iterdir()}
    assert {p.name for p in val} == set(HOLDOUT) and all(p.parent.name == "HR" for p in val)
    trained = {p.name for p in load_training_pairs(split.data.train, 4)}
    assert not trained & {Path(n).stem for n in HOLDOUT}
    sources = [spec.partition("=")[2] for spec in recipe.data.train]
    originals = {p.stem for d in sources for p in list_images(d)}
    # Nothing else lost: every other image trains, less the near-duplicates of reported images.
    assert trained | {Path(n).stem for n in HOLDOUT} | set(NEAR_DUPLICATES) == originals


def test_a_benchmark_as_validation_set_is_refused(tmp_path):
    recipe = load_config(TrainConfig, "configs/compare_cpu.yaml", ["data.val=../shared/datasets/Set14"])
    with pytest.raises(ConfigError, match="is the reported benchmark Set14"):
        refuse_reported_validation(recipe, [("Set14", "../shared/datasets/Set14")])


def test_records_round_trip_skip_and_rebuild_the_report(tmp_path, tiny_yaml, monkeypatch, caplog, one_thread):
    searched, wide = tmp_path / "searched.json", tmp_path / "wide.json"
    save_genotype(SMALL, searched)
    save_genotype(replace(SMALL, nodes=(Node("conv_3x3", 0), Node("sep_3x3", 0)), outputs=(1, 2)), wide)
    out, work = tmp_path / "results" / "tiny", tmp_path / "runs"
    args = [
        "--searched",
        str(searched),
        "--baseline",
        str(wide),
        "--random",
        "2",
        "--seeds",
        "tpsr=2",
        "--config",
        str(tiny_yaml),
        "--benchmark",
        f"Set5={TPSR_DIR / 'Set5'}",
        "--out",
        str(out),
        "--work",
        str(work),
    ]
    assert compare.main(args) == 0
    names = sorted(p.name for p in out.glob("*_seed*.json"))
    assert names == [
        "baseline_wide_seed0.json",
        "random_0_seed0.json",
        "random_1_seed0.json",
        "searched_0_seed0.json",
        "tpsr_seed0.json",
        "tpsr_seed1.json",
    ]
    record = json.loads((out / "tpsr_seed1.json").read_text())
    assert record["genotype"] == TPSR.to_dict() and record["seed"] == 1 and record["group"] == "tpsr"
    assert record["recipe_hash"] == json.loads((out / records.EXPERIMENT).read_text())["recipe_hash"]
    assert set(record["scores"]) == {"pixel", "gan"} and set(record["scores"]["pixel"]) == {"Set5", "val"}
    assert record["scores"]["pixel"]["Set5"]["psnr_y"] > 0 and record["scores"]["gan"]["val"]["step"] == 3
    experiment = json.loads((out / records.EXPERIMENT).read_text())
    for name in ("random_0", "random_1"):
        assert abs(experiment["models"][name]["macs_720p"] / generator_macs(SMALL) - 1) <= 0.03
    bicubic = json.loads((out / records.BICUBIC).read_text())
    assert bicubic["Set5"]["psnr_y"] == pytest.approx(28.43, abs=0.01)
    summary = json.loads((out / records.SUMMARY).read_text())
    pixel_set5 = next(s for s in summary["statistics"] if (s["phase"], s["dataset"]) == ("pixel", "Set5"))
    assert pixel_set5["groups"]["random"]["n"] == 2 and pixel_set5["mann_whitney"]["alternative"].startswith("searched")
    assert pixel_set5["noise_floor_from"] == ["tpsr"] and pixel_set5["tpsr"]["of"] == 5
    report = (out / records.REPORT).read_text()
    assert "## Baselines at matched MACs" in report and "| baseline_wide |" in report
    assert (
        set(pixel_set5["baselines"]) == {"baseline_wide"}
        and pixel_set5["baselines"]["baseline_wide"]["percentile"] >= 0
    )
    assert "| tpsr | tpsr |" in report and "Mann–Whitney" in report and (out / records.PLOT).stat().st_size > 0

    # A second run trains nothing: every model is recorded.
    def no_training(*a, **k):
        raise AssertionError("a recorded model was retrained")

    monkeypatch.setattr(trials, "Retrainer", no_training)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="darts_sr.training.trials"):
        assert compare.main(args) == 0
    assert sum("already recorded" in m for m in caplog.messages) == 6

    # Another experiment over the same models copies their records from this one (--reuse) instead of training.
    other = tmp_path / "results" / "other"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="darts_sr.training.trials"):
        assert compare.main([*args[:-4], "--out", str(other), "--work", str(work), "--reuse", str(out)]) == 0
    assert sum("copied" in m for m in caplog.messages) == 6
    copied = json.loads((other / "tpsr_seed1.json").read_text())
    assert copied["extra"].pop("reused_from") == str(out / "tpsr_seed1.json") and copied == record

    # The report needs the records alone: no run folder, no benchmark images.
    shutil.rmtree(work)
    (out / records.REPORT).unlink()
    (out / records.PLOT).unlink()
    assert compare.main(["--report", str(out)]) == 0
    assert (out / records.REPORT).read_text() == report and (out / records.PLOT).is_file()
    assert compare.main(["--report", str(out), "--versus", str(out)]) == 0  # the proxy check: the same ranking
    proxy = json.loads((out / records.SUMMARY).read_text())["proxy"]
    assert proxy and all(p["tau"] == pytest.approx(1.0) and len(p["models"]) == 5 for p in proxy)

    # The same folder under another recipe is refused, not silently mixed.
    assert compare.main([*args, "--set", "pixel_phase.steps=3"]) == 2


def test_an_interrupted_model_resumes_from_its_run_folder(tmp_path, tiny_yaml, caplog, one_thread):
    config = load_config(TrainConfig, tiny_yaml)
    run_dir = tmp_path / "searched_0_seed0"
    trial = Trial(SMALL, config, 0)
    trials.check_run_folder(run_dir, trial.identity())
    prepare_run_folder(run_dir, False, False)
    (run_dir / trials.TRIAL_FILE).write_text(json.dumps(trial.identity()))
    cut = Retrainer(config, SMALL, trial.trained_discriminator(), run_dir)
    one_step = cut.one_step

    def stop_after_one(*args):
        one_step(*args)
        cut.stop.signum = signal.SIGINT

    cut.one_step = stop_after_one
    with pytest.raises(StopRequested):
        cut.run()
    with caplog.at_level(logging.INFO, logger="darts_sr.training.trials"):
        summary = trial.run(run_dir, tmp_path / "split")
    assert any("resuming" in m for m in caplog.messages) and summary["steps"] == 3
    with pytest.raises(trials.TrialError, match="made for another trial .*genotype"):
        Trial(TPSR, config, 0).run(run_dir, tmp_path / "split")


# --- at matched latency ----------------------------------------------------------------------------------------------

# Milliseconds at the x4 reference LR size (180x320), made up, at the random genotypes' width (4) and TPSR's (16).
LATENCY_OPS = {"conv_3x3": 1.3, "conv_5x5": 2.7, "conv_7x7": 4.6, "sep_3x3": 0.61, "sep_5x5": 0.83, "sep_7x7": 1.17,
               "dil_3x3": 1.41, "skip": 0.02}  # fmt: skip
TARGET_MS = 12.0


def _latency_table(path, channels=(4, 16), sizes=(REFERENCE_LR_SIZE[4],), ops=LATENCY_OPS):
    return write_latency_table(path, ops, 0.9, 2.1, (0.05, 0.09, 0.14), sizes, channels)


def _latency_args(tmp_path, tiny_yaml, out, *extra):
    searched = tmp_path / "searched.json"
    save_genotype(SMALL, searched)
    return [
        *("--searched", str(searched), "--random", "2", "--config", str(tiny_yaml)),
        *("--benchmark", f"Set5={TPSR_DIR / 'Set5'}", "--out", str(out), "--work", str(tmp_path / "runs")),
        *extra,
    ]


def test_random_genotypes_of_matched_latency_end_to_end(tmp_path, tiny_yaml, monkeypatch, one_thread):
    table_path = _latency_table(tmp_path / "table.json")
    table = LatencyTable.load(table_path)
    out = tmp_path / "results" / "ms"
    latency = ("--target-ms", str(TARGET_MS), "--latency-table", str(table_path))
    assert compare.main(_latency_args(tmp_path, tiny_yaml, out, *latency)) == 0
    names = sorted(p.name for p in out.glob("*_seed*.json"))
    assert names == ["random_0_seed0.json", "random_1_seed0.json", "searched_0_seed0.json", "tpsr_seed0.json"]
    experiment = json.loads((out / records.EXPERIMENT).read_text())
    assert (experiment["target_ms"], experiment["tolerance"]) == (TARGET_MS, 0.05)
    assert "target_macs_720p" not in experiment
    recorded = experiment["latency"]
    assert recorded["table"] == str(table_path) and recorded["lr_size"] == [180, 320]
    assert recorded["provenance"]["backend"] == "eager" and recorded["provenance"]["threads"] == 1
    assert recorded["provenance"]["cpu_model"] == "none" and recorded["provenance"]["load_before"] == [0, 0, 0]
    assert recorded["timing"]["confirmed"] is False and "predicted only" in recorded["timing"]["note"]
    window = LatencyWindow(TARGET_MS)
    for m in experiment["models"].values():
        genotype = GeneratorGenotype.from_dict(m["genotype"])
        assert m["predicted_ms"] == predict_ms(genotype, table, REFERENCE_LR_SIZE[4]) and "measured_ms" not in m
        assert window.contains(m["predicted_ms"]) == (m["group"] == "random")  # 4.96 ms searched, 27.68 ms tpsr
    report = (out / records.REPORT).read_text()
    assert "within 12.000 ms ± 5% as the latency table" in report and "GMACs ±" not in report
    assert "Latency is predicted only" in report and "## Searched vs random at matched latency" in report
    assert "| GMACs@720p | predicted ms | depth |" in report and "| 4.960 |" in report
    assert (out / records.PLOT_MS).stat().st_size > 0 and not (out / records.PLOT).exists()
    summary = json.loads((out / records.SUMMARY).read_text())
    assert summary["latency_window"] == {"target_ms": TARGET_MS, "tolerance": 0.05}

    # --confirm-timing: every model timed (by a stand-in: halfway from its prediction to the target, so the random
    # genotypes stay in), nothing retrained (--reuse), measured ms recorded; a rerun keeps the timing, not timing again.
    calls = []

    def timed(genotypes, backend, threads, lr_size, repeats, warmup, device):
        calls.append((len(genotypes), backend, threads, lr_size, repeats, warmup, device))
        return [(predict_ms(g, table, lr_size) + TARGET_MS) / 2 for g in genotypes]

    monkeypatch.setattr(compare, "measure_many", timed)
    confirmed = tmp_path / "results" / "confirmed"
    args = _latency_args(tmp_path, tiny_yaml, confirmed, *latency, "--confirm-timing", "--reuse", str(out))
    assert compare.main(args) == 0
    assert calls == [(4, "eager", 1, (180, 320), 1, 0, "cpu")]
    experiment = json.loads((confirmed / records.EXPERIMENT).read_text())
    timing = experiment["latency"]["timing"]
    assert timing["confirmed"] is True and timing["redrawn"] == 0 and len(timing["load_before"]) == 3
    assert all(m["measured_ms"] == (m["predicted_ms"] + TARGET_MS) / 2 for m in experiment["models"].values())
    report = (confirmed / records.REPORT).read_text()
    assert "Every model was timed end to end here (eager, 1 thread(s)" in report and "| measured ms |" in report
    monkeypatch.setattr(compare, "measure_many", lambda *a, **k: pytest.fail("timed again"))
    assert compare.main(args) == 0
    assert json.loads((confirmed / records.EXPERIMENT).read_text())["latency"]["timing"] == timing


def test_confirm_timing_redraws_random_genotypes_measured_outside_the_window(tmp_path, tiny_yaml, monkeypatch):
    table_path = _latency_table(tmp_path / "table.json")
    table = LatencyTable.load(table_path)
    args = compare.parse_args(
        _latency_args(tmp_path, tiny_yaml, tmp_path / "out", "--target-ms", "12", "--latency-table", str(table_path))
    )
    models, window, space, latency = compare.candidates(args, 4)
    draws = list(islice(compare.random_draws(args, window, space, latency), 4))
    assert [models[f"random_{i}"]["genotype"] for i in range(2)] == draws[:2]
    slow = {draws[0], draws[2]}  # random_0 and its first replacement measure 1.2x their prediction

    def timed(genotypes, *args):
        return [predict_ms(g, table) * (1.2 if g in slow else 1.0) for g in genotypes]

    monkeypatch.setattr(compare, "measure_many", timed)
    timing = compare.confirm_timing(args, models, window, space, latency)
    assert timing["redrawn"] == 2 and [r["model"] for r in timing["rejected"]] == ["random_0", "random_0"]
    assert models["random_0"]["genotype"] == draws[3] and models["random_1"]["genotype"] == draws[1]
    assert models["random_0"]["source"] == "sample 3 (seed 0), redrawn"
    assert all(window.contains(models[f"random_{i}"]["measured_ms"]) for i in range(2))
    assert models["tpsr"]["measured_ms"] == pytest.approx(27.68)  # outside, recorded, never redrawn

    # A table that does not predict this machine: one line, naming the file, instead of redrawing for ever.
    monkeypatch.setattr(compare, "measure_many", lambda genotypes, *a: [2 * predict_ms(g, table) for g in genotypes])
    models, window, space, latency = compare.candidates(args, 4)
    with pytest.raises(ConfigError, match=r"measured outside 12\.000 ms ± 5% \(measured/predicted median 2\.00.*"
                       r"table\.json does not predict this machine now"):  # fmt: skip
        compare.confirm_timing(args, models, window, space, latency)


def test_latency_flags_and_tables_that_do_not_fit_are_one_error_line(tmp_path, tiny_yaml, capsys):
    table = _latency_table(tmp_path / "table.json")
    narrow = _latency_table(tmp_path / "narrow.json", channels=(4,))  # not TPSR's 16 channels
    short = _latency_table(tmp_path / "short.json", ops={k: v for k, v in LATENCY_OPS.items() if k != "sep_7x7"})
    small = _latency_table(tmp_path / "small.json", sizes=((12, 16),))  # not the 720p LR size
    out = tmp_path / "out"
    cases = [
        (["--target-ms", "12"], "--target-ms needs --latency-table"),
        (["--latency-table", str(table)], "--latency-table needs --target-ms"),
        (["--target-ms", "12", "--latency-table", str(table), "--target-macs", "3e9"], "give one target"),
        (["--confirm-timing"], "--confirm-timing needs --target-ms"),
        (["--target-ms", "0", "--latency-table", str(table)], "--target-ms 0: must be positive"),
        (["--target-ms", "12", "--latency-table", str(tmp_path / "missing.json")], "missing.json: cannot read"),
        (["--target-ms", "12", "--latency-table", str(narrow)], f"--latency-table {narrow}: tpsr: "),
        (["--target-ms", "12", "--latency-table", str(short)], f"--latency-table {short}: no entry for (sep_7x7"),
        (["--target-ms", "12", "--latency-table", str(small)], "no entry for (conv_3x3, 4 channels, LR 180x320)"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert compare.main(_latency_args(tmp_path, tiny_yaml, out, *extra)) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (extra, err)
    assert not out.exists()  # refused before anything was written
