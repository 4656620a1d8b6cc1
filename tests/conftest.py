"""Shared test helpers: paths to ../shared and a CLI runner."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TPSR_DIR = SHARED / "anchors" / "tpsr"

# No test may reach the network: a missing VGG19/AlexNet is refused, not downloaded, in this process and in every
# CLI it starts (tests/test_pretrained.py exercises the download code against local file:// URLs).
os.environ.setdefault("DARTS_SR_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared is part of CI's checkout; its absence is a broken setup, not a reason to skip."""
    assert TPSR_DIR.is_dir(), f"{TPSR_DIR} is missing: tests need ../shared beside the repository"
    return SHARED


def run_cli(script: str, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs an entry point as a user would: a separate Python process in the repository root.

    ``script`` is a file (``evaluate.py``) or a module (``-m darts_sr.experiments.compare``).
    """
    target = script.split() if script.startswith("-m ") else [str(REPO / script)]
    return subprocess.run(
        [sys.executable, *target, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def one_thread():
    """One intra-op thread: for tiny tensors, thread start-up and contention with other processes cost more
    than the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A retraining recipe on the built-in images small enough for a unit test, and a genotype to train with it.
TINY_TRAIN = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
    "pixel_phase": {"steps": 4, "lr": 1e-3},
    "gan_phase": {"steps": 3, "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005}},
    "discriminator": {"base_width": 4},
    "val_every": 2,
    "run": {"log_every": 1},
}


def small_genotype():
    from darts_sr.nets.genotype import GeneratorGenotype, Node

    return GeneratorGenotype((Node("conv_3x3", 0), Node("sep_3x3", 1)), (2,), channels=4, scale=4)


def write_tiny_train_yaml(path: Path, **sections) -> Path:
    """TINY_TRAIN with some sections' keys replaced, as a YAML file."""
    import yaml

    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_TRAIN.items()}
    for section, values in sections.items():
        data[section] = values if not isinstance(values, dict) else {**data.get(section, {}), **values}
    path.write_text(yaml.safe_dump(data))
    return path


def write_latency_table(
    path: Path,
    op_ms: dict[str, float],
    stem_ms: float,
    upsampler_ms: float,
    output_ms: tuple[float, ...],
    sizes: tuple[tuple[int, int], ...],
    channels: tuple[int, ...] = (4,),
    correction: dict | None = None,
) -> Path:
    """A x4 latency table as ``darts-sr latency-table`` writes it, by hand: the same ms at every channel count in
    ``channels`` and every LR size in ``sizes``."""
    import json

    shapes = [(c, h, w) for c in channels for h, w in sizes]
    rows = lambda name, value: [  # noqa: E731
        {"channels": c, "lr_height": h, "lr_width": w, name: value} for c, h, w in shapes
    ]
    data = {
        "kind": "latency_table",
        "format": 1,
        "scale": 4,
        "provenance": {
            "backend": "eager",
            "threads": 1,
            "device": "cpu",
            "repeats": 1,
            "warmup": 0,
            "torch_version": "hand-made",
            "onnxruntime_version": None,
            "cpu_model": "none",
            "cpu_cores": 1,
            "gpu": None,
            "platform": "test",
            "python_version": "3",
            "load_before": [0.0, 0.0, 0.0],
            "load_after": [0.0, 0.0, 0.0],
            "date": "2024-01-01T00:00:00+00:00",
        },
        "ops": [
            {"op": op, "channels": c, "lr_height": h, "lr_width": w, "ms": ms}
            for op, ms in op_ms.items()
            for c, h, w in shapes
        ],
        "stem": rows("ms", stem_ms),
        "upsampler": rows("ms", upsampler_ms),
        "output": rows("ms_by_outputs", list(output_ms)),
        "correction": correction,
        "validation": None,
    }
    path.write_text(json.dumps(data, indent=2))
    return path


def set_one_hot(net, nodes, outputs, c: float = 1e4) -> None:
    """One-hot architecture parameters of a ``GeneratorSupernet`` for an unpruned node list (dead nodes allowed)."""
    import torch

    with torch.no_grad():
        net.alpha.zero_()
        net.beta.zero_()
        net.gamma.fill_(-c)
        for k, node in enumerate(nodes):
            net.alpha[k, net.op_names.index(node.op)] = c
            net.beta[k, node.input] = c
        for o in outputs:
            net.gamma[o - 1] = c
