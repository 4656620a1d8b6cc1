"""ONNX export: ONNX Runtime reproduces the PyTorch Generator at any size; the CLI; bad input."""

import onnx
import pytest
import torch

from conftest import TPSR_DIR, run_cli
from darts_sr.data import load_image, to_tensor
from darts_sr.evaluation.export import METADATA_SCALE, onnx_bytes, read_genotype, run_session, session
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node
from darts_sr.nets.networks import Generator, load_generator

# On the 0-255 output scale (the bar); float32 reordering noise is ~2e-4 for TPSR on Set5.
TOLERANCE_255 = 1e-3


def _max_diff_255(model: Generator, sess, x: torch.Tensor) -> float:
    with torch.no_grad():
        expected = model.eval()(x)
    got = run_session(sess, x)
    s = model.genotype.scale
    assert got.shape == expected.shape == (x.shape[0], 3, x.shape[2] * s, x.shape[3] * s)
    return float((got - expected).abs().max()) * 255


def test_tpsr_onnx_matches_pytorch_on_two_sizes(shared):
    model = load_generator(TPSR_DIR / "weights" / "TPSR_NOGANX4.pt", TPSR)
    data = onnx_bytes(model)
    sess = session(data, threads=1)
    lr = TPSR_DIR / "Set5" / "LR_bicubic" / "X4"
    baby = to_tensor(load_image(lr / "baby.png"))  # (1, 3, 128, 128)
    crops = torch.cat([to_tensor(load_image(lr / name))[:, :, 5:42, 7:60] for name in ("bird.png", "butterfly.png")])
    assert baby.shape[2:] != crops.shape[2:] and crops.shape == (2, 3, 37, 53)
    for x in (baby, crops):
        assert _max_diff_255(model, sess, x) < TOLERANCE_255
    assert read_genotype(data) == TPSR


def _small_genotype(scale: int) -> GeneratorGenotype:
    nodes = (Node("sep_7x7", 0), Node("dil_3x3", 1), Node("skip", 2), Node("conv_3x3", 0), Node("sep_3x3", 4))
    return GeneratorGenotype(nodes=nodes, outputs=(3, 5), channels=8, scale=scale)


@pytest.mark.parametrize("scale", [2, 3])
def test_cli_exports_our_checkpoint(tmp_path, scale):
    genotype = _small_genotype(scale)
    torch.manual_seed(scale)
    model = Generator(genotype).eval()
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "sub" / "g.onnx"
    torch.save({"generator": model.state_dict(), "generator_genotype": genotype.to_dict()}, ckpt)
    result = run_cli("export.py", "--weights", ckpt, "--out", out)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert read_genotype(out) == genotype
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props[METADATA_SCALE] == str(scale)
    sess = session(out, threads=1)
    for shape in ((1, 3, 16, 24), (2, 3, 21, 13)):
        assert _max_diff_255(model, sess, torch.rand(shape)) < TOLERANCE_255
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ckpt.pt", "g.onnx"]  # no temp left


def test_cli_bad_input_names_the_file(tmp_path):
    missing, out = tmp_path / "nope.pt", tmp_path / "m.onnx"
    result = run_cli("export.py", "--weights", missing, "--genotype", "tpsr", "--out", out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1], result.stderr
    assert not out.exists()
