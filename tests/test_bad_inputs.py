"""Reliability through the real CLIs: bad input gets one clear line and a non-zero exit,
interrupted runs resume to the same result, non-finite losses stop the run cleanly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, TPSR_DIR, run_cli
from darts_sr.io import load_checkpoint
from darts_sr.nets.genotype import TPSR

WEIGHTS = TPSR_DIR / "weights" / "TPSR_NOGANX4.pt"
TINY_SEARCH = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
    "supernet": {"nodes": 3, "channels": 4},
    "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005},
    "discriminator": {"base_width": 4},
    "optim": {"epochs": 4, "steps_per_epoch": 4, "warmup_epochs": 1},
    "run": {"log_every": 1, "samples": 1},
}


def _error_line(result) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[-1]


def _evaluate(*args):
    return run_cli("evaluate.py", "--genotype", "tpsr", "--weights", WEIGHTS, *args)


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


# --- images -----------------------------------------------------------------------------------


def test_odd_images_work_and_cropping_is_said_once(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "odd"
    _write(folder / "grey.png", rng.integers(0, 255, (42, 41), dtype=np.uint8))
    _write(folder / "rgba.png", rng.integers(0, 255, (40, 40, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 65535, (44, 40), dtype=np.uint16)).save(folder / "deep.png")
    out = tmp_path / "r.json"
    result = _evaluate("--data", f"odd={folder}", "--json", out)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())[0]["images"] == 3
    assert result.stderr.count("cropped") == 1 and "cropped 1 of 3" in result.stderr


def test_truncated_image(tmp_path):
    folder = tmp_path / "trunc"
    _write(folder / "a.png", np.zeros((40, 40, 3), np.uint8) + 100)
    data = (folder / "a.png").read_bytes()
    (folder / "a.png").write_bytes(data[: len(data) // 2])
    assert "a.png" in _error_line(_evaluate("--data", f"t={folder}"))


def test_missing_and_empty_folders(tmp_path):
    assert "nowhere" in _error_line(_evaluate("--data", f"x={tmp_path / 'nowhere'}"))
    (tmp_path / "empty").mkdir()
    assert "empty" in _error_line(_evaluate("--data", f"x={tmp_path / 'empty'}"))


def test_lr_hr_name_mismatch(tmp_path):
    root = tmp_path / "Set5"
    shutil.copytree(TPSR_DIR / "Set5", root)
    (root / "LR_bicubic" / "X4" / "bird.png").rename(root / "LR_bicubic" / "X4" / "robin.png")
    assert "bird.png" in _error_line(_evaluate("--data", f"S={root}"))


def test_image_smaller_than_training_patch(tmp_path):
    folder = tmp_path / "tiny_imgs"
    _write(folder / "a.png", np.zeros((64, 64, 3), np.uint8))
    _write(folder / "small.png", np.zeros((16, 16, 3), np.uint8))
    result = run_cli(
        "train.py",
        "--genotype",
        "tpsr",
        "--data",
        f"t={folder}",
        "--out",
        tmp_path / "run",
        "--set",
        "data.patch_size=8",
    )
    line = _error_line(result)
    assert "small" in line and "patch" in line


def test_data_spec_without_name():
    assert "NAME=PATH" in _error_line(_evaluate("--data", "builtin"))


# --- genotypes, configs, weights ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"nodes": [{"op": "conv_4x4", "input": 0}], "outputs": [1]}, "unknown op 'conv_4x4'"),
        ({"nodes": [{"op": "conv_3x3", "input": 1}], "outputs": [1]}, "input 1 is not an earlier node"),  # cycle
        (
            {"nodes": [{"op": "conv_3x3", "input": 0}, {"op": "conv_3x3", "input": 2}], "outputs": [2]},
            "input 2 is not an earlier node",
        ),  # forward reference
        ({"nodes": [{"op": "conv_3x3"}], "outputs": [1]}, "missing key(s) ['input']"),
    ],
)
def test_bad_genotype_json(tmp_path, change, fragment):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(TPSR.to_dict() | change))
    line = _error_line(run_cli("train.py", "--genotype", path, "--out", tmp_path / "run"))
    assert "g.json" in line and fragment in line


@pytest.mark.parametrize(
    "yaml_text, fragment",
    [
        ("optim:\n  epochs: 3\n  lr: 0.1\n", "unknown key(s) ['lr']"),
        ("optim:\n  epochs: three\n", "expected an integer"),
    ],
)
def test_bad_yaml_config(tmp_path, yaml_text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    line = _error_line(run_cli("train_search.py", "--config", path, "--out", tmp_path / "run"))
    assert "c.yaml" in line and fragment in line
    assert not (tmp_path / "run").exists()


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(TPSR.to_dict() | {"channels": 8}))
    line = _error_line(run_cli("evaluate.py", "--genotype", path, "--weights", WEIGHTS, "--data", "S=builtin"))
    assert "TPSR_NOGANX4.pt" in line and "shape" in line


def test_checkpoint_that_needs_code_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"generator": {}, "hook": os.system}, evil)
    line = _error_line(run_cli("evaluate.py", "--weights", evil, "--data", "S=builtin"))
    assert "evil.pt" in line and "refused" in line


def test_non_empty_run_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _error_line(run_cli("train.py", "--genotype", "tpsr", "--out", out))
    assert "not empty" in line and (out / "keep.txt").read_text() == "mine"


# --- non-finite losses --------------------------------------------------------------------------


def test_non_finite_loss_stops_naming_step_and_term(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_SEARCH))
    out = tmp_path / "run"
    # An absurd learning rate makes the weights overflow after the first step.
    result = run_cli(
        "train_search.py",
        "--config",
        config,
        "--out",
        out,
        "--set",
        "optim.weight_lr=1e20",
        "--set",
        "optim.warmup_epochs=4",
        "--set",
        "run.max_bad_steps=3",
    )
    line = _error_line(result)
    assert "non-finite 3 steps in a row" in line and "step" in line and "l_g_" in line
    assert result.stderr.count("step skipped") >= 3


# --- interruptions ------------------------------------------------------------------------------


def _start_search(config, out, *extra):
    return subprocess.Popen(
        [sys.executable, str(REPO / "train_search.py"), "--config", str(config), "--out", str(out), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_step(out, at_least, proc, timeout=300):
    checkpoint = out / "checkpoints" / "last.pt"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if checkpoint.is_file():
            try:
                if load_checkpoint(checkpoint)["step"] >= at_least:
                    return
            except Exception:  # a concurrent rename; the next poll reads the complete file
                pass
        time.sleep(0.2)
    raise AssertionError("no checkpoint in time")


def _final_state(out):
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    return (out / "genotype_generator.json").read_text(), [state["supernet"][k] for k in ("alpha", "beta", "gamma")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_SEARCH))
    result = run_cli("train_search.py", "--config", config, "--out", tmp / "run")
    assert result.returncode == 0, result.stderr
    return config, _final_state(tmp / "run")


def _assert_same(state, expected):
    genotype, arch = state
    assert genotype == expected[0]
    for a, b in zip(arch, expected[1]):
        assert torch.equal(a, b)


def test_kill_9_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path, uninterrupted):
    config, expected = uninterrupted
    out = tmp_path / "run"
    proc = _start_search(config, out)
    _wait_for_step(out, 8, proc)  # two epochs done, the third under way
    proc.kill()
    proc.wait()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] >= 8
    resumed = run_cli("train_search.py", "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_final_state(out), expected)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_final_checkpoint_and_resume_matches(tmp_path, uninterrupted, signum):
    config, expected = uninterrupted
    out = tmp_path / "run"
    proc = _start_search(config, out)
    _wait_for_step(out, 4, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "checkpoint written, continue with --resume" in stderr and "Traceback" not in stderr
    resumed = run_cli("train_search.py", "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_final_state(out), expected)
