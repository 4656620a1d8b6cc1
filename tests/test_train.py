"""Retraining, random genotypes and the comparison, end to end on tiny sizes."""

import json
import random
import signal

import pytest
import torch

from conftest import TPSR_DIR, run_cli, small_genotype, write_tiny_train_yaml
from darts_sr.config import TrainConfig, load_config
from darts_sr.discriminator import SRGAN_DISCRIMINATOR
from darts_sr.genotype import TPSR, live_nodes, save_genotype
from darts_sr.networks import generator_macs
from darts_sr.runner import StopRequested, prepare_run_folder
from darts_sr.sampling import SamplingError, matched_random_genotypes, sample_genotype
from darts_sr.train import Retrainer
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
        evaluated = run_cli("evaluate.py", "--weights", out / model, "--data", f"Set5={TPSR_DIR / 'Set5'}",
                            "--json", tmp_path / "r.json")  # fmt: skip
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
    found = matched_random_genotypes(4, target, 0.05, seed=1, ops=GENERATOR_SEARCH_SPACE)
    assert len(set(found)) == 4
    assert all(0.95 * target <= generator_macs(g) <= 1.05 * target for g in found)
    assert found == matched_random_genotypes(4, target, 0.05, seed=1, ops=GENERATOR_SEARCH_SPACE)
    with pytest.raises(SamplingError, match="no genotype within"):
        sample_genotype(random.Random(0), ("conv_7x7",), nodes=2, macs_window=(1.0, 2.0), max_tries=50)
