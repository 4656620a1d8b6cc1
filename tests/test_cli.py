"""`darts-sr`: every subcommand answers --help, a bad device or input is one `error:` line, and `darts-sr upscale`
writes exactly what `evaluate.py --save-images` writes."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, TPSR_DIR, run_cli
from darts_sr.commands import COMMANDS
from darts_sr.commands import main as darts_sr

WEIGHTS = TPSR_DIR / "weights" / "TPSR_NOGANX4.pt"
SET5_LR = TPSR_DIR / "Set5" / "LR_bicubic" / "X4"
# A device no machine has: without CUDA "not available", with it "this machine has N CUDA device(s)".
NO_SUCH_DEVICE = "cuda:99"


def _one_error_line(stderr: str, *fragments: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _last_error_line(stderr: str, *fragments: str) -> str:
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in stderr, stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# --- help ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        darts_sr([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: darts-sr {command} ") and "--" in out


def test_top_level_help_version_and_unknown_command(capsys):
    assert darts_sr(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)
    assert darts_sr(["--version"]) == 0
    assert capsys.readouterr().out.startswith("darts-sr 0.")
    assert darts_sr(["upscal"]) == 2
    _last_error_line(capsys.readouterr().err, "unknown command 'upscal'")
    assert darts_sr([]) == 2


def test_console_script_and_module_answer_help():
    """The installed `darts-sr` (scripts/ensure_venv.sh installs the package editable) and `python -m darts_sr`."""
    script = Path(sys.executable).parent / "darts-sr"
    assert script.is_file(), f"{script} missing: install the package (pip install -e .[dev,export])"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "upscale" in result.stdout, result.stderr
    result = run_cli("-m darts_sr", "upscale", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: darts-sr upscale"), result.stderr


# --- devices -------------------------------------------------------------------------------------------------------


def test_missing_device_is_one_error_line(shared, tmp_path):
    """As a user meets it: a separate process, nothing but one line on stderr, status 2, nothing written."""
    out = tmp_path / "sr.png"
    result = run_cli(
        "-m darts_sr",
        "upscale",
        SET5_LR / "bird.png",
        "-o",
        out,
        "--model",
        "tpsr",
        "--weights",
        WEIGHTS,
        "--device",
        NO_SUCH_DEVICE,
    )
    assert result.returncode == 2
    _one_error_line(result.stderr, f"--device {NO_SUCH_DEVICE}")
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--genotype", "tpsr", "--weights", str(WEIGHTS), "--data", "S=builtin"],
        ["search", "--out", "{tmp}/run"],
        ["train", "--genotype", "tpsr", "--out", "{tmp}/run"],
        ["compare", "--searched", "tpsr", "--config", "compare_cpu", "--out", "{tmp}/run"],
    ],
    ids=["evaluate", "search", "train", "compare"],
)
@pytest.mark.parametrize("device", [NO_SUCH_DEVICE, "gpu"])
def test_every_command_refuses_a_missing_device_before_any_work(argv, device, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert darts_sr([*argv, "--device", device]) == 2
    _last_error_line(capsys.readouterr().err, f"--device {device!r}" if device == "gpu" else f"--device {device}")
    assert not (tmp_path / "run").exists()


def test_auto_device_is_resolved():
    from darts_sr.cli import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


# --- presets -------------------------------------------------------------------------------------------------------


def test_config_presets_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    from darts_sr.cli import preset_names, resolve_config
    from darts_sr.config import ConfigError

    assert {p.stem for p in (REPO / "configs").glob("*.yaml")} <= set(preset_names())
    monkeypatch.chdir(tmp_path)
    for spec in ("demo", "demo.yaml", "configs/demo.yaml"):
        assert resolve_config(spec).read_text() == (REPO / "configs" / "demo.yaml").read_text()
    (tmp_path / "demo").write_text("optim: {epochs: 1}\n")  # a file given by path wins over the preset
    assert resolve_config("demo") == Path("demo")
    with pytest.raises(ConfigError, match="no such config file or preset.*div2k_x4"):
        resolve_config("nope")


# --- upscale -------------------------------------------------------------------------------------------------------


def test_upscale_output_equals_evaluate_save_images(shared, tmp_path):
    """The issue's acceptance check: one Set5 LR file through `darts-sr upscale` and through evaluate.py."""
    lr = tmp_path / "lr"
    lr.mkdir()
    shutil.copy(SET5_LR / "bird.png", lr / "bird.png")
    saved = tmp_path / "saved"
    result = run_cli(
        "evaluate.py", "--genotype", "tpsr", "--weights", WEIGHTS, "--data", f"mine=lr:{lr}", "--save-images", saved
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "bird_x4.png"
    result = run_cli("-m darts_sr", "upscale", lr / "bird.png", "-o", out, "--model", "tpsr", "--weights", WEIGHTS)
    assert result.returncode == 0, result.stderr
    assert "wrote 1 image(s)" in result.stdout
    assert out.read_bytes() == (saved / "mine" / "bird.png").read_bytes()


def test_upscale_folders_files_tiles_and_our_checkpoints(shared, tmp_path, capsys, one_thread):
    from darts_sr.evaluation.scoring import super_resolve
    from darts_sr.nets.networks import CHECKPOINT_GENERATOR_KEY, CHECKPOINT_GENOTYPE_KEY, load_generator

    model = load_generator(WEIGHTS, "tpsr").eval()
    ckpt = tmp_path / "ours.pt"  # our checkpoint format: it carries its genotype, so --model alone is enough
    torch.save({CHECKPOINT_GENERATOR_KEY: model.state_dict(), CHECKPOINT_GENOTYPE_KEY: model.genotype.to_dict()}, ckpt)
    extra = tmp_path / "extra" / "small.bmp"
    extra.parent.mkdir()
    Image.open(SET5_LR / "head.png").save(extra)
    out = tmp_path / "sr"
    assert darts_sr(["upscale", str(SET5_LR), str(extra), "-o", str(out), "--model", str(ckpt), "--tile", "24"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["baby.png", "bird.png", "butterfly.png", "head.png", "small.png", "woman.png"]
    for name in ("bird", "head"):
        whole = super_resolve(model, np.asarray(Image.open(SET5_LR / f"{name}.png")))
        tiled = np.asarray(Image.open(out / f"{name}.png"))
        assert tiled.shape == whole.shape and np.abs(tiled.astype(int) - whole).max() <= 1  # within 1/255
    assert np.array_equal(np.asarray(Image.open(out / "small.png")), np.asarray(Image.open(out / "head.png")))
    jpg = tmp_path / "bird.jpg"
    assert darts_sr(["upscale", str(SET5_LR / "bird.png"), "-o", str(jpg), "--model", str(ckpt), "--tile", "0"]) == 0
    assert Image.open(jpg).format == "JPEG" and Image.open(jpg).size == (4 * 72, 4 * 72)


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("missing", ["nothere.png", "no such file or folder"]),
        ("unreadable", ["broken.png", "cannot read image"]),
        ("empty_folder", ["empty", "no images"]),
        ("many_to_one_file", ["one output file for 2 images"]),
        ("genotype_without_weights", ["--model tpsr is a genotype", "--weights"]),
        ("bare_state_dict_without_genotype", ["TPSR_NOGANX4.pt", "carries no genotype"]),
    ],
)
def test_upscale_bad_inputs_are_one_error_line(case, fragments, shared, tmp_path, capsys):
    good = str(SET5_LR / "bird.png")
    model = ["--model", "tpsr", "--weights", str(WEIGHTS)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "empty").mkdir()
    argv = {
        "missing": [str(tmp_path / "nothere.png"), "-o", str(tmp_path / "o"), *model],
        "unreadable": [str(broken), "-o", str(tmp_path / "o"), *model],
        "empty_folder": [str(tmp_path / "empty"), "-o", str(tmp_path / "o"), *model],
        "many_to_one_file": [good, str(SET5_LR / "head.png"), "-o", str(tmp_path / "o.png"), *model],
        "genotype_without_weights": [good, "-o", str(tmp_path / "o"), "--model", "tpsr"],
        "bare_state_dict_without_genotype": [good, "-o", str(tmp_path / "o"), "--model", str(WEIGHTS)],
    }[case]
    assert darts_sr(["upscale", *argv]) == 2
    _last_error_line(capsys.readouterr().err, *fragments)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()
