"""Stage-1 search end to end on tiny sizes: run folder contents, resume equality, CLI errors."""

import json
import signal
from dataclasses import replace

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli
from darts_sr.config import SearchConfig, load_config
from darts_sr.io import load_checkpoint
from darts_sr.nets.genotype import load_generator_genotype
from darts_sr.nets.networks import generator_macs
from darts_sr.search.generator_stage import GeneratorSearch
from darts_sr.training.runner import StopRequested, prepare_run_folder, save_config

TINY = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
    "supernet": {"nodes": 3, "channels": 4},
    "cost": {"target_macs": 2.0e8},
    "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005},
    "discriminator": {"base_width": 4},
    "optim": {"epochs": 3, "steps_per_epoch": 3, "warmup_epochs": 1},
    "run": {"log_every": 1, "samples": 1},
}


def _config(tmp_path, **sections) -> SearchConfig:
    data = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(SearchConfig, path)


def _run(config: SearchConfig, run_dir, resume=False) -> dict:
    run_dir = prepare_run_folder(run_dir, resume=resume, overwrite=False)
    if not resume:
        save_config(run_dir, {})
    return GeneratorSearch(config, run_dir, resume=resume).run()


def test_search_writes_a_self_describing_run_folder(tmp_path):
    config = _config(tmp_path)
    summary = _run(config, tmp_path / "run")
    run = tmp_path / "run"
    genotype = load_generator_genotype(run / "genotype_generator.json")
    assert summary["macs_720p"] == generator_macs(genotype) <= 1.03 * 2.0e8
    assert sorted(p.name for p in (run / "history").iterdir()) == [f"genotype_epoch_{e:03d}.json" for e in (1, 2, 3)]
    saved = json.loads((run / "summary.json").read_text())
    assert set(saved) >= {"params", "macs_720p", "supernet_val_psnr", "wall_time_s", "genotype"}
    assert saved["perceptual_backbone"] == "unused"
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 9 and {"alpha", "beta", "gamma"} <= set(checkpoint["supernet"])

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "loss/l_g_pix",
        "loss/l_g_gan",
        "loss/l_d_real",
        "loss/l_d_fake",
        "penalty/cost",
        "cost/macs_ratio",
        "cost/penalised_gmacs",
        "relaxation/temperature",
        "entropy/node01",
        "arch/depth",
        "val/psnr_supernet",
        "lr/weight",
        "lr/arch",
        "prob/node01/conv_3x3",
        "prob/output/node03",
    } <= scalars
    images = set(events.Tags()["images"])
    assert {"arch/op_probs", "arch/input_probs", "arch/genotype"} <= images
    assert any(tag.startswith("samples/") for tag in images)
    assert "genotype/text_summary" in events.Tags()["tensors"]


def test_architecture_moves_after_warmup_only(tmp_path):
    config = _config(tmp_path, optim={"epochs": 2, "warmup_epochs": 1})
    search = GeneratorSearch(config, prepare_run_folder(tmp_path / "run", False, False))
    before = [p.detach().clone() for p in search.supernet.arch_parameters()]
    search.total_steps = 3  # the warm-up epoch only
    search.run()
    assert all(torch.equal(a, b) for a, b in zip(before, search.supernet.arch_parameters()))
    search.total_steps = 6
    search.run()
    assert not all(torch.equal(a, b) for a, b in zip(before, search.supernet.arch_parameters()))


@pytest.mark.parametrize("order, strategy", [("first", "mixed"), ("second", "mixed"), ("first", "sampled")])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, order, strategy):
    config = _config(tmp_path, optim={"order": order}, supernet={"strategy": strategy})
    whole = GeneratorSearch(config, prepare_run_folder(tmp_path / "whole", False, False))
    whole.run()

    interrupted = GeneratorSearch(config, prepare_run_folder(tmp_path / "cut", False, False))
    one_step = interrupted.one_step

    def stop_at_step_five(*args):
        one_step(*args)
        if interrupted.step == 5:  # mid-epoch, after an architecture step
            interrupted.stop.signum = signal.SIGTERM

    interrupted.one_step = stop_at_step_five
    with pytest.raises(StopRequested, match="step 5"):
        interrupted.run()
    resumed = GeneratorSearch(config, tmp_path / "cut", resume=True)
    assert resumed.step == 5
    resumed.run()

    for a, b in zip(whole.supernet.arch_parameters(), resumed.supernet.arch_parameters()):
        assert torch.equal(a, b)
    assert (tmp_path / "whole" / "genotype_generator.json").read_text() == (
        tmp_path / "cut" / "genotype_generator.json"
    ).read_text()


def test_cli_rejects_unknown_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"optim": {"epoch": 3}}))
    result = run_cli("train_search.py", "--config", bad, "--out", tmp_path / "run")
    assert result.returncode == 2
    assert "bad.yaml.optim: unknown key(s) ['epoch']" in result.stderr.strip().splitlines()[-1]
    result = run_cli("train_search.py", "--set", "optim.epochs=many", "--out", tmp_path / "run")
    assert result.returncode == 2 and "optim.epochs: expected an integer" in result.stderr


def test_cli_runs_and_refuses_to_overwrite(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY | {"optim": {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0}}))
    out = tmp_path / "run"
    result = run_cli("train_search.py", "--config", cfg, "--out", out, "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["run"]["seed"] == 3
    assert (out / "genotype_generator.json").is_file() and (out / "run.log").is_file()
    again = run_cli("train_search.py", "--config", cfg, "--out", out)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_perturbation_selection_is_the_runs_result_and_the_derive_command_reproduces_it(tmp_path):
    config = _config(tmp_path, derive={"method": "perturbation", "batches": 2})
    summary = _run(config, tmp_path / "run")
    run = tmp_path / "run"
    assert summary["derive_method"] == "perturbation"
    lo, hi = 0.97 * 2.0e8, 1.03 * 2.0e8
    assert lo <= summary["macs_720p"] <= hi
    (run / "config.yaml").write_text(yaml.safe_dump(TINY | {"derive": {"method": "perturbation", "batches": 2}}))
    done = run_cli("-m darts_sr.search.derive", str(run), "--out", str(tmp_path / "again.json"))
    assert done.returncode == 0, done.stderr
    assert load_generator_genotype(tmp_path / "again.json") == load_generator_genotype(run / "genotype_generator.json")
    bad = run_cli("-m darts_sr.search.derive", str(run), "--batches", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "error: derive.batches: expected at least 1, got 0"


def test_derive_at_another_target_lands_in_that_window(tmp_path):
    """derive --target-macs: the same supernet derived again around another target, in the run's tolerance."""
    config = _config(tmp_path)
    _run(config, tmp_path / "run")
    run = tmp_path / "run"
    (run / "config.yaml").write_text(yaml.safe_dump(TINY))
    here = run_cli("-m darts_sr.search.derive", str(run), "--method", "argmax", "--target-macs", "2.0e8")
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout)["genotype"] == load_generator_genotype(run / "genotype_generator.json").to_dict()
    derived = load_generator_genotype(run / "genotype_generator.json")
    for op in ("conv_3x3", "conv_7x7"):  # targets the derived wiring can reach: every live node this op
        target = generator_macs(replace(derived, nodes=tuple(replace(n, op=op) for n in derived.nodes)))
        done = run_cli("-m darts_sr.search.derive", str(run), "--method", "argmax", "--target-macs", str(target))
        facts = json.loads(done.stdout)
        assert facts["target"] == target and abs(facts["macs_720p"] / target - 1) <= 0.03, (target, facts["macs_720p"])
    wrong_unit = run_cli("-m darts_sr.search.derive", str(run), "--target-ms", "50")
    assert wrong_unit.returncode == 2
    assert wrong_unit.stderr.strip().splitlines()[-1].startswith("error: --target-ms:")
