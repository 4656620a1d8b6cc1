"""Crops of several generators' outputs: the window where texture is, the HR column exact, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from darts_sr.evaluation import crops
from darts_sr.nets.genotype import GeneratorGenotype, Node
from darts_sr.nets.networks import Generator

TINY = GeneratorGenotype((Node("conv_3x3", 0), Node("conv_3x3", 1)), (2,), channels=4, scale=2)


def flat_with_texture(corner: tuple[int, int], size: int = 16) -> np.ndarray:
    """A mid-grey 64x80 image with one size-px patch of noise at ``corner``."""
    img = np.full((64, 80, 3), 128, dtype=np.uint8)
    y, x = corner
    rng = np.random.default_rng(0)
    img[y : y + size, x : x + size] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return img


def test_the_default_window_is_where_the_texture_is():
    assert crops.most_textured_box(flat_with_texture((20, 44)), 16) == (20, 44)
    assert crops.most_textured_box(flat_with_texture((0, 0)), 16) == (0, 0)


def test_grid_columns_hr_exact_then_bicubic_then_models(one_thread):
    torch.manual_seed(0)
    hr = flat_with_texture((20, 44))
    models = [("a", Generator(TINY).eval()), ("b", Generator(TINY).eval())]
    grid = crops.crop_grid([("img", hr)], models, scale=2, size=16, zoom=2)
    cell = 16 * 2
    assert grid.shape == (cell + crops.LABEL_HEIGHT + crops.GAP, 4 * (cell + crops.GAP), 3)
    top = crops.LABEL_HEIGHT
    hr_cell = grid[top : top + cell, :cell]
    assert np.array_equal(hr_cell, hr[20:36, 44:60].repeat(2, 0).repeat(2, 1))
    bicubic_cell = grid[top : top + cell, cell + crops.GAP : 2 * cell + crops.GAP]
    assert not np.array_equal(bicubic_cell, hr_cell)


def test_cli_writes_the_grid_and_refuses_a_box_outside(tmp_path, one_thread, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(Generator(TINY).state_dict(), weights)
    genotype = tmp_path / "tiny.json"
    genotype.write_text(__import__("json").dumps(TINY.to_dict()))
    image = tmp_path / "img.png"
    Image.fromarray(flat_with_texture((8, 8))).save(image)
    out = tmp_path / "grid.png"
    common = [str(image), "--model", f"tiny={weights}", "--genotype", str(genotype), "--size", "16"]
    assert crops.main([*common, "-o", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape[1] == 3 * (32 + crops.GAP)
    assert crops.main([*common, "--box", "60,0", "-o", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: img: box 60,0") and not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("spec", ["nolabel", "=path", "label="])
def test_a_model_needs_a_label_and_weights(spec):
    with pytest.raises(SystemExit):
        crops.parse_args(["x.png", "--model", spec, "-o", "o.png"])
