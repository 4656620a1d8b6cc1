"""Near-duplicate check between training image pools and the images results are reported on.

A reported image that also sits in the training pool, rescaled or cropped, makes its PSNR a training score, not a
test score: Set5's ``woman`` is BSD200's ``302003`` scaled by about 0.72 and cropped. File hashes miss such copies,
so this module matches image content across scales and crops:

1. Greyscale thumbnails are matched by normalised cross-correlation (NCC) over relative scales ``MIN_SCALE`` to
   ``MAX_SCALE`` in steps of ``2 ** (1 / 8)``, in both directions of containment: the reported image may be a
   scaled crop of the training image or the other way round. At each scale the smaller image (its central
   ``TEMPLATE_FRACTION``) is the template and the larger one, shrunk to a 64 px canvas (128 px where the template
   would be under ``MIN_TEMPLATE_SIDE`` there), is searched by FFT; a template's transform is computed once and
   reused for every image it is searched in. Partial overlaps are found when the smaller image's centre is shared.
2. Each pair's best (scale, offset) with NCC >= ``candidate_ncc`` is confirmed at full resolution: the two images are
   aligned by a coarse-to-fine local search over offset and scale that minimises the squared error, and the PSNR
   of grey values (0-255) is taken on their overlap, in the pixel grid of the lower-resolution image.
3. A pair is a duplicate when that PSNR is >= ``min_psnr`` and the overlap covers >= ``min_overlap`` of the smaller
   image. Byte-identical files at different paths are duplicates without any of this.

Scales are "reported = training resized by ``scale``". A file that is both reported and in a training folder (the
BSD200 holdout slice is both) is left out of the training pool: an honest split never trains on it.

    darts-sr check-overlap [--train NAME=PATH]... [--reported NAME=PATH]... [--no-holdout] [--json OUT]

prints the duplicates (and candidates with NCC >= 0.9 that failed confirmation) and exits 0 when none is found,
1 when some are, 2 with ``error: ...`` on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import fft, optimize

from darts_sr.data import HOLDOUT, DataError, list_images, load_image, parse_data_spec
from darts_sr.io import file_sha256

__all__ = [
    "DEFAULT_REPORTED",
    "DEFAULT_TRAIN",
    "Match",
    "compare_pools",
    "find_near_duplicates",
    "image_folder",
    "main",
]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN = ("T91=../shared/datasets/T91", "BSD200=../shared/datasets/BSD200")
DEFAULT_REPORTED = ("Set5=../shared/anchors/tpsr/Set5", "Set14=../shared/datasets/Set14")
HOLDOUT_SET = "holdout"

# Thumbnail canvases (px): the larger image of a pair is searched at the first size where the template's short
# side reaches MIN_TEMPLATE_SIDE. 64 px is quick and enough for most pairs; a small image that may be a small part
# of a large one (a T91 crop of a Set14 image at scale 1) needs 128.
SEARCH_SIDES = (64, 128)
SCALE_STEP = 2 ** (1 / 8)  # worst-case scale error 4.5%: at 64 px that is under 1.5 px at the template's edge
MIN_SCALE, MAX_SCALE = 0.4, 2.5
MIN_TEMPLATE_SIDE = 16  # smaller templates correlate well with almost anything
TEMPLATE_FRACTION = 0.85  # central part of the smaller image used as template: borders may be cropped or padded
FLAT_STD = 2.0  # grey levels: windows or templates flatter than this have no NCC worth trusting
# A pair whose PSNR at a quarter of the resolution is this far under the threshold is not refined further.
COARSE_MARGIN_DB = 3.0
REPORT_NCC = 0.9  # candidates at or above this that fail confirmation are listed as near misses


@dataclass(frozen=True)
class Match:
    """A training / reported image pair checked at full resolution.

    ``scale``: the reported image is the training image resized by it. ``offset``: where the reported image's
    top-left corner lies in the training image, ``(y, x)`` in training-image pixels. ``ncc``: thumbnail
    correlation that made the pair a candidate. ``psnr``: grey (0-255) PSNR on the aligned overlap, in dB
    (``inf`` for identical files). ``overlap``: fraction of the smaller image (in area) the other one covers.
    """

    train_set: str
    train_image: str
    reported_set: str
    reported_image: str
    scale: float
    ncc: float
    psnr: float
    overlap: float
    offset: tuple[float, float] = (0.0, 0.0)
    duplicate: bool = False

    def to_json(self) -> dict:
        """The fields as JSON values (``psnr`` of identical files, infinite, as null)."""
        return {**asdict(self), "psnr": self.psnr if math.isfinite(self.psnr) else None}

    def row(self) -> str:
        verdict = "duplicate" if self.duplicate else "no"
        return (
            f"{self.reported_set + '/' + self.reported_image:<18} {self.train_set + '/' + self.train_image:<14} "
            f"scale {self.scale:6.4f}  NCC {self.ncc:5.3f}  PSNR {self.psnr:6.2f} dB  overlap {self.overlap:4.0%}  "
            f"{verdict}"
        )


# ------------------------------------------------------------------------------------------------------- images


@dataclass
class _Image:
    """One image as grey float32 ``(H, W)`` in 0-255, with its thumbnails by level (factor ``SCALE_STEP ** level``)."""

    set_name: str
    path: Path
    grey: np.ndarray
    _levels: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def shape(self) -> tuple[int, int]:
        return self.grey.shape  # type: ignore[return-value]

    def level(self, m: int) -> tuple[np.ndarray, float]:
        """The image resized by ``SCALE_STEP ** m`` (antialiased) and that exact factor."""
        if m not in self._levels:
            factor = SCALE_STEP**m
            self._levels[m] = (_resize(self.grey, factor), factor)
        return self._levels[m]

    def search_level(self, side: int) -> int:
        """The level whose long side is at most ``side`` and nearest it (never enlarged)."""
        return min(0, math.floor(math.log(side / max(self.shape)) / math.log(SCALE_STEP) + 1e-9))


def _grey(rgb: np.ndarray) -> np.ndarray:
    # Full-range luma: Set14's bridge is greyscale, so colour must not decide a match.
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def _resize(grey: np.ndarray, factor: float) -> np.ndarray:
    """``grey`` resized by exactly ``factor``: the output covers the source's ``[0, n / factor)`` edges, so pixel
    edges map by ``e_out = e_in * factor`` (Pillow's resampling is antialiased when it shrinks)."""
    h, w = grey.shape
    out_h, out_w = max(1, math.floor(h * factor + 1e-6)), max(1, math.floor(w * factor + 1e-6))
    box = (0.0, 0.0, min(w, out_w / factor), min(h, out_h / factor))
    return np.asarray(Image.fromarray(grey).resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))


def _load(set_name: str, paths: Iterable[Path]) -> list[_Image]:
    return [_Image(set_name, p, _grey(load_image(p))) for p in paths]


# ---------------------------------------------------------------------------------------------- thumbnail search


@dataclass
class _Candidate:
    """The best thumbnail alignment of a pair: ``t_edge = q_edge / scale + offset`` (full-resolution pixel-edge
    coordinates, ``offset`` as ``(y, x)`` in training pixels)."""

    ncc: float
    scale: float
    offset: tuple[float, float]


def _template(img: np.ndarray, max_h: int, max_w: int) -> tuple[np.ndarray, int, int] | None:
    """The central ``TEMPLATE_FRACTION`` of ``img``, clipped to ``max_h x max_w``; None when too small."""
    h, w = img.shape
    th, tw = min(max_h, round(h * TEMPLATE_FRACTION)), min(max_w, round(w * TEMPLATE_FRACTION))
    if min(th, tw) < MIN_TEMPLATE_SIDE:
        return None
    cy, cx = (h - th) // 2, (w - tw) // 2
    return img[cy : cy + th, cx : cx + tw], cy, cx


class _Correlator:
    """NCC of many templates against one search image on a ``side`` square canvas, by FFT.

    Templates are zero-mean inside their support and zero outside, so the plain correlation is NCC's numerator;
    window means and variances of the search image come from integral images. Template transforms are cached by
    key, since one template is searched for in many images.
    """

    def __init__(self, side: int) -> None:
        self.side = side
        self._cache: dict[tuple, tuple[np.ndarray, float, int, int] | None] = {}

    def template(self, key: tuple, tpl: np.ndarray) -> tuple[np.ndarray, float, int, int] | None:
        if key not in self._cache:
            zero_mean = tpl - tpl.mean()
            norm = float(np.sqrt((zero_mean.astype(np.float64) ** 2).sum()))
            if norm < FLAT_STD * math.sqrt(tpl.size):
                self._cache[key] = None
            else:
                canvas = np.zeros((self.side, self.side), np.float32)
                canvas[: tpl.shape[0], : tpl.shape[1]] = zero_mean
                self._cache[key] = (np.conj(fft.rfft2(canvas)), norm, *tpl.shape)
        return self._cache[key]

    def match(self, search: np.ndarray, templates: Sequence[tuple[np.ndarray, float, int, int]]) -> np.ndarray:
        """``(K, 3)``: per template its best NCC and the ``(y, x)`` of its top-left corner in ``search``."""
        h, w = search.shape
        canvas = np.zeros((self.side, self.side), np.float32)
        canvas[:h, :w] = search - search.mean()  # centred: the float64 sums of squares below lose nothing
        spectrum = fft.rfft2(canvas)
        # Integral images with a zero first row and column: a window's sum is four look-ups.
        s1 = np.zeros((h + 1, w + 1))
        s2 = np.zeros_like(s1)
        s1[1:, 1:] = canvas[:h, :w].astype(np.float64).cumsum(0).cumsum(1)
        s2[1:, 1:] = (canvas[:h, :w].astype(np.float64) ** 2).cumsum(0).cumsum(1)
        out = np.zeros((len(templates), 3))
        # Sorted by shape, so that the window statistics are computed once per shape in each chunk.
        order = sorted(range(len(templates)), key=lambda i: templates[i][2:])
        for start in range(0, len(order), 256):  # bounds memory: 256 x side x side floats
            chunk = order[start : start + 256]
            spectra = np.stack([templates[i][0] for i in chunk])
            corr = fft.irfft2(spectrum[None] * spectra, s=(self.side, self.side))
            first = 0
            while first < len(chunk):
                th, tw = templates[chunk[first]][2:]
                last = first
                while last + 1 < len(chunk) and templates[chunk[last + 1]][2:] == (th, tw):
                    last += 1
                vy, vx, n = h - th + 1, w - tw + 1, th * tw
                sums = s1[th:, tw:] - s1[:vy, tw:] - s1[th:, :vx] + s1[:vy, :vx]
                var_n = s2[th:, tw:] - s2[:vy, tw:] - s2[th:, :vx] + s2[:vy, :vx] - sums * sums / n
                # Flat windows score 0: a uniform patch fits any template's shape and says nothing.
                inverse = np.where(var_n > n * FLAT_STD**2, 1 / np.sqrt(np.maximum(var_n, 1e-9)), 0.0)
                norms = np.array([templates[chunk[i]][1] for i in range(first, last + 1)])[:, None, None]
                ncc = (corr[first : last + 1, :vy, :vx] * inverse / norms).reshape(last + 1 - first, -1)
                best = ncc.argmax(1)
                rows = chunk[first : last + 1]
                out[rows, 0] = ncc[np.arange(len(rows)), best]
                out[rows, 1], out[rows, 2] = np.divmod(best, vx)
                first = last + 1
        return out


def _scale_steps() -> range:
    lo = math.floor(math.log(MIN_SCALE) / math.log(SCALE_STEP) + 1e-9)
    hi = math.ceil(math.log(MAX_SCALE) / math.log(SCALE_STEP) - 1e-9)
    return range(lo, hi + 1)


def _thumbnail_search(
    train: list[_Image], reported: list[_Image], skip: set[tuple[int, int]]
) -> dict[tuple[int, int], _Candidate]:
    """Best thumbnail alignment per ``(reported index, train index)`` pair not in ``skip``.

    For relative scale ``s = SCALE_STEP ** j`` the smaller image (by area, at matched scale) is the template and the
    larger one, at its search level, is searched: "reported inside training" (the reported image is a scaled crop)
    or "training inside reported".
    """
    best: dict[tuple[int, int], _Candidate] = {}
    for side_index, side in enumerate(SEARCH_SIDES):
        smaller = SEARCH_SIDES[side_index - 1] if side_index else None
        for reported_inside in (True, False):
            correlator = _Correlator(side)  # a fresh template cache: templates are not shared across directions
            searches, others = (train, reported) if reported_inside else (reported, train)
            for si, search_img in enumerate(searches):
                _search_one(correlator, smaller, reported_inside, si, search_img, others, skip, best)
    return best


def _search_one(
    correlator: _Correlator,
    smaller: int | None,
    reported_inside: bool,
    si: int,
    search_img: _Image,
    others: list[_Image],
    skip: set[tuple[int, int]],
    best: dict[tuple[int, int], _Candidate],
) -> None:
    """Searches ``search_img`` for every image of ``others`` at every scale whose template fits this canvas size
    and did not fit the ``smaller`` one; keeps each pair's best in ``best``."""
    a = search_img.search_level(correlator.side)
    search, f_search = search_img.level(a)
    a_small = search_img.search_level(smaller) if smaller else None
    if a_small == a:
        return  # the image is no larger than the smaller canvas: everything was searched there
    jobs, templates = [], []
    for oi, other in enumerate(others):
        pair = (oi, si) if reported_inside else (si, oi)
        if pair in skip:
            continue
        q, t = (other, search_img) if reported_inside else (search_img, other)
        for j in _scale_steps():
            s = SCALE_STEP**j  # reported = training resized by s
            if (q.grey.size / s**2 <= t.grey.size) != reported_inside:
                continue  # the other direction has the smaller image as template at this scale
            # Levels that put both images at the same content scale: reported = training * s.
            m = a - j if reported_inside else a + j
            img, f_other = other.level(m)
            cut = _template(img, *search.shape)
            if cut is None:
                continue
            if a_small is not None:
                m_small = a_small - j if reported_inside else a_small + j
                if _template(other.level(m_small)[0], *search_img.level(a_small)[0].shape) is not None:
                    continue  # searched on the smaller canvas already
            tpl = correlator.template((reported_inside, oi, m, *cut[0].shape), cut[0])
            if tpl is not None:
                jobs.append((pair, s, f_other, cut[1], cut[2]))
                templates.append(tpl)
    if not templates:
        return
    for (pair, s, f_other, cy, cx), (ncc, y, x) in zip(jobs, correlator.match(search, templates), strict=True):
        # The template's image has its origin at (y - cy, x - cx) in the search thumbnail. Offsets are kept as
        # where the reported image's top-left corner lies in the training image, in training pixels.
        dy, dx = y - cy, x - cx
        offset = (dy / f_search, dx / f_search) if reported_inside else (-dy / f_other, -dx / f_other)
        if pair not in best or ncc > best[pair].ncc:
            best[pair] = _Candidate(float(ncc), s, offset)


# -------------------------------------------------------------------------------------------------- confirmation


def _overlap_pair(
    src: np.ndarray, dst: np.ndarray, k: float, by: float, bx: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """``src`` resampled onto ``dst``'s pixel grid where ``src_edge = dst_edge * k + (by, bx)`` and both exist.

    Returns the two aligned arrays (src resampled, dst crop), or None when the overlap is under 8 px a side.
    """
    (hs, ws), (hd, wd) = src.shape, dst.shape
    y0, y1 = math.ceil(max(0.0, -by / k) - 1e-6), math.floor(min(hd, (hs - by) / k) + 1e-6)
    x0, x1 = math.ceil(max(0.0, -bx / k) - 1e-6), math.floor(min(wd, (ws - bx) / k) + 1e-6)
    if y1 - y0 < 8 or x1 - x0 < 8:
        return None
    box = (
        min(max(x0 * k + bx, 0.0), ws),
        min(max(y0 * k + by, 0.0), hs),
        min(max(x1 * k + bx, 0.0), ws),
        min(max(y1 * k + by, 0.0), hs),
    )
    warped = np.asarray(Image.fromarray(src).resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC, box=box))
    return warped, dst[y0:y1, x0:x1]


def _mse(pair: tuple[np.ndarray, np.ndarray] | None) -> float:
    if pair is None:
        return math.inf
    diff = pair[0].astype(np.float64) - pair[1]
    return float(np.mean(diff * diff))


def _refine(
    src: np.ndarray, dst: np.ndarray, k: float, by: float, bx: float, give_up_psnr: float = -math.inf
) -> tuple[float, float, float]:
    """``(k, by, bx)`` (``src_edge = dst_edge * k + (by, bx)``) minimising the aligned MSE, coarse to fine.

    Both images are shrunk 4x, then 2x, then used as they are; at each resolution a Nelder-Mead search starts from
    the last answer. When the PSNR at the first resolution is under ``give_up_psnr`` the pair cannot be a
    duplicate (shrinking averages differences away, so full resolution scores lower) and the finer ones are skipped.
    """
    for shrink in (0.25, 0.5, 1.0):
        src_l, dst_l = (src, dst) if shrink == 1.0 else (_resize(src, shrink), _resize(dst, shrink))
        if min(dst_l.shape) < 16:
            continue  # too small to say anything at this resolution
        # In this resolution's pixels: src_l edge = dst_l edge * k + b * shrink.
        (k, by_l, bx_l), mse = _nelder_mead(src_l, dst_l, np.array([k, by * shrink, bx * shrink]))
        by, bx = by_l / shrink, bx_l / shrink
        if _psnr(mse) < give_up_psnr:
            break
    return k, by, bx


def _nelder_mead(src: np.ndarray, dst: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float]:
    """The ``(k, by, bx)`` near ``start`` with the least aligned MSE, and that MSE.

    Parameters are searched in units of one ``dst`` pixel of movement (for the scale, at the far edge), to a
    twentieth of a pixel.
    """
    units = np.array([start[0] / max(dst.shape), start[0], start[0]])
    mse0 = _mse(_overlap_pair(src, dst, *start))
    if not math.isfinite(mse0) or mse0 == 0:
        return start, mse0  # no overlap to improve, or nothing to improve on

    def cost(u: np.ndarray) -> float:
        return _mse(_overlap_pair(src, dst, *(start + u * units))) / mse0  # relative, for fatol

    result = optimize.minimize(
        cost,
        np.zeros(3),
        method="Nelder-Mead",
        options={"initial_simplex": np.vstack([np.zeros(3), np.eye(3)]), "xatol": 0.05, "fatol": 1e-4, "maxfev": 300},
    )
    if not result.fun < 1:
        return start, mse0
    return start + result.x * units, float(result.fun * mse0)


def _psnr(mse: float) -> float:
    if not math.isfinite(mse):
        return 0.0
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _confirm(
    t: _Image, q: _Image, cand: _Candidate, give_up_psnr: float = -math.inf
) -> tuple[float, tuple[float, float], float, float]:
    """Full-resolution ``(scale, offset, psnr, overlap)`` of a candidate, compared on the coarser image's grid.

    A candidate given up on (see ``_refine``) keeps its coarse alignment; its PSNR is still measured at full
    resolution.
    """
    s, (dy, dx) = cand.scale, cand.offset
    if s <= 1:  # the reported image is the coarser one: training pixels resampled onto it
        k, by, bx = _refine(t.grey, q.grey, 1 / s, dy, dx, give_up_psnr)
        s, dy, dx = 1 / k, by, bx
        pair = _overlap_pair(t.grey, q.grey, k, by, bx)
    else:  # the training image is the coarser one: q_edge = (t_edge - offset) * s
        k, by, bx = _refine(q.grey, t.grey, s, -dy * s, -dx * s, give_up_psnr)
        s, dy, dx = k, -by / k, -bx / k
        pair = _overlap_pair(q.grey, t.grey, k, by, bx)
    (hq, wq), (ht, wt) = q.shape, t.shape
    # Overlap in training pixels: the reported image spans offset + [0, size / s).
    iy = max(0.0, min(ht, dy + hq / s) - max(0.0, dy))
    ix = max(0.0, min(wt, dx + wq / s) - max(0.0, dx))
    overlap = iy * ix / min(hq * wq / s**2, ht * wt)
    return s, (dy, dx), _psnr(_mse(pair)), overlap


# --------------------------------------------------------------------------------------------------------- API


def image_folder(path: str | Path) -> Path:
    """``path/HR`` when the folder has one (benchmark layout), else ``path``."""
    path = Path(path).expanduser()
    return path / "HR" if (path / "HR").is_dir() else path


def compare_pools(
    train: dict[str, list[Path]],
    reported: dict[str, list[Path]],
    min_psnr: float = 30.0,
    min_overlap: float = 0.5,
    candidate_ncc: float = 0.8,
) -> list[Match]:
    """Every pair checked at full resolution (duplicates and candidates that failed), best PSNR first.

    ``train`` / ``reported``: image files by set name. Pairs of the same file (resolved path) are never compared,
    and a training file that is also reported is left out of the pool; identical bytes at different paths are
    duplicates with ``psnr = inf``. Raises ``DataError`` for an unreadable image.
    """
    started = time.perf_counter()
    reported_paths = {p.resolve() for paths in reported.values() for p in paths}
    pool = {name: [p for p in paths if p.resolve() not in reported_paths] for name, paths in train.items()}
    left_out = sum(len(v) for v in train.values()) - sum(len(v) for v in pool.values())
    if left_out:
        logger.info("%d training images are also reported; left out of the training pool", left_out)
    t_images = [img for name, paths in pool.items() for img in _load(name, paths)]
    q_images = [img for name, paths in reported.items() for img in _load(name, paths)]

    # Identical bytes need no image search; they are the first thing a contamination check must say.
    t_hash = {i: file_sha256(t.path) for i, t in enumerate(t_images)}
    q_hash = {i: file_sha256(q.path) for i, q in enumerate(q_images)}
    identical = {(qi, ti) for qi, qh in q_hash.items() for ti, th in t_hash.items() if qh == th}
    results = [
        Match(
            t_images[ti].set_name,
            t_images[ti].name,
            q_images[qi].set_name,
            q_images[qi].name,
            1.0,
            1.0,
            math.inf,
            1.0,
            (0.0, 0.0),
            True,
        )
        for qi, ti in sorted(identical)
    ]

    candidates = _thumbnail_search(t_images, q_images, identical)
    searched = time.perf_counter()
    chosen = sorted(((c.ncc, pair) for pair, c in candidates.items() if c.ncc >= candidate_ncc), reverse=True)
    for _, (qi, ti) in chosen:
        q, t, cand = q_images[qi], t_images[ti], candidates[(qi, ti)]
        scale, offset, psnr, overlap = _confirm(t, q, cand, min_psnr - COARSE_MARGIN_DB)
        duplicate = bool(psnr >= min_psnr and overlap >= min_overlap)
        offset = (float(offset[0]), float(offset[1]))
        results.append(
            Match(t.set_name, t.name, q.set_name, q.name, float(scale), cand.ncc, psnr, overlap, offset, duplicate)
        )
        logger.debug("%s", results[-1].row())
    logger.info(
        "%d reported x %d training images: thumbnail search %.1f s, %d candidates with NCC >= %.2f confirmed in "
        "%.1f s, %d duplicates",
        len(q_images),
        len(t_images),
        searched - started,
        len(chosen),
        candidate_ncc,
        time.perf_counter() - searched,
        sum(m.duplicate for m in results),
    )
    return sorted(results, key=lambda m: (-m.psnr, -m.ncc))


def find_near_duplicates(
    train: dict[str, list[Path]],
    reported: dict[str, list[Path]],
    min_psnr: float = 30.0,
    min_overlap: float = 0.5,
    candidate_ncc: float = 0.8,
) -> list[Match]:
    """The duplicates among ``compare_pools``' pairs: aligned PSNR >= ``min_psnr`` dB over >= ``min_overlap`` of
    the smaller image, or identical files."""
    return [m for m in compare_pools(train, reported, min_psnr, min_overlap, candidate_ncc) if m.duplicate]


# --------------------------------------------------------------------------------------------------------- CLI


def _folders(specs: Sequence[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for spec in specs:
        name, path = parse_data_spec(spec)
        if name in out:
            raise DataError(f"{spec!r}: set name {name!r} given twice")
        out[name] = list_images(image_folder(path))
    return out


def parse_args(argv: Sequence[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog or "darts-sr check-overlap",
        description="Near-duplicate (contamination) check between training pools and reported image sets. "
        "Exit status: 0 none found, 1 duplicates found, 2 bad input.",
    )
    parser.add_argument("--train", action="append", metavar="NAME=PATH", help=f"default: {' '.join(DEFAULT_TRAIN)}")
    parser.add_argument(
        "--reported", action="append", metavar="NAME=PATH", help=f"default: {' '.join(DEFAULT_REPORTED)}"
    )
    parser.add_argument(
        "--holdout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also report the validation slice (data.HOLDOUT) found in the --train folders as set {HOLDOUT_SET!r}",
    )
    parser.add_argument("--min-psnr", type=float, default=30.0, help="aligned grey PSNR for a duplicate (dB)")
    parser.add_argument("--min-overlap", type=float, default=0.5, help="covered fraction of the smaller image")
    parser.add_argument("--candidate-ncc", type=float, default=0.8, help="thumbnail NCC that triggers a check")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every checked pair here")
    return parser.parse_args(argv)


def _print_table(title: str, matches: list[Match]) -> None:
    print(f"{title}: {len(matches)}")
    for m in matches:
        print("  " + m.row())


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv, prog)
    try:
        train = _folders(args.train or DEFAULT_TRAIN)
        reported = _folders(args.reported or DEFAULT_REPORTED)
        if args.holdout:
            held = [p for paths in train.values() for p in paths if p.name in HOLDOUT]
            if held and HOLDOUT_SET not in reported:
                reported[HOLDOUT_SET] = held
        checked = compare_pools(train, reported, args.min_psnr, args.min_overlap, args.candidate_ncc)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    duplicates = [m for m in checked if m.duplicate]
    _print_table("duplicates", duplicates)
    _print_table(
        f"near misses (NCC >= {REPORT_NCC}, failed confirmation)",
        [m for m in checked if not m.duplicate and m.ncc >= REPORT_NCC],
    )
    if args.json:
        args.json.write_text(json.dumps([m.to_json() for m in checked], indent=1) + "\n")
    return 1 if duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
