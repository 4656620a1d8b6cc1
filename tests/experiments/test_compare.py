"""The comparison as an experiment: honest split, sampling in the MACs window, records that round-trip, skip and
rebuild the report, on tiny recipes."""

import json
import logging
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import TPSR_DIR, small_genotype, write_tiny_train_yaml
from darts_sr.config import ConfigError, SupernetConfig, TrainConfig, load_config
from darts_sr.data import HOLDOUT, NEAR_DUPLICATES, list_images, load_training_pairs
from darts_sr.experiments import compare, records
from darts_sr.nets.genotype import TPSR, Node, live_nodes, save_genotype
from darts_sr.nets.networks import MacsWindow, generator_macs
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


@pytest.mark.parametrize("recipe_file", ["configs/compare_cpu.yaml", "configs/compare_cpu_realistic.yaml"])
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
