"""Retraining, random genotypes and the comparison, end to end on tiny sizes."""

import json
import random
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import TPSR_DIR, run_cli, small_genotype, write_tiny_train_yaml
from darts_sr.config import ConfigError, TrainConfig, load_config
from darts_sr.data import DataError, ImagePair, PatchSampler
from darts_sr.io import file_sha256, load_checkpoint
from darts_sr.nets.discriminator import SRGAN_DISCRIMINATOR
from darts_sr.nets.genotype import TPSR, live_nodes, save_genotype
from darts_sr.nets.networks import MacsWindow, generator_macs
from darts_sr.search.sampling import SamplingError, matched_random_genotypes, sample_genotype
from darts_sr.training import trials
from darts_sr.training.retrain import Retrainer, chosen_validation
from darts_sr.training.runner import RunFolderError, StopRequested, prepare_run_folder
from darts_sr.training.schedules import cosine, ema_decay, warmup_cosine
from operations import GENERATOR_SEARCH_SPACE

SMALL = small_genotype()


@pytest.fixture
def tiny_yaml(tmp_path):
    return write_tiny_train_yaml(tmp_path / "tiny.yaml")


def test_train_cli_writes_models_that_evaluate_alone(tmp_path, tiny_yaml):
    geno = tmp_path / "small.json"
    save_genotype(SMALL, geno)
    out = tmp_path / "run"
    result = run_cli("train.py", "--genotype", geno, "--config", tiny_yaml, "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == ["model_gan.pt", "model_pixel.pt"] and summary["steps"] == 7
    assert [h["step"] for h in summary["val_history"]] == [2, 4, 6, 7]
    for model in ("model_pixel.pt", "model_gan.pt"):
        evaluated = run_cli(
            "evaluate.py",
            "--weights",
            out / model,
            "--data",
            f"Set5={TPSR_DIR / 'Set5'}",
            "--json",
            tmp_path / "r.json",
        )
        assert evaluated.returncode == 0, evaluated.stderr
        (record,) = json.loads((tmp_path / "r.json").read_text())
        assert record["params"] == summary["params"] and record["psnr_y"] > 0


def test_train_resume_equals_uninterrupted(tmp_path, tiny_yaml):
    config = load_config(TrainConfig, tiny_yaml)
    whole = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, prepare_run_folder(tmp_path / "whole", False, False))
    whole.run()
    cut = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, prepare_run_folder(tmp_path / "cut", False, False))
    one_step = cut.one_step

    def stop_in_gan_phase(*args):
        one_step(*args)
        if cut.step == 5:
            cut.stop.signum = signal.SIGINT

    cut.one_step = stop_in_gan_phase
    with pytest.raises(StopRequested, match="SIGINT at step 5"):
        cut.run()
    resumed = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, tmp_path / "cut", resume=True)
    resumed.run()
    for (name, a), b in zip(whole.generator.state_dict().items(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b), name
    assert whole.history == resumed.history


@pytest.mark.parametrize("cut_at", [3, 5])  # in the pixel phase (the average is live), and after it
def test_a_moving_average_is_validated_kept_and_resumed_exactly(tmp_path, cut_at, one_thread):
    yaml_file = write_tiny_train_yaml(tmp_path / "ema.yaml", pixel_phase={"steps": 4, "ema": 0.5, "warmup_steps": 2})
    config = load_config(TrainConfig, yaml_file)
    whole = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, prepare_run_folder(tmp_path / "whole", False, False))
    whole.run()
    kept = load_checkpoint(tmp_path / "whole" / "model_pixel.pt")
    # The pixel model is the average, not the last weights: their validations differ, and the GAN phase started
    # from the average.
    plain = Retrainer(
        replace(config, pixel_phase=replace(config.pixel_phase, ema=None)),
        SMALL,
        SRGAN_DISCRIMINATOR,
        prepare_run_folder(tmp_path / "plain", False, False),
    )
    plain.run()
    assert whole.history[0]["psnr_y"] != plain.history[0]["psnr_y"]
    assert kept["val"]["psnr_y"] == max(h["psnr_y"] for h in whole.history if h["phase"] == "pixel")
    cut = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, prepare_run_folder(tmp_path / "cut", False, False))
    one_step = cut.one_step

    def stop(*args):
        one_step(*args)
        if cut.step == cut_at:
            cut.stop.signum = signal.SIGINT

    cut.one_step = stop
    with pytest.raises(StopRequested):
        cut.run()
    resumed = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, tmp_path / "cut", resume=True)
    resumed.run()
    assert whole.history == resumed.history
    for (name, a), b in zip(whole.generator.state_dict().items(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b), name


def test_warm_up_then_cosine_and_the_average_ramp():
    assert [warmup_cosine(s, 10, 4, 1.0, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 10, 4, 1.0, 0.0) == 1.0 and warmup_cosine(10, 10, 4, 1.0, 0.0) == 0.0
    assert warmup_cosine(3, 10, 0, 1.0, 0.0) == cosine(3, 10, 1.0, 0.0)
    assert ema_decay(0, 0.999) == pytest.approx(0.1) and ema_decay(10**6, 0.999) == 0.999


def test_resuming_a_run_folder_of_another_config_is_refused(tmp_path, tiny_yaml, one_thread):
    config = load_config(TrainConfig, tiny_yaml)
    Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, prepare_run_folder(tmp_path / "run", False, False)).run()
    other = replace(config, pixel_phase=replace(config.pixel_phase, lr=0.5))
    with pytest.raises(RunFolderError, match="another config .*pixel_phase"):
        Retrainer(other, SMALL, SRGAN_DISCRIMINATOR, tmp_path / "run", resume=True)


def test_images_smaller_than_the_patch_are_skipped_when_asked():
    pairs = [
        ImagePair(f"p{i}", np.zeros((s, s, 3), np.uint8), np.zeros((4 * s, 4 * s, 3), np.uint8))
        for i, s in enumerate((8, 20, 30))
    ]
    with pytest.raises(DataError, match="smaller than the 16x16 patch"):
        PatchSampler(pairs, 16, 4)
    assert [p.name for p in PatchSampler(pairs, 16, 4, skip_small=True).pairs] == ["p1", "p2"]
    with pytest.raises(DataError, match="no training image holds a 40x40"):
        PatchSampler(pairs, 40, 4, skip_small=True)


def test_random_genotypes_are_valid_and_uniformly_reach_the_space():
    rng = random.Random(0)
    seen_ops = set()
    for _ in range(200):
        g = sample_genotype(rng, GENERATOR_SEARCH_SPACE, nodes=10, max_skip_nodes=2)
        assert sum(n.op == "skip" for n in g.nodes) <= 2  # after pruning, every node is live
        assert live_nodes(g.nodes, g.outputs) == set(range(1, len(g.nodes) + 1))
        seen_ops |= {n.op for n in g.nodes}
    assert seen_ops == set(GENERATOR_SEARCH_SPACE)


def test_random_genotypes_respect_the_macs_window():
    target = generator_macs(TPSR)
    window = MacsWindow(target, 0.05)
    found = matched_random_genotypes(4, window, seed=1, ops=GENERATOR_SEARCH_SPACE)
    assert len(set(found)) == 4
    assert all(0.95 * target <= generator_macs(g) <= 1.05 * target for g in found)
    assert found == matched_random_genotypes(4, window, seed=1, ops=GENERATOR_SEARCH_SPACE)
    assert window.contains(window.low) and window.contains(window.high) and not window.contains(1.06 * target)
    assert MacsWindow.around(None, 4) == MacsWindow(target) and str(window) == "3.575 GMACs ± 5%"
    with pytest.raises(SamplingError, match="no genotype within"):
        sample_genotype(random.Random(0), ("conv_7x7",), nodes=2, macs_window=MacsWindow(1.5, 0.3), max_tries=50)


def test_train_from_given_weights_runs_only_the_gan_phase(tmp_path, tiny_yaml):
    weights = TPSR_DIR / "weights" / "TPSR_NOGANX4.pt"
    out = tmp_path / "gan_only"
    result = run_cli("train.py", "--genotype", "tpsr", "--init", weights, "--config", tiny_yaml, "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["models"] == ["model_gan.pt"]
    assert summary["generator_weights_sha256"] == file_sha256(weights)
    assert {h["phase"] for h in summary["val_history"]} == {"gan"}
    # Our own checkpoint serves as well (the pixel phase is skipped whatever the recipe says).
    again = run_cli(
        "train.py",
        "--genotype",
        "tpsr",
        "--init",
        out / "model_gan.pt",
        "--set",
        "pixel_phase.steps=1",
        "--config",
        tiny_yaml,
        "--out",
        tmp_path / "again",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["steps"] == 3
    # Weights that do not fit the genotype are refused before anything runs, naming the file.
    small = tmp_path / "small.json"
    save_genotype(SMALL, small)
    refused = run_cli(
        "train.py", "--genotype", small, "--init", weights, "--config", tiny_yaml, "--out", tmp_path / "x"
    )
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "TPSR_NOGANX4.pt" in refused.stderr and not (tmp_path / "x").exists()


def test_keep_rules_choose_from_the_validation_history():
    history = [
        {"psnr_y": 27.0, "niqe": 7.0},
        {"psnr_y": 26.5, "niqe": 5.0},
        {"psnr_y": 25.0, "niqe": 4.0},
        {"psnr_y": 27.0, "niqe": 6.0},
    ]
    assert chosen_validation(history, "best_psnr") == 0  # the first of equals
    assert chosen_validation(history, "last") == 3
    assert (
        chosen_validation(history, "lowest_niqe", 26.0) == 1 and chosen_validation(history, "lowest_niqe", 27.5) is None
    )
    with pytest.raises(ConfigError, match="psnr_floor: required with keep: lowest_niqe"):
        load_config(TrainConfig, None, ["gan_phase.keep=lowest_niqe"])


def test_the_gan_phase_keeps_the_model_its_rule_chose(tmp_path, one_thread):
    yaml_file = write_tiny_train_yaml(
        tmp_path / "k.yaml",
        gan_phase={"steps": 6, "keep": "lowest_niqe", "psnr_floor": 0.0},
        val_every=2,
        data={"val_crop": 0},
    )
    config = load_config(TrainConfig, yaml_file)
    run = Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, prepare_run_folder(tmp_path / "run", False, False))
    summary = run.run()
    gan = [h for h in summary["val_history"] if h["phase"] == "gan"]
    best = min(gan, key=lambda h: h["niqe"])
    assert load_checkpoint(tmp_path / "run" / "model_gan.pt")["val"]["step"] == best["step"]
    assert trials.selection_scores(summary, "val", config)["gan"]["step"] == best["step"]
