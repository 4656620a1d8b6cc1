"""evaluate.py end to end: TPSR's published figures through our Generator, and bad input."""

import json
import shutil

import pytest
import torch

from conftest import TPSR_DIR, run_cli
from darts_sr.nets.genotype import TPSR
from darts_sr.nets.networks import Generator

# Published Set5 x4 Y-PSNR (docs/ARCHITECTURE.md, "The reference point") and Set14 where given.
PUBLISHED = {
    "TPSR_NOGANX4.pt": {"Set5": 31.10, "Set14": 27.95},
    "TPSR_D2X4.pt": {"Set5": 29.60, "Set14": 26.88},
    "TPSR_ESRGANX4.pt": {"Set5": 29.51},
}


@pytest.mark.parametrize("weights", sorted(PUBLISHED))
def test_published_tpsr_figures_are_reproduced(shared, tmp_path, weights):
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate.py",
        "--genotype",
        "tpsr",
        "--weights",
        TPSR_DIR / "weights" / weights,
        "--data",
        f"Set5={TPSR_DIR / 'Set5'}",
        "--data",
        f"Set14={shared / 'datasets' / 'Set14'}",
        "--json",
        out,
    )
    assert result.returncode == 0, result.stderr
    records = {r["dataset"]: r for r in json.loads(out.read_text())}
    for dataset, psnr in PUBLISHED[weights].items():
        assert records[dataset]["psnr_y"] == pytest.approx(psnr, abs=0.01)
    for r in records.values():
        assert r["params"] == 61_097
        assert abs(r["macs_720p"] / 3.57e9 - 1) < 0.01
        assert set(r) == {"model", "dataset", "images", "psnr_y", "ssim_y", "lpips", "niqe", "params", "macs_720p"}
        assert r["model"] == weights.removesuffix(".pt") and r["niqe"] > 0
    assert records["Set5"]["images"] == 5 and records["Set14"]["images"] == 14
    assert f"{PUBLISHED[weights]['Set5']:.2f}" in result.stdout


def test_synthesized_lr_agrees(shared, tmp_path):
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate.py",
        "--genotype",
        "tpsr",
        "--weights",
        TPSR_DIR / "weights" / "TPSR_NOGANX4.pt",
        "--data",
        f"Set5={TPSR_DIR / 'Set5'}",
        "--synthesize-lr",
        "--json",
        out,
        "--save-images",
        tmp_path / "sr",
    )
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(out.read_text())
    assert record["psnr_y"] == pytest.approx(31.10, abs=0.05)
    assert len(list((tmp_path / "sr" / "Set5").glob("*.png"))) == 5


def test_lpips_is_na_without_imagenet_weights(shared, tmp_path):
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate.py",
        "--genotype",
        "tpsr",
        "--weights",
        TPSR_DIR / "weights" / "TPSR_NOGANX4.pt",
        "--data",
        f"Set5={TPSR_DIR / 'Set5'}",
        "--json",
        out,
        "--pretrained-dir",
        tmp_path / "empty",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())[0]["lpips"] is None
    # One line says why, naming the file; not one line per caller.
    assert result.stderr.count("LPIPS") == 1 and "alexnet-owt-7be5be79.pth" in result.stderr


def test_lr_only_folder_is_upscaled(shared, tmp_path):
    lr_dir = tmp_path / "lr"
    shutil.copytree(TPSR_DIR / "Set5" / "LR_bicubic" / "X4", lr_dir)
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate.py",
        "--genotype",
        "tpsr",
        "--weights",
        TPSR_DIR / "weights" / "TPSR_NOGANX4.pt",
        "--data",
        f"mine=lr:{lr_dir}",
        "--save-images",
        tmp_path / "sr",
        "--json",
        out,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())[0]
    assert record["psnr_y"] is None and record["niqe"] > 0  # NIQE needs no ground truth
    assert len(list((tmp_path / "sr" / "mine").glob("*.png"))) == 5


def test_reference_rows_and_offline_flag(shared, tmp_path):
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate.py",
        "--genotype",
        "tpsr",
        "--weights",
        TPSR_DIR / "weights" / "TPSR_NOGANX4.pt",
        "--data",
        f"Set5={TPSR_DIR / 'Set5'}",
        "--references",
        "--offline",
        "--json",
        out,
        env={"DARTS_SR_OFFLINE": "0"},  # the flag alone must keep it offline
    )
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"TPSR_NOGANX4", "bicubic", "HR"}
    assert rows["bicubic"]["psnr_y"] == pytest.approx(28.43, abs=0.01)  # published bicubic figure
    assert rows["HR"]["psnr_y"] == float("inf") and rows["HR"]["niqe"] > 0
    assert "downloads are off" in result.stderr


def _set5_copy(tmp_path):
    root = tmp_path / "Set5"
    shutil.copytree(TPSR_DIR / "Set5", root)
    return root


def _fails(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def _evaluate(*args):
    return run_cli("evaluate.py", "--weights", TPSR_DIR / "weights" / "TPSR_NOGANX4.pt", *args)


def test_bad_input_unreadable_image(shared, tmp_path):
    root = _set5_copy(tmp_path)
    (root / "HR" / "baby.png").write_bytes(b"not a png")
    _fails(_evaluate("--genotype", "tpsr", "--data", f"S={root}"), "baby.png")


def test_bad_input_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(_evaluate("--genotype", "tpsr", "--data", f"S={tmp_path / 'empty'}"), "empty")


def test_bad_input_lr_hr_size_mismatch(shared, tmp_path):
    root = _set5_copy(tmp_path)
    shutil.copy(root / "LR_bicubic" / "X4" / "bird.png", root / "LR_bicubic" / "X4" / "baby.png")
    _fails(_evaluate("--genotype", "tpsr", "--data", f"S={root}"), "baby.png")


def test_bad_input_genotype_json(tmp_path):
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps(TPSR.to_dict() | {"nodes": [{"op": "conv_11x11", "input": 0}], "outputs": [1]}))
    _fails(_evaluate("--genotype", bad, "--data", "S=builtin"), "g.json", "conv_11x11")


def test_bad_input_weights_do_not_fit(tmp_path):
    small = {"nodes": [{"op": "conv_3x3", "input": 0}], "outputs": [1], "channels": 16, "scale": 4}
    geno = tmp_path / "small.json"
    geno.write_text(json.dumps(small))
    _fails(_evaluate("--genotype", geno, "--data", "S=builtin"), "TPSR_NOGANX4.pt")
    ours = tmp_path / "ours.pt"
    torch.save(Generator(TPSR).state_dict(), ours)
    _fails(run_cli("evaluate.py", "--genotype", geno, "--weights", ours, "--data", "S=builtin"), "ours.pt", "missing")


def test_bad_input_data_spec_and_pickled_code(tmp_path):
    _fails(_evaluate("--genotype", "tpsr", "--data", "builtin"), "NAME=PATH")
    evil = tmp_path / "evil.pt"
    torch.save({"f": print}, evil)  # unpickling would need code (a builtin function), not just tensors
    _fails(run_cli("evaluate.py", "--genotype", "tpsr", "--weights", evil, "--data", "S=builtin"), "evil.pt", "refused")


def test_a_new_metric_is_one_table_entry_plus_its_function(monkeypatch):
    """A toy metric added to METRICS shows up in the scores, the JSON record and both tables."""
    import numpy as np

    from darts_sr.data import ImagePair
    from darts_sr.evaluation.metrics import METRICS, MetricSpec
    from darts_sr.evaluation.scoring import evaluate_pairs, format_table
    from darts_sr.experiments.compare import markdown_table

    def mean_abs_error(sr, gt, border):
        return float(np.abs(sr.astype(float) - gt).mean())

    monkeypatch.setitem(METRICS, "mae", MetricSpec("MAE", 3, True, True, lambda settings: mean_abs_error))
    gt = np.full((8, 8, 3), 100, np.uint8)
    pairs = [ImagePair("flat", gt[::2, ::2].copy(), gt), ImagePair("no_gt", gt[::2, ::2].copy(), None)]
    model = torch.nn.Upsample(scale_factor=2, mode="nearest")
    score = evaluate_pairs(model, pairs, "toy", 2, {"mae": mean_abs_error, "psnr_y": None})
    assert score["mae"] == pytest.approx(0.0, abs=1e-6) and score["psnr_y"] is None and score.images == 2
    record = score.record() | {"params": 0, "macs_720p": 0}
    assert "MAE" in format_table([record]) and "0.000" in format_table([record])
    row = {"model": "m", "phase": "-", "params": 0, "macs_720p": 0, "scores": {"toy": score.record()}}
    assert "toy MAE" in markdown_table([row], ["toy"])
