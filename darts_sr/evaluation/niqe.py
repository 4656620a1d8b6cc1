"""NIQE, the no-reference "Naturalness Image Quality Evaluator" (Mittal, Soundararajan, Bovik 2013), MATLAB-compatible.

Input: a uint8 ``(H, W, 3)`` RGB array in 0-255 -- the clamped and rounded SR output, as for PSNR in
:mod:`darts_sr.evaluation.metrics` -- and ``border`` pixels cropped on every side (the scale factor, usually; 0 = none).
Output: a float, lower is better; blind to fidelity, so read it beside PSNR. NaN when the image has too little
texture for the statistics (e.g. a constant image), as in MATLAB.

The pipeline is the authors' MATLAB code (``computequality.m``): luma; crop to a whole number of 96x96 blocks
(top-left, no overlap); at two scales (the image, then MATLAB ``imresize(im, 0.5)``) MSCN coefficients with a
7x7 Gaussian window (sigma 7/6), and per block 18 features from asymmetric-generalised-Gaussian (AGGD) fits to
the coefficients and to their products with 4 neighbours; then the distance between the blocks' mean feature
vector and the pristine model's, under the average of the two covariances (pseudo-inverse).

MATLAB-compatibility choices (together they reproduce MATLAB R2021a's 5.72957338 on Set14 ``baboon`` to 3e-6):

- Luma is ``rgb2ycbcr``'s Y of the uint8 image, i.e. Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255
  (the BT.601 Y of ``metrics.rgb_to_y``) ROUNDED to an integer, because ``rgb2ycbcr`` returns uint8 for uint8
  input. Not rounding gives 5.6359; MATLAB ``niqe``'s own ``rgb2gray`` on the RGB image gives 5.7496: the
  reference figure is the Y-channel one (as in BasicSR and the PIRM 2018 perceptual index). The sum is taken in
  float64 and rounded half away from zero, as ``imlincomb`` does (float32 would flip 144 of the 2^24 colours
  that sit within float32 noise of a .5 tie).
- From there everything image-sized is float32, because MATLAB's figures behave like single precision:
  float64 throughout gives 5.72996 on baboon (the anchor's notes report drifts of up to a few tenths on small
  images with flat regions). The Gaussian filtering is ``scipy.ndimage.correlate`` on float32 with the double
  window (``imfilter(..., 'replicate')`` = mode ``nearest``): it accumulates in double and stores float32.
  Pure float32 accumulation (torch ``conv2d``) gives 5.7248, as the local variance E[x^2] - mu^2 cancels
  badly in flat regions; so does separable filtering with a float32 intermediate (5.7244).
- The halving is MATLAB's antialiased bicubic ``imresize``, through the same ``resize_right`` call as
  :func:`darts_sr.data.bicubic_downscale` (symmetric padding), stored as float32.
- The AGGD shape is a lookup in MATLAB's grid ``0.2:0.001:10`` (closest ratio, first on a tie; a NaN ratio
  takes the first entry, as MATLAB's ``min`` does). Neighbour products use ``circshift`` inside each block.
- Mean and covariance over blocks are ``nanmean`` and ``nancov`` (rows with a NaN dropped), inverted with ``pinv``.

The one departure: MATLAB's code silently computes nonsense for a single block (``nanmean`` of one row averages
the features together); here an image needs at least two blocks, or :func:`niqe` raises ``ValueError``.
"""

from __future__ import annotations

import functools
import importlib.resources
import warnings
from dataclasses import dataclass

import numpy as np
from resize_right import resize
from scipy.ndimage import correlate
from scipy.special import gamma

__all__ = ["BLOCK_SIZE", "PristineModel", "niqe", "niqe_features", "niqe_y", "pristine_model", "y_channel_uint8"]

BLOCK_SIZE = 96  # the pristine model was fit on 96x96 patches; the authors recommend the same for test images

# MATLAB's estimateaggdparam.m: shape grid gam = 0.2:0.001:10 and the ratio r(gam) the fit matches.
_GAMMA_GRID = 0.2 + 0.001 * np.arange(9801)
_RATIO_GRID = gamma(2.0 / _GAMMA_GRID) ** 2 / (gamma(1.0 / _GAMMA_GRID) * gamma(3.0 / _GAMMA_GRID))

# computefeature.m's circshift offsets: horizontal, vertical, main-diagonal and anti-diagonal neighbours.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


@dataclass(frozen=True)
class PristineModel:
    """NIQE's pristine multivariate Gaussian: ``mean`` (36,), ``cov`` (36, 36), ``window`` (7, 7), all float64."""

    mean: np.ndarray
    cov: np.ndarray
    window: np.ndarray


@functools.cache
def pristine_model() -> PristineModel:
    """The official pristine model, read from the package data ``darts_sr/assets/niqe_pris_params.npz``.

    Read through importlib.resources so that it works from an installed package, not only from a checkout.
    """
    resource = importlib.resources.files("darts_sr") / "assets" / "niqe_pris_params.npz"
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as data:
        mean = data["mu_pris_param"].reshape(-1)
        cov = data["cov_pris_param"]
        # Kept float64: scipy filters float32 images with double weights (MATLAB's fspecial window is double);
        # rounding the window to float32 moves baboon's score from 5.7295757 to 5.7295861 (MATLAB: 5.7295734).
        window = data["gaussian_window"]
    for a in (mean, cov, window):
        a.setflags(write=False)  # cached and shared: nobody may change it
    return PristineModel(mean, cov, window)


def y_channel_uint8(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr``'s Y of a uint8 ``(H, W, 3)`` RGB image: uint8 ``(H, W)`` in [16, 235].

    The BT.601 Y of :func:`darts_sr.evaluation.metrics.rgb_to_y`, rounded as ``rgb2ycbcr`` does for uint8 input: its
    coefficients (65.481, 128.553, 24.966) / 255 + 16, summed in float64, rounded half away from zero.
    """
    _check_rgb_uint8(img)
    rgb = img.astype(np.float64)
    t = 1.0 / 255.0  # rgb2ycbcr scales its matrix by 1/255 for uint8 input
    y = (t * 65.481) * rgb[..., 0] + (t * 128.553) * rgb[..., 1] + (t * 24.966) * rgb[..., 2] + 16.0
    return np.floor(y + 0.5).astype(np.uint8)  # y > 0: floor(y + 0.5) is MATLAB's round half away from zero


def _check_rgb_uint8(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"NIQE needs a uint8 (H, W, 3) RGB array (the rounded SR output), got {desc}")


def _grid_index(ratio: np.ndarray) -> np.ndarray:
    """Index of the grid ratio closest to each ``ratio`` (first on a tie; 0 for NaN), as MATLAB's ``min``.

    ``_RATIO_GRID`` increases strictly (tested), so the closest entry is one of the two around the insertion
    point: O(log n) per fit instead of a (fits x 9801) table.
    """
    i = np.clip(np.searchsorted(_RATIO_GRID, ratio), 1, len(_RATIO_GRID) - 1)
    lo, hi = i - 1, i
    idx = np.where((_RATIO_GRID[hi] - ratio) ** 2 < (_RATIO_GRID[lo] - ratio) ** 2, hi, lo)
    return np.where(np.isnan(ratio), 0, idx)


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD fit of each row of ``x`` (N, M) float64: shape alpha, left and right scales (each (N,)).

    MATLAB's estimateaggdparam.m, vectorised over rows. A row without negative or positive values has no
    left or right spread: NaN, as MATLAB's mean of an empty vector.
    """
    neg, pos = x < 0, x > 0
    sq = x * x
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.where(neg, sq, 0.0).sum(1) / neg.sum(1))
        right = np.sqrt(np.where(pos, sq, 0.0).sum(1) / pos.sum(1))
        g = left / right
        rhat = np.abs(x).mean(1) ** 2 / sq.mean(1)
        rhat_norm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = _GAMMA_GRID[_grid_index(rhat_norm)]
    scale = np.sqrt(gamma(1.0 / alpha) / gamma(3.0 / alpha))
    return alpha, left * scale, right * scale


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """The 18 features of computefeature.m for each MSCN block: (N, b, b) float32 -> (N, 18) float64."""
    blocks = blocks.astype(np.float64)
    n = len(blocks)
    alpha, left, right = _aggd_fit(blocks.reshape(n, -1))
    feats = [alpha, (left + right) / 2]
    for shift in _SHIFTS:
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))  # circshift inside each block, as blkproc sees it
        alpha, left, right = _aggd_fit(pair.reshape(n, -1))
        mean = (right - left) * gamma(2.0 / alpha) / gamma(1.0 / alpha)
        feats += [alpha, mean, left, right]
    return np.stack(feats, axis=1)


def _mscn(y: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of float32 ``y`` (H, W), float32 like MATLAB's."""
    mu = correlate(y, window, mode="nearest")  # float32 in, float32 out, double accumulation
    sigma = np.sqrt(np.abs(correlate(y * y, window, mode="nearest") - mu * mu))
    return (y - mu) / (sigma + 1)


def _to_blocks(img: np.ndarray, size: int) -> np.ndarray:
    """(nh*size, nw*size) -> (nh*nw, size, size), row-major over blocks (order does not change mean/cov)."""
    h, w = img.shape
    return img.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


def niqe_features(y: np.ndarray) -> np.ndarray:
    """Per-block NIQE features of a luma image: 2-D array in 0-255 -> (blocks, 36) float64, NaN where undefined.

    ``y`` is cropped to whole 96x96 blocks from the top-left. Columns 0-17 are the full scale, 18-35 the half
    scale. Pass luma rounded to integers (:func:`y_channel_uint8`) to reproduce MATLAB.
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"NIQE features need a 2-D luma array, got shape {y.shape}")
    nh, nw = y.shape[0] // BLOCK_SIZE, y.shape[1] // BLOCK_SIZE
    if nh * nw < 2:
        raise ValueError(
            f"image too small for NIQE: {y.shape[0]}x{y.shape[1]} (after border cropping) holds {nh * nw} "
            f"{BLOCK_SIZE}x{BLOCK_SIZE} blocks; the block covariance needs at least 2 (e.g. 96x192)"
        )
    window = pristine_model().window
    img = y[: nh * BLOCK_SIZE, : nw * BLOCK_SIZE].astype(np.float32)
    feats = []
    for scale in (1, 2):
        feats.append(_block_features(_to_blocks(_mscn(img, window), BLOCK_SIZE // scale)))
        if scale == 1:
            # MATLAB imresize(im, 0.5): antialiased bicubic; resize_right computes in double, stored as single.
            half = (img.shape[0] // 2, img.shape[1] // 2)
            img = resize(img, scale_factors=0.5, out_shape=half, pad_mode="symmetric").astype(np.float32)
    return np.concatenate(feats, axis=1)


def niqe_y(y: np.ndarray) -> float:
    """NIQE of a luma image (2-D array in 0-255, e.g. :func:`y_channel_uint8`'s output); lower is better.

    NaN when fewer than two blocks have defined features (flat content), as MATLAB returns NaN there.
    """
    feats = niqe_features(y)
    model = pristine_model()
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # all-NaN column: NaN, as MATLAB
        mean = np.nanmean(feats, axis=0)  # nanmean over all blocks, nancov over complete ones, as MATLAB's code
    cov = np.cov(complete, rowvar=False)
    diff = model.mean - mean
    distance = diff @ np.linalg.pinv((model.cov + cov) / 2) @ diff
    return float(np.sqrt(distance))


def niqe(img: np.ndarray, border: int = 0) -> float:
    """NIQE of a uint8 (H, W, 3) RGB image on its Y channel after cropping ``border`` pixels per side.

    Lower is better (Set14's HR images score 2.5-8.5; blur and noise raise it). Raises ValueError for a
    non-uint8 or non-RGB array, a negative border, or a crop smaller than two 96x96 blocks. MATLAB-compatible:
    see the module docstring.
    """
    _check_rgb_uint8(img)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = img.shape[:2]
    if 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of a {h}x{w} image")
    if border > 0:
        img = img[border:-border, border:-border]
    return niqe_y(y_channel_uint8(img))
