"""The installable package: what the wheel holds, the library API, and README's library example."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import numpy as np

from conftest import REPO, SHARED, TPSR_DIR

# The README's library example, line for line (README.md must show exactly these lines; see the last test).
EXAMPLE = """\
from darts_sr import load_generator, upscale
from PIL import Image

model = load_generator("../shared/anchors/tpsr/weights/TPSR_NOGANX4.pt", "tpsr")  # our checkpoints need no "tpsr"
sr = upscale(model, "../shared/anchors/tpsr/Set5/LR_bicubic/X4/bird.png", tile=256)  # uint8 (H, W, 3)
Image.fromarray(sr).save("bird_x4.png")
"""


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_on_disk_is_listed_in_pyproject():
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for root in ("darts_sr", "operations")
        for p in (REPO / root).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"
    assert setuptools["package-dir"]["darts_sr.configs"] == "configs"  # the presets ship inside the package


def test_version_is_the_installed_distributions():
    import darts_sr

    assert darts_sr.__version__ == importlib.metadata.version("darts_sr")
    entry = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert entry["darts-sr"] == "darts_sr.commands:main"


def test_wheel_holds_code_presets_and_assets(tmp_path):
    """`pip wheel .` as a user runs it (with this environment's setuptools, so offline and quick), on a copy of the
    sources: a build writes build/ and *.egg-info beside them."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    for folder in ("darts_sr", "operations", "configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = tmp_path.glob("darts_sr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {f"darts_sr/configs/{p.name}" for p in (REPO / "configs").glob("*.yaml")}
    code = {f"{p.relative_to(REPO)}" for root in ("darts_sr", "operations") for p in (REPO / root).rglob("*.py")}
    assert presets and presets <= names
    assert code <= names, sorted(code - names)
    assert {"darts_sr/assets/niqe_pris_params.npz", "darts_sr/assets/README.md"} <= names
    assert not any(n.startswith(("tests/", "configs/", "runs/")) or n in ("train.py", "evaluate.py") for n in names)


def test_load_generator_takes_a_builtin_genotype_name(shared):
    from darts_sr import Generator, load_generator
    from darts_sr.nets.genotype import TPSR

    model = load_generator(TPSR_DIR / "weights" / "TPSR_NOGANX4.pt", "tpsr")
    assert isinstance(model, Generator) and model.genotype == TPSR
    same = load_generator(TPSR_DIR / "weights" / "TPSR_NOGANX4.pt", TPSR)
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), same.state_dict().values()))


def test_library_example_runs(shared, tmp_path):
    """EXAMPLE as a user runs it: from a folder beside ../shared, in a fresh interpreter."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", EXAMPLE], cwd=work, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    sr = np.asarray(Image.open(work / "bird_x4.png"))
    assert sr.shape == (288, 288, 3) and sr.dtype == np.uint8
    hr = np.asarray(Image.open(TPSR_DIR / "Set5" / "HR" / "bird.png").convert("RGB"))
    assert np.abs(sr.astype(float) - hr).mean() < 10  # a super-resolved bird, not noise


def test_readme_shows_the_tested_example():
    assert EXAMPLE in (REPO / "README.md").read_text()


LAYERS = ("base", "nets", "evaluation", "training", "search", "experiments", "commands")  # bottom up


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[1:] in (["__init__"], ["__main__"]):  # the package's facade (lazy library API) and `python -m darts_sr`
        return len(LAYERS)
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else 0


def test_no_layer_imports_a_layer_above_it():
    """docs/ARCHITECTURE.md's rule, read from the code: a module's darts_sr imports (at any depth of the file) come
    from its own layer or those below; base modules import only base modules."""
    import ast

    root = REPO / "darts_sr"
    upward = []
    for path in sorted(root.rglob("*.py")):
        module = "darts_sr." + ".".join(path.relative_to(root).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("darts_sr"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("darts_sr")]
            for name in names:
                if _layer(name) > _layer(module):
                    upward.append(f"{module} imports {name}")
    assert not upward, upward
    assert _layer("darts_sr.search.race") > _layer("darts_sr.training.trials") > _layer("darts_sr.config")
