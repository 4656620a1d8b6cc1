"""torchrun with 2 CPU processes (gloo): replicas stay identical, the run folder is written once, resume works."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import REPO
from darts_sr.io import load_checkpoint

TINY_SEARCH = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
    "supernet": {"nodes": 3, "channels": 4},
    "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005},
    "discriminator": {"base_width": 4},
    "optim": {"epochs": 4, "steps_per_epoch": 3, "warmup_epochs": 1},
    "run": {"log_every": 1, "samples": 1},
}
TINY_TRAIN = [
    "--set",
    "data.patch_size=8",
    "--set",
    "data.batch_size=2",
    "--set",
    "data.val_crop=12",
    "--set",
    "pixel_phase.steps=4",
    "--set",
    "gan_phase.steps=2",
    "--set",
    "val_every=2",
    "--set",
    "discriminator.base_width=4",
]


def _torchrun(script, *args, nproc=2):
    """The command line a user types: ``torchrun --standalone --nproc_per_node=N script ...``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(REPO / script),
        *map(str, args),
    ]


def _run(cmd, timeout=600):
    # One thread per process: two processes share this machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _arch(out):
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    return [state["supernet"][k] for k in ("alpha", "beta", "gamma")]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SEARCH))
    return path


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, config):
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = _run(_torchrun("train_search.py", "--config", config, "--out", out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_every_rank_ends_with_identical_architecture(whole_run):
    summary = json.loads((whole_run / "summary.json").read_text())
    # Rank 0 broadcasts its architecture and weights at the end; every rank measures its own difference.
    assert summary["distributed"]["world_size"] == 2
    assert summary["distributed"]["replica_max_abs_diff"] == 0.0
    # The architecture did move (warm-up 1 of 4 epochs), so agreement is not agreement of untouched init.
    alpha = _arch(whole_run)[0]
    assert alpha.abs().max() > 1e-4


def test_the_run_folder_is_written_once(whole_run):
    events = list((whole_run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    log = (whole_run / "run.log").read_text()
    assert log.count("epoch 1:") == 1 and log.count("epoch 4:") == 1
    assert sorted(p.name for p in (whole_run / "history").iterdir()) == [
        f"genotype_epoch_{e:03d}.json" for e in range(1, 5)
    ]
    assert not list(whole_run.rglob("*.tmp*"))


def test_kill_9_then_resume_under_torchrun_matches(tmp_path, config, whole_run):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _torchrun("train_search.py", "--config", config, "--out", out),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    checkpoint = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            if checkpoint.is_file() and load_checkpoint(checkpoint)["step"] >= 6:
                break
        except Exception:  # a concurrent rename; the next poll reads the complete file
            pass
        time.sleep(0.2)
    else:
        raise AssertionError("no checkpoint in time")
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, at once
    proc.wait()
    assert load_checkpoint(checkpoint)["step"] < 12
    resumed = _run(_torchrun("train_search.py", "--out", out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "genotype_generator.json").read_text() == (whole_run / "genotype_generator.json").read_text()
    for a, b in zip(_arch(out), _arch(whole_run)):
        assert torch.equal(a, b)


def test_train_under_torchrun(tmp_path):
    out = tmp_path / "train"
    result = _run(_torchrun("train.py", "--genotype", "tpsr", "--out", out, *TINY_TRAIN))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "replica_max_abs_diff": 0.0}
    assert summary["steps"] == 6 and summary["models"] == ["model_gan.pt", "model_pixel.pt"]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    # The model a 2-process run writes evaluates like any other.
    evaluate = [sys.executable, str(REPO / "evaluate.py"), "--weights", out / "model_pixel.pt"]
    scored = _run([*evaluate, "--data", "builtin=builtin"])
    assert scored.returncode == 0, scored.stderr[-2000:]
