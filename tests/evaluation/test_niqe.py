"""Tests for evaluation/niqe.py: MATLAB's published figure on Set14 baboon, the shipped pristine model, properties.

The anchor is MATLAB R2021a's ``niqe`` on baboon's Y channel (../shared/anchors/niqe/README.md); the rest checks
properties (blur scores worse, cropping moves the region, bad input is refused) and that the vectorised pieces
equal a direct transcription of the MATLAB code.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import gamma
from skimage import data as skdata

from darts_sr.evaluation import niqe as niqe_module
from darts_sr.evaluation.niqe import BLOCK_SIZE, niqe, niqe_features, niqe_y, pristine_model, y_channel_uint8

SHARED = Path(__file__).resolve().parents[3] / "shared"
BABOON = SHARED / "datasets" / "Set14" / "HR" / "baboon.png"
ANCHOR_PARAMS = SHARED / "anchors" / "niqe" / "niqe_pris_params.npz"
PARAMS_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
MATLAB_BABOON = 5.72957338  # MATLAB R2021a niqe, Y channel, whole image (reported as 5.7296)


def _need_shared(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is missing: the MATLAB anchor needs ../shared beside the repository")
    return path


@pytest.fixture(scope="module")
def baboon() -> np.ndarray:
    return np.asarray(Image.open(_need_shared(BABOON)).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A natural photograph bundled with scikit-image (512x512 RGB uint8): works without ../shared."""
    return skdata.astronaut()


# --- the MATLAB anchor ----------------------------------------------------------------------------------------


def test_baboon_matches_matlab(baboon: np.ndarray) -> None:
    assert baboon.shape == (480, 500, 3)
    assert abs(niqe(baboon) - MATLAB_BABOON) < 1e-3


# --- the pristine model ---------------------------------------------------------------------------------------


def test_packaged_model_is_the_anchor_copy() -> None:
    packaged = Path(niqe_module.__file__).parents[1] / "assets" / "niqe_pris_params.npz"
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == PARAMS_SHA256
    if ANCHOR_PARAMS.is_file():
        assert packaged.read_bytes() == ANCHOR_PARAMS.read_bytes()


def test_pristine_model_shapes_and_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # importlib.resources, not a path relative to the checkout
    pristine_model.cache_clear()
    model = pristine_model()
    assert model.mean.shape == (36,) and model.cov.shape == (36, 36) and model.window.shape == (7, 7)
    np.testing.assert_allclose(model.cov, model.cov.T)
    # MATLAB fspecial('gaussian', 7, 7/6), normalised.
    x = np.arange(-3, 4)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    np.testing.assert_allclose(model.window, g / g.sum(), rtol=1e-6)
    with pytest.raises(ValueError):
        model.mean[0] = 0.0  # the cached model is read-only


# --- vectorised pieces against a direct transcription of the MATLAB code ---------------------------------------


def _matlab_aggd(vec: np.ndarray) -> tuple[float, float, float]:
    """estimateaggdparam.m, line by line (brute-force argmin over the grid)."""
    gam = 0.2 + 0.001 * np.arange(9801)
    r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))
    left = np.sqrt(np.mean(vec[vec < 0] ** 2))
    right = np.sqrt(np.mean(vec[vec > 0] ** 2))
    g = left / right
    rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
    rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = gam[np.argmin((r_gam - rnorm) ** 2)]
    f = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * f, right * f


def test_ratio_grid_is_strictly_increasing() -> None:
    """The lookup's bisection relies on it."""
    assert np.all(np.diff(niqe_module._RATIO_GRID) > 0)


def test_grid_lookup_equals_brute_force_argmin() -> None:
    grid = niqe_module._RATIO_GRID
    rng = np.random.default_rng(0)
    ratios = np.concatenate(
        [
            rng.uniform(0.0, 1.0, 5000),  # includes values beyond both ends of the grid
            grid[rng.integers(0, len(grid), 200)],  # exactly on grid points
            (grid[:-1] + grid[1:])[:200] / 2,  # midpoints
            [np.nan, 0.0, grid[0], grid[-1], 2.0],
        ]
    )
    expected = np.argmin((grid[None, :] - ratios[:, None]) ** 2, axis=1)  # NaN rows: index 0, as MATLAB's min
    np.testing.assert_array_equal(niqe_module._grid_index(ratios), expected)


def test_aggd_fit_equals_matlab_transcription() -> None:
    rng = np.random.default_rng(1)
    rows = np.stack([rng.laplace(size=500), rng.normal(size=500) * 2 - 0.3, rng.standard_t(3, size=500)])
    alpha, left, right = niqe_module._aggd_fit(rows)
    for k, row in enumerate(rows):
        np.testing.assert_allclose((alpha[k], left[k], right[k]), _matlab_aggd(row), rtol=1e-12)


@pytest.mark.parametrize("shape", [1.0, 2.0])
def test_aggd_recovers_the_shape_of_a_generalised_gaussian(shape: float) -> None:
    """Laplace (shape 1) and Gaussian (shape 2) samples: the moment-matched shape lands near the truth."""
    rng = np.random.default_rng(2)
    x = rng.laplace(size=200_000) if shape == 1.0 else rng.normal(size=200_000)
    alpha, left, right = niqe_module._aggd_fit(x[None, :])
    assert abs(alpha[0] - shape) < 0.05
    assert abs(left[0] / right[0] - 1) < 0.02  # symmetric


def test_features_have_36_columns_one_row_per_block(astronaut: np.ndarray) -> None:
    feats = niqe_features(y_channel_uint8(astronaut))
    assert feats.shape == ((512 // BLOCK_SIZE) ** 2, 36)
    assert np.isfinite(feats).all()


# --- luma -----------------------------------------------------------------------------------------------------


def test_luma_is_rgb_to_y_rounded() -> None:
    from darts_sr.evaluation.metrics import rgb_to_y

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    y = y_channel_uint8(img)
    assert y.dtype == np.uint8 and y.shape == (64, 64)
    assert np.abs(y.astype(np.float64) - rgb_to_y(img)).max() <= 0.5
    corners = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(y_channel_uint8(corners), [[16, 235]])


# --- properties -----------------------------------------------------------------------------------------------


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    out = gaussian_filter(img.astype(np.float64), sigma=(sigma, sigma, 0))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_blur_scores_worse(astronaut: np.ndarray) -> None:
    sharp = niqe(astronaut)
    assert 2.0 < sharp < 10.0
    assert niqe(_blur(astronaut, 1.5)) > sharp + 1.0
    assert niqe(_blur(astronaut, 3.0)) > niqe(_blur(astronaut, 1.5))


def test_border_crops_the_region(astronaut: np.ndarray) -> None:
    border = 4
    cropped = niqe(astronaut, border=border)
    assert cropped == niqe(astronaut[border:-border, border:-border])
    assert cropped != niqe(astronaut)  # the 96x96 block grid moved


def test_only_whole_blocks_count(astronaut: np.ndarray) -> None:
    """Pixels beyond the last whole block (bottom and right) do not change the score."""
    img = astronaut[:480, :480].copy()
    padded = np.concatenate([img, np.zeros((50, 480, 3), np.uint8)], axis=0)
    assert niqe(padded) == niqe(img)


def test_flat_image_is_nan() -> None:
    """No texture, no statistics: NaN, as MATLAB gives, rather than an error mid-evaluation."""
    assert math.isnan(niqe(np.full((192, 192, 3), 128, np.uint8)))


def test_non_uint8_is_refused(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\).*float32"):
        niqe(astronaut.astype(np.float32))
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        niqe(astronaut[..., 0])  # greyscale 2-D
    with pytest.raises(ValueError, match="list"):
        niqe([[[0, 0, 0]]])  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(95, 500), (96, 96), (191, 191)])
def test_too_small_is_refused(shape: tuple[int, int]) -> None:
    img = np.random.default_rng(4).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"too small for NIQE: {shape[0]}x{shape[1]}.*at least 2"):
        niqe(img)


def test_border_too_large_for_blocks_is_refused(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="too small for NIQE: 172x172"):
        niqe(astronaut, border=170)
    with pytest.raises(ValueError, match="border must be >= 0, got -1"):
        niqe(astronaut, border=-1)
    with pytest.raises(ValueError, match="leaves nothing"):
        niqe(astronaut, border=256)


def test_niqe_y_takes_luma_directly(astronaut: np.ndarray) -> None:
    assert niqe_y(y_channel_uint8(astronaut)) == niqe(astronaut)
    with pytest.raises(ValueError, match="2-D"):
        niqe_y(astronaut)
