"""Tiled inference: the same pixels as one whole-image pass, bounded context, clear errors."""

import numpy as np
import pytest
import torch
from torch import nn

from darts_sr.evaluation.inference import FALLBACK_OVERLAP, _cores, op_radius, receptive_radius, upscale_tiled
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node
from darts_sr.nets.networks import Generator
from operations import GENERATOR_OPS

DIL_X3 = GeneratorGenotype((Node("dil_3x3", 0), Node("sep_7x7", 1), Node("skip", 0)), (2, 3), channels=8, scale=3)
WIDE_X2 = GeneratorGenotype((Node("conv_5x5", 0), Node("conv_7x7", 1)), (2,), channels=8, scale=2)


@pytest.fixture(scope="module")
def tpsr() -> Generator:
    torch.manual_seed(0)
    return Generator(TPSR)


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    return torch.rand(1, 3, 75, 61, generator=torch.Generator().manual_seed(1))  # odd sizes, not multiples of tiles


@pytest.fixture(scope="module")
def whole(tpsr, lr) -> torch.Tensor:
    with torch.no_grad():
        return tpsr.eval()(lr)


def test_op_radius_matches_kernels():
    expected = {"conv_3x3": 1, "conv_5x5": 2, "conv_7x7": 3, "sep_3x3": 1, "sep_5x5": 2, "sep_7x7": 3}
    expected |= {"dil_3x3": 2, "skip": 0}
    assert {op: op_radius(op) for op in GENERATOR_OPS} == expected


def test_tpsr_receptive_radius_by_hand():
    # stem 1; deepest path stem -> 1 sep5 (2) -> 2 conv7 (3) -> 3 conv7 (3) -> 5 conv3 (1) -> 6 conv5 (2)
    # -> 7 sep3 (1) = 12 (and -> 4 conv3 -> 8 conv5 -> 9 conv3 = 12 too); two x2 upsampler convs, 1 each.
    assert receptive_radius(TPSR) == 1 + 12 + 2


@pytest.mark.parametrize("genotype", [TPSR, DIL_X3, WIDE_X2], ids=["tpsr", "dil_x3", "wide_x2"])
def test_receptive_radius_is_what_gradients_reach(genotype, one_thread):
    """Backprop from each HR pixel of one LR position: the LR pixels with a gradient lie exactly within the radius."""
    torch.manual_seed(0)
    model = Generator(genotype).eval()
    size, centre = 41, 20
    reach = 0
    for sub in range(genotype.scale):
        x = torch.rand(1, 3, size, size, requires_grad=True)
        pixel = genotype.scale * centre + sub
        model(x)[0, :, pixel, pixel].sum().backward()
        touched = (x.grad[0].abs().sum(0) > 0).nonzero()  # (n, 2) LR positions
        reach = max(reach, int((touched - centre).abs().max()))
    assert reach == receptive_radius(genotype) < centre


def test_tiled_equals_whole_image(tpsr, lr, whole, one_thread):
    tiled = upscale_tiled(tpsr, lr, 4, tile=24)  # overlap from the genotype: 15
    assert tiled.shape == whole.shape == (1, 3, 300, 244)
    assert (tiled - whole).abs().max() < 1e-5  # float rounding only; far below 1/255


@pytest.mark.parametrize("tile, overlap", [(24, 15), (7, 15), (32, 20), (50, 15)])
def test_tiled_equals_whole_for_tiles_and_overlaps_at_least_the_radius(tpsr, lr, whole, tile, overlap, one_thread):
    tiled = upscale_tiled(tpsr, lr, 4, tile=tile, overlap=overlap)
    assert (tiled - whole).abs().max() < 1e-5


def test_too_little_overlap_shows_seams(tpsr, lr, whole, one_thread):
    """The comparison above can fail: context below the radius changes pixels near tile borders."""
    assert (upscale_tiled(tpsr, lr, 4, tile=24, overlap=3) - whole).abs().max() > 1e-3


def test_batches_and_other_scales(one_thread):
    torch.manual_seed(0)
    model = Generator(DIL_X3)
    lr = torch.rand(2, 3, 29, 40)
    with torch.no_grad():
        whole = model(lr)
    tiled = upscale_tiled(model, lr, 3, tile=9)
    assert tiled.shape == (2, 3, 87, 120)
    assert (tiled - whole).abs().max() < 1e-5


@pytest.mark.parametrize("tile", [None, 75, 500])
def test_whole_image_when_no_tile_or_image_fits(tpsr, lr, whole, tile, one_thread):
    assert torch.equal(upscale_tiled(tpsr, lr, 4, tile=tile), whole)


def test_cores_split_evenly_and_cover_the_image():
    for size in range(1, 100):
        for tile in (1, 7, 24, 64):
            cores = _cores(size, tile)
            assert cores[0][0] == 0 and cores[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
            lengths = [end - start for start, end in cores]
            assert max(lengths) <= tile and max(lengths) - min(lengths) <= 1


def test_no_gradient_eval_mode_restored(one_thread):
    torch.manual_seed(0)
    model = Generator(WIDE_X2).train()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append((m.training, torch.is_grad_enabled())))
    out = upscale_tiled(model, torch.rand(1, 3, 20, 20), 2, tile=8)
    assert not out.requires_grad
    assert calls and all(state == (False, False) for state in calls)  # every tile in eval mode, without autograd
    assert model.training


def test_runs_in_the_models_dtype_and_returns_on_the_inputs_device(one_thread):
    torch.manual_seed(0)
    model = Generator(WIDE_X2).double()
    lr = torch.rand(1, 3, 20, 17)
    out = upscale_tiled(model, lr, 2, tile=8)
    assert out.dtype == torch.float64 and out.device == lr.device
    with torch.no_grad():
        assert (out - model(lr.double())).abs().max() < 1e-10


def test_model_without_genotype_uses_fallback_overlap(one_thread):
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    lr = torch.rand(1, 3, 50, 50)
    with torch.no_grad():
        whole = model(lr)
    assert FALLBACK_OVERLAP >= receptive_radius(GeneratorGenotype(tuple(Node("conv_7x7", k) for k in range(10)), (10,)))
    assert (upscale_tiled(model, lr, 2, tile=16) - whole).abs().max() < 1e-5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tile": 0}, "tile must be a positive integer"),
        ({"tile": -8}, "tile must be a positive integer"),
        ({"tile": 16.0}, "tile must be a positive integer"),
        ({"tile": True}, "tile must be a positive integer"),
        ({"overlap": -1}, "overlap must be a non-negative integer"),
        ({"overlap": 2.5}, "overlap must be a non-negative integer"),
        ({"scale": 0}, "scale must be a positive integer"),
        ({"scale": 2}, r"is scale=2 right for it\?"),
        ({"lr": torch.rand(3, 20, 20)}, r"lr must be a float \(B, 3, H, W\) tensor"),
        ({"lr": torch.rand(1, 1, 20, 20)}, r"lr must be a float \(B, 3, H, W\) tensor"),
        ({"lr": torch.zeros(1, 3, 20, 20, dtype=torch.uint8)}, r"lr must be a float"),
        ({"lr": torch.rand(1, 3, 0, 20)}, "lr is empty"),
    ],
)
def test_bad_arguments_raise_clear_errors(tpsr, kwargs, match, one_thread):
    args = {"model": tpsr, "lr": torch.rand(1, 3, 20, 20), "scale": 4, "tile": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        upscale_tiled(**args)


# --- upscale(): the library's one-call inference on uint8 images ------------------------------------------------------


def test_upscale_takes_arrays_files_and_pil_images_and_quantises_as_evaluation(tpsr, tmp_path, one_thread):
    from PIL import Image

    from darts_sr import upscale
    from darts_sr.evaluation.scoring import super_resolve

    image = (np.random.default_rng(0).random((37, 29, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    expected = super_resolve(tpsr, image)  # what evaluate.py scores and --save-images writes
    assert np.array_equal(upscale(tpsr, image), expected)
    assert np.array_equal(upscale(tpsr, tmp_path / "in.png"), expected)
    assert np.array_equal(upscale(tpsr, str(tmp_path / "in.png")), expected)
    assert np.array_equal(upscale(tpsr, Image.open(tmp_path / "in.png")), expected)
    tiled = upscale(tpsr, image, tile=8)
    assert tiled.dtype == np.uint8 and tiled.shape == (4 * 37, 4 * 29, 3)
    assert np.abs(tiled.astype(int) - expected).max() <= 1  # float rounding may move a pixel across a .5 boundary


def test_upscale_needs_a_scale_only_without_a_genotype(one_thread):
    from darts_sr import upscale

    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    image = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="pass scale="):
        upscale(model, image)
    assert upscale(model, image, scale=2).shape == (20, 24, 3)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        upscale(model, image.astype(np.float32), scale=2)
