"""Images in, (LR, HR) pairs and training patches out.

Range rule (see ``darts_sr/__init__.py``): arrays here are uint8 ``(H, W, 3)`` RGB; tensors handed to networks are
float ``(B, 3, H, W)`` in [0, 1]. ``to_tensor`` / ``to_uint8`` are the only crossings, and ``to_uint8`` is where
network outputs are quantised (clamp to [0, 255], round), as EDSR/TPSR evaluation does.

Dataset specs accepted by ``load_dataset``:

- ``builtin``: a small default set from scikit-image's bundled images (no download), LR synthesised.
- ``lr:PATH``: a folder of LR images without ground truth.
- ``PATH`` with ``HR/`` (and optionally ``LR_bicubic/X{scale}/``): benchmark layout (Set5, Set14, DIV2K valid).
- ``PATH`` with only ``LR_bicubic/X{scale}/``: LR only.
- ``PATH/DIV2K_train_HR`` (any ``*_HR`` folder) beside ``DIV2K_train_LR_bicubic/X{scale}/``: DIV2K's official LR images.
- any other ``PATH``: a folder of HR images, LR synthesised with MATLAB-compatible bicubic.

Synthesised LR images of large HR images (``CACHE_MIN_PIXELS``; about 2 s each for DIV2K) are cached on disk, keyed
by the HR file's path, modification time, size and the scale, in ``$DARTS_SR_CACHE`` (default
``~/.cache/darts_sr/lq``; ``DARTS_SR_CACHE=off`` turns the cache off). Large folders show a progress bar while they
load. Under torchrun rank 0 loads the training sets first, filling the cache, and the other ranks then read it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from resize_right import resize

from darts_sr import distributed
from darts_sr.errors import UserError
from darts_sr.io import atomic_save_png

__all__ = [
    "BUILTIN_SPLITS",
    "CACHE_ENV",
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImagePair",
    "PatchSampler",
    "bicubic_downscale",
    "bicubic_upscale",
    "centre_crop",
    "crop_to_multiple",
    "list_images",
    "load_dataset",
    "load_image",
    "load_training_pairs",
    "lq_cache_dir",
    "parse_data_spec",
    "split_halves",
    "synthesize_lq",
    "to_tensor",
    "to_uint8",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# Built-in demo set: scikit-image's bundled files, so it works offline. Splits are disjoint by image.
BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "coffee", "rocket", "hubble_deep_field", "retina"),
    "val": ("ihc",),
    "test": ("chelsea", "motorcycle_left"),
}

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")

CACHE_ENV = "DARTS_SR_CACHE"  # folder for synthesised LR images; off / 0 / none: no cache
# HR pixels from which a synthesised LR image is cached: below, synthesis (~0.7 s per megapixel) is quicker than
# the cache is worth, and small benchmark or test images do not fill it.
CACHE_MIN_PIXELS = 1_000_000
LQ_CACHE_VERSION = 1  # part of the cache key: bump when bicubic_downscale's output changes
PROGRESS_MIN_IMAGES = 20  # folders with fewer images load without a progress bar


class DataError(UserError, ValueError):
    """A dataset or image problem the user must fix; the message is one line naming the file or folder."""

    def __init__(self, message: str) -> None:
        # PIL reasons and odd file names can carry newlines; keep log lines and CLI errors to one line.
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------------------------------- single images


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, 3)`` RGB.

    Greyscale is replicated to 3 channels, alpha dropped, palettes expanded; 16-bit greyscale is scaled to 8 bit by
    ``round(v / 257)``. EXIF orientation is ignored, as MATLAB's ``imread`` (and so every SR benchmark) does.
    Raises ``DataError`` for a missing, truncated or corrupt file.
    """
    path = Path(path)
    # A truncated file must fail, not decode as grey padding; restore the caller's setting afterwards.
    truncated_setting = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as img:
            img.load()  # Image.open is lazy; only a full decode finds truncation
            return _to_rgb_uint8(img)
    # Pillow raises a zoo of types for broken files (OSError, SyntaxError, zlib/struct errors, bomb errors).
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_setting


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I -> L conversion clips at 255 instead of scaling, which would turn a 16-bit image white.
        values = np.asarray(img).astype(np.float64)
        grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise ValueError("floating-point images are not supported")
    # Covers 1, L, LA, P, PA, RGBA, CMYK, YCbCr. 16-bit RGB PNGs arrive from Pillow already reduced to their high
    # byte (floor(v / 256)), within one level of round(v / 257); Pillow offers no 48-bit mode to do better.
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.array(rgb, dtype=np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (extensions in ``IMAGE_EXTENSIONS``, any case), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = sorted(
        p
        for p in folder.iterdir()
        # Dot files are macOS resource forks (._x.png) and editor litter, never images.
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``(H, W, ...)`` from the top-left so H and W are multiples of ``scale`` (the benchmark convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _check_image_array(img: np.ndarray, what: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{what} must be a uint8 (H, W, 3) array, got {desc}")


def _resize_uint8(img: np.ndarray, factor: float, out_hw: tuple[int, int]) -> np.ndarray:
    # float64 and symmetric padding reproduce MATLAB imresize (cubic, antialiased) to within one grey level.
    out = resize(img.astype(np.float64), scale_factors=factor, out_shape=out_hw, pad_mode="symmetric")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible ``imresize(hr, 1/scale, 'bicubic')``: uint8 ``(H, W, 3)`` -> uint8 ``(H/s, W/s, 3)``.

    H and W must be multiples of ``scale`` (use ``crop_to_multiple``) so LR pixels tile HR pixels exactly.
    """
    _check_image_array(hr, "hr")
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop_to_multiple first")
    return _resize_uint8(hr, 1.0 / scale, (h // scale, w // scale))


def bicubic_upscale(lq: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible bicubic upscaling (the bicubic baseline): uint8 ``(h, w, 3)`` -> uint8 ``(h*s, w*s, 3)``."""
    _check_image_array(lq, "lq")
    h, w = lq.shape[:2]
    return _resize_uint8(lq, float(scale), (h * scale, w * scale))


def lq_cache_dir() -> Path | None:
    """Where synthesised LR images are cached: ``$DARTS_SR_CACHE``, else ``$XDG_CACHE_HOME/darts_sr/lq`` (default
    ``~/.cache/darts_sr/lq``); None when ``DARTS_SR_CACHE`` is ``off``, ``0``, ``none`` or empty."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "darts_sr" / "lq"


def _lq_cache_file(source: Path, scale: int) -> Path | None:
    folder = lq_cache_dir()
    if folder is None:
        return None
    source = source.resolve()
    stat = source.stat()
    key = f"{source}|{stat.st_mtime_ns}|{stat.st_size}|x{scale}|v{LQ_CACHE_VERSION}"
    return folder / f"x{scale}" / f"{source.stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.png"


_cache_warned = False


def synthesize_lq(gt: np.ndarray, scale: int, source: str | Path | None = None) -> tuple[np.ndarray, bool]:
    """``bicubic_downscale(gt, scale)`` and whether it came from the on-disk cache. ``gt`` is the HR image read
    from the file ``source`` (cropped to a multiple of ``scale``); large ones are cached under ``lq_cache_dir()``.
    A missing, unreadable or mismatched cache entry is recomputed; a cache that cannot be written is said once."""
    global _cache_warned
    h, w = gt.shape[:2]
    cache = None
    if source is not None and h * w >= CACHE_MIN_PIXELS:
        cache = _lq_cache_file(Path(source), scale)
    if cache is not None and cache.is_file():
        try:
            lq = load_image(cache)
        except DataError:
            lq = None
        if lq is not None and lq.shape == (h // scale, w // scale, 3):
            return lq, True
    lq = bicubic_downscale(gt, scale)
    if cache is not None:
        try:
            atomic_save_png(cache, lq)  # rank 0 only under torchrun
        except OSError as e:
            if not _cache_warned:
                logger.warning("%s: cannot cache synthesised LR images (%s); set %s", cache.parent, e, CACHE_ENV)
                _cache_warned = True
    return lq, False


class _Progress:
    """A progress bar over a folder's images, with log lines routed around it; silent for small folders and on
    torchrun ranks other than 0."""

    def __init__(self, total: int, where: str):
        self.total, self.where, self.started, self.cached = total, where, time.time(), 0
        self.shown = total >= PROGRESS_MIN_IMAGES and distributed.is_main()

    def __enter__(self) -> _Progress:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        self._bar = tqdm(
            total=self.total, desc=f"loading {self.where}", unit="image", disable=not self.shown, dynamic_ncols=True
        )
        return self

    def update(self, from_cache: bool = False) -> None:
        self.cached += from_cache
        self._bar.update(1)

    def __exit__(self, *exc) -> None:
        self._bar.close()
        self._redirect.__exit__(*exc)
        if self.shown and exc[0] is None:
            cached = f" ({self.cached} LR images from the cache)" if self.cached else ""
            logger.info("%s: %d images loaded in %.0f s%s", self.where, self.total, time.time() - self.started, cached)


# ----------------------------------------------------------------------------------------------------------- pairs


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous and arrays are unhashable
class ImagePair:
    """One image: ``lq`` (low resolution) uint8 ``(h, w, 3)``; ``gt`` (ground truth, high resolution) uint8
    ``(h*s, w*s, 3)`` or None when there is none. BasicSR's names, so ``lr`` only ever means a learning rate."""

    name: str
    lq: np.ndarray
    gt: np.ndarray | None

    def __post_init__(self) -> None:
        _check_image_array(self.lq, f"{self.name}: LR image")
        if self.gt is not None:
            _check_image_array(self.gt, f"{self.name}: HR image")


def parse_data_spec(spec: str) -> tuple[str, str]:
    """Split a ``--data NAME=PATH`` argument into ``(NAME, PATH)``; the path may itself contain ``=``."""
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise DataError(f"--data {spec!r}: expected NAME=PATH")
    return name, path


def load_dataset(spec: str, scale: int, synthesize_lr: bool = False, split: str = "test") -> list[ImagePair]:
    """Load the pairs named by ``spec`` (see the module docstring for the forms), sorted by name.

    ``synthesize_lr`` ignores a given ``LR_bicubic/X{scale}`` folder and makes LR from HR instead. ``split`` picks
    the built-in set's ``train`` / ``val`` / ``test`` part and is ignored for folders.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if spec == "builtin":
        return _load_builtin(split, scale)
    if spec.startswith("lr:"):
        if not spec[3:].strip():
            raise DataError(f"{spec!r}: expected lr:PATH")
        folder = Path(spec[3:]).expanduser()
        return [ImagePair(p.stem, load_image(p), None) for p in _unique_stems(list_images(folder), folder)]

    root = Path(spec).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a folder of images or HR/ + LR_bicubic/X{scale}/)")
    hr_dir, lr_dir = root / "HR", root / "LR_bicubic" / f"X{scale}"
    if hr_dir.is_dir():
        if lr_dir.is_dir() and not synthesize_lr:
            return _load_benchmark(hr_dir, lr_dir, scale)
        if not synthesize_lr:
            logger.info("%s: no LR_bicubic/X%d folder, synthesising LR with bicubic", root, scale)
        return _load_hr_only(hr_dir, scale)
    div2k_lr = root.parent / f"{root.name[:-3]}_LR_bicubic" / f"X{scale}"
    if root.name.endswith("_HR") and div2k_lr.is_dir() and not synthesize_lr:
        logger.info("%s: LR images from %s", root, div2k_lr)
        return _load_benchmark(root, div2k_lr, scale)
    if lr_dir.is_dir():
        files = _unique_stems(list_images(lr_dir), lr_dir, scale)
        return [ImagePair(_strip_scale_suffix(p.stem, scale), load_image(p), None) for p in files]
    if (root / "LR_bicubic").is_dir() and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir()):
        # Looks like a benchmark for another scale: say that rather than "no images".
        raise DataError(f"{lr_dir}: no such folder (and no HR/ folder beside it)")
    return _load_hr_only(root, scale)


def _strip_scale_suffix(stem: str, scale: int) -> str:
    # EDSR names LR files babyx4.png for HR baby.png.
    suffix = f"x{scale}"
    return stem[: -len(suffix)] if stem.lower().endswith(suffix) and len(stem) > len(suffix) else stem


def _unique_stems(files: list[Path], folder: Path, scale: int | None = None) -> list[Path]:
    # Pairs are named by stem; two files with one stem would overwrite each other's outputs.
    seen: dict[str, Path] = {}
    for p in files:
        key = p.stem if scale is None else _strip_scale_suffix(p.stem, scale)
        if key in seen:
            raise DataError(f"{folder}: {seen[key].name} and {p.name} have the same name {key!r}")
        seen[key] = p
    return files


class _Crops:
    """HR images cropped to a multiple of the scale, said once per folder: a per-image line would drown the log for
    DIV2K-sized sets."""

    def __init__(self, scale: int, where: str):
        self.scale, self.where, self.cropped, self.seen = scale, where, 0, 0

    def __call__(self, gt: np.ndarray) -> np.ndarray:
        out = crop_to_multiple(gt, self.scale)
        self.seen += 1
        self.cropped += out.shape != gt.shape
        return out

    def report(self) -> None:
        if self.cropped:
            logger.info(
                "%s: cropped %d of %d HR images to a multiple of %d", self.where, self.cropped, self.seen, self.scale
            )


def _load_hr_only(folder: Path, scale: int, stems: set[str] | None = None) -> list[ImagePair]:
    files = _unique_stems(list_images(folder), folder)
    if stems is not None:  # only these images (the holdout out of a training folder): the rest is never read
        files = [p for p in files if p.stem in stems]
    crops, pairs = _Crops(scale, str(folder)), []
    with _Progress(len(files), str(folder)) as progress:
        for path in files:
            gt = crops(load_image(path))
            if gt.shape[0] == 0 or gt.shape[1] == 0:
                raise DataError(f"{path}: image smaller than the scale factor {scale}")
            lq, from_cache = synthesize_lq(gt, scale, path)
            pairs.append(ImagePair(path.stem, lq, gt))
            progress.update(from_cache)
    crops.report()
    return pairs


def _load_benchmark(hr_dir: Path, lr_dir: Path, scale: int) -> list[ImagePair]:
    hr_files = _unique_stems(list_images(hr_dir), hr_dir)
    lr_files = _unique_stems(list_images(lr_dir), lr_dir, scale)
    lr_by_stem = {_strip_scale_suffix(p.stem, scale): p for p in lr_files}
    for p in lr_files:  # an exact stem match wins over the EDSR-suffix reading (an HR really named "tx4")
        lr_by_stem[p.stem] = p

    crops, pairs, used = _Crops(scale, str(hr_dir)), [], set()
    with _Progress(len(hr_files), str(hr_dir)) as progress:
        for hr_path in hr_files:
            name = hr_path.stem
            lr_path = lr_by_stem.get(name)
            if lr_path is None:
                raise DataError(f"{hr_path}: no LR image in {lr_dir} (looked for {name}.* and {name}x{scale}.*)")
            used.add(lr_path)
            gt, lq = crops(load_image(hr_path)), load_image(lr_path)
            if lq.shape[0] * scale != gt.shape[0] or lq.shape[1] * scale != gt.shape[1]:
                raise DataError(
                    f"{lr_path} is {lq.shape[1]}x{lq.shape[0]} but {hr_path} is {gt.shape[1]}x{gt.shape[0]} "
                    f"after cropping to a multiple of {scale}; expected LR x{scale} = HR (sizes are WxH)"
                )
            pairs.append(ImagePair(name, lq, gt))
            progress.update()
    crops.report()
    if len(used) < len(lr_files):
        logger.warning("%s: %d LR images have no HR counterpart and are ignored", lr_dir, len(lr_files) - len(used))
    return pairs


# -------------------------------------------------------------------------------------------------------- built-in


def _skimage_data_dir() -> Path:
    import skimage.data  # deferred: skimage is slow to import and only the built-in set needs it

    return Path(skimage.data.__file__).parent


@functools.cache
def _builtin_pair(name: str, scale: int) -> ImagePair:
    # Cached: retina is 1411x1411 and the demo loads the same split repeatedly. Arrays are made read-only so a
    # caller's in-place edit fails loudly instead of corrupting every later load.
    data_dir = _skimage_data_dir()
    matches = sorted(p for p in data_dir.glob(f"{name}.*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not matches:
        raise DataError(f"{data_dir}: built-in image {name!r} not found (is scikit-image installed completely?)")
    crops = _Crops(scale, str(matches[0]))
    gt = crops(load_image(matches[0]))
    crops.report()
    lq, _ = synthesize_lq(gt, scale, matches[0])
    gt.flags.writeable = False
    lq.flags.writeable = False
    return ImagePair(name, lq, gt)


def _load_builtin(split: str, scale: int) -> list[ImagePair]:
    if split not in BUILTIN_SPLITS:
        raise DataError(f"builtin: unknown split {split!r} (expected one of {', '.join(BUILTIN_SPLITS)})")
    return [_builtin_pair(name, scale) for name in BUILTIN_SPLITS[split]]


# --------------------------------------------------------------------------------------------------------- tensors


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(1, 3, H, W)`` in [0, 1]."""
    _check_image_array(img, "image")
    # astype copies, so read-only (cached) arrays are fine and the tensor owns its memory.
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float ``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1] -> uint8 ``(H, W, 3)``, clamped to [0, 255] and rounded."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"to_uint8 expects (1, 3, H, W) or (3, H, W), got {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float32)
    return (t * 255.0).clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0).numpy()


# -------------------------------------------------------------------------------------------------------- patches


class PatchSampler:
    """Random aligned (LR, HR) training patches from in-memory pairs.

    Each batch item picks an image uniformly, an LR crop of ``patch_size`` and the HR crop it covers, then (with
    ``augment``) a random horizontal flip, vertical flip and transpose applied to both. All randomness comes from
    the ``torch.Generator`` passed to ``sample``, so saving its state is enough to resume a run exactly.
    """

    def __init__(
        self, pairs: list[ImagePair], patch_size: int, scale: int, augment: bool = True, skip_small: bool = False
    ) -> None:
        if not pairs:
            raise ValueError("PatchSampler needs at least one image pair")
        if patch_size < 1 or scale < 1:
            raise ValueError(f"patch_size and scale must be >= 1, got {patch_size} and {scale}")
        if skip_small:  # large patches on a pool with small images (T91): train on the images that hold a patch
            small = [q.name for q in pairs if min(q.lq.shape[:2]) < patch_size]
            if small:
                logger.info(
                    "%d of %d training images are smaller than the %d-px LR patch and left out",
                    len(small),
                    len(pairs),
                    patch_size,
                )
            pairs = [q for q in pairs if min(q.lq.shape[:2]) >= patch_size]
            if not pairs:
                raise DataError(f"no training image holds a {patch_size}x{patch_size} LR patch")
        for pair in pairs:
            if pair.gt is None:
                raise DataError(f"{pair.name}: no HR image; training patches need ground truth")
            h, w = pair.lq.shape[:2]
            if pair.gt.shape[:2] != (h * scale, w * scale):
                raise DataError(f"{pair.name}: HR {pair.gt.shape[:2]} is not LR {(h, w)} x{scale}")
            if h < patch_size or w < patch_size:
                raise DataError(f"{pair.name}: LR {w}x{h} is smaller than the {patch_size}x{patch_size} patch")
        self.pairs = list(pairs)
        self._images: list[tuple[np.ndarray, np.ndarray]] = [(q.lq, q.gt) for q in pairs if q.gt is not None]
        self.patch_size = patch_size
        self.scale = scale
        self.augment = augment

    def sample(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(lq, gt)``: float32 CPU tensors ``(B, 3, p, p)`` and ``(B, 3, p*s, p*s)`` in [0, 1].

        With ``world_size`` > 1, ``world_size * batch_size`` crops are drawn and this rank's ``batch_size`` are
        made: every rank advances ``generator`` identically and the ranks' crops are disjoint draws.
        """
        p, s = self.patch_size, self.scale
        dev = generator.device
        total = batch_size * world_size
        # Two draws per batch, in a fixed order, so the stream is identical whatever the images' sizes.
        idx = torch.randint(len(self.pairs), (total,), generator=generator, device=dev).tolist()
        u = torch.rand(total, 5, generator=generator, device=dev, dtype=torch.float64).tolist()
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        lqs, gts = [], []
        for i, (uy, ux, uh, uv, ut) in zip(idx[mine], u[mine]):
            lq_img, gt_img = self._images[i]
            h, w = lq_img.shape[:2]
            # min() guards the float edge case u * n == n; crops are aligned so LR pixel (y, x) covers HR s*(y, x).
            y, x = min(int(uy * (h - p + 1)), h - p), min(int(ux * (w - p + 1)), w - p)
            lq = lq_img[y : y + p, x : x + p]
            gt = gt_img[y * s : (y + p) * s, x * s : (x + p) * s]
            if self.augment:
                if uh < 0.5:
                    lq, gt = lq[:, ::-1], gt[:, ::-1]
                if uv < 0.5:
                    lq, gt = lq[::-1], gt[::-1]
                if ut < 0.5:
                    lq, gt = lq.transpose(1, 0, 2), gt.transpose(1, 0, 2)
            lqs.append(lq)
            gts.append(gt)
        return _batch_to_tensor(lqs), _batch_to_tensor(gts)


def _batch_to_tensor(patches: list[np.ndarray]) -> torch.Tensor:
    batch = np.stack(patches).astype(np.float32) / 255.0  # (B, H, W, 3); stack copies the flipped views
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------------- training sets


def load_training_pairs(specs: tuple[str, ...], scale: int) -> list[ImagePair]:
    """Every image of the training specs (``PATH``, ``NAME=PATH`` or ``builtin``), in order.

    The images of ``training_exclusions()`` (the holdout and near-duplicates of reported images) are left out.
    Under torchrun rank 0 loads first, synthesising LR images into the on-disk cache, while the other ranks wait;
    they then load from the cache instead of repeating the work (a rank 0 error is raised on every rank)."""

    def load() -> list[ImagePair]:
        pairs = []
        for spec in specs:
            path = spec.split("=", 1)[1] if "=" in spec else spec
            pairs += load_dataset(path, scale, split="train")
        excluded = training_exclusions()
        dropped = sorted(p.name for p in pairs if p.name in excluded)
        if dropped:
            logger.info(
                "training pool: %d images left out (%s)",
                len(dropped),
                "; ".join(f"{name}: {excluded[name]}" for name in dropped if name in NEAR_DUPLICATES) or "the holdout",
            )
        return [p for p in pairs if p.name not in excluded]

    if distributed.world_size() == 1:
        return load()
    loaded: list[ImagePair] = []
    distributed.on_main(lambda: loaded.extend(load()), DataError)  # broadcasts only the outcome, not the images
    return loaded if distributed.is_main() else load()


def split_halves(pairs: list[ImagePair]) -> tuple[list[ImagePair], list[ImagePair]]:
    """Alternate images into the weight (train) half and the architecture (val) half of a search."""
    if len(pairs) < 2:
        raise DataError(f"the search needs at least 2 training images to split into halves, got {len(pairs)}")
    return pairs[0::2], pairs[1::2]


def centre_crop(pairs: list[ImagePair], lq_size: int, scale: int) -> list[ImagePair]:
    """Each pair cut to its central ``lq_size`` LR square (and the HR it covers); ``lq_size <= 0`` keeps them whole."""
    if lq_size <= 0:
        return pairs
    out = []
    for p in pairs:
        h, w = p.lq.shape[:2]
        top, left = max(0, (h - lq_size) // 2), max(0, (w - lq_size) // 2)
        lq = p.lq[top : top + lq_size, left : left + lq_size]
        gt = p.gt[top * scale : (top + lq_size) * scale, left * scale : (left + lq_size) * scale]
        out.append(ImagePair(p.name, np.ascontiguousarray(lq), np.ascontiguousarray(gt)))
    return out


# ------------------------------------------------------------------------------------ holdout and reported benchmarks

# The validation slice that experiments choose checkpoints on: 20 BSD200 images, fixed by name, held out of the
# training pool (darts_sr.experiments.rank_check, darts_sr.experiments.compare). Set5 and Set14 are only ever reported.
HOLDOUT = tuple(
    f"{n}.png"
    for n in (
        "100075",
        "100080",
        "100098",
        "103041",
        "104022",
        "105019",
        "105053",
        "106020",
        "106025",
        "108041",
        "108073",
        "109034",
        "112082",
        "113009",
        "113016",
        "113044",
        "117054",
        "118020",
        "118035",
        "12003",
    )
)
HOLDOUT_VAL = "holdout"  # the data.val value that asks for the held-out slice (HOLDOUT)
DEFAULT_BENCHMARKS = ("Set5=../shared/anchors/tpsr/Set5", "Set14=../shared/datasets/Set14")


def load_validation_pairs(val: str, train_specs: tuple[str, ...], scale: int, crop: int) -> list[ImagePair]:
    """A search's validation pairs, centre-cropped to ``crop`` LR px: ``val`` is a dataset spec, or ``holdout``: the
    ``HOLDOUT`` images read out of the training folders, which the training pool never holds. With ``holdout`` the
    search's diagnostic PSNR is on the slice that the retraining recipes choose checkpoints on, not on a benchmark
    that is reported."""
    if val != HOLDOUT_VAL:
        return centre_crop(load_dataset(val, scale, split="val"), crop, scale)
    held = {Path(name).stem for name in HOLDOUT}
    pairs = []
    for spec in train_specs:
        folder = Path(spec.split("=", 1)[1] if "=" in spec else spec).expanduser()
        if spec != "builtin" and folder.is_dir():
            pairs += _load_hr_only(folder / "HR" if (folder / "HR").is_dir() else folder, scale, held)
    if len(pairs) != len(held):
        raise DataError(
            f"data.val {HOLDOUT_VAL}: found {len(pairs)} of the {len(held)} holdout images in the training folders "
            f"({', '.join(train_specs)}); they are BSD200 images"
        )
    return centre_crop(sorted(pairs, key=lambda p: p.name), crop, scale)


def holdout_split(train_specs: tuple[str, ...], holdout: tuple[str, ...], where: Path) -> tuple[list[str], str]:
    """Training folders without the holdout images, and a folder of the holdout: symbolic links, no copies."""
    train_dirs, val_dir = [], where / "val"
    val_dir.mkdir(parents=True, exist_ok=True)
    for spec in train_specs:
        name, _, path = spec.rpartition("=")
        target = where / (name or Path(path).name)
        target.mkdir(parents=True, exist_ok=True)
        for image in list_images(path):
            _link(image.resolve(), (val_dir if image.name in holdout else target) / image.name)
        train_dirs.append(str(target))
    if len(list(val_dir.iterdir())) != len(holdout):
        raise DataError(f"{val_dir}: expected the {len(holdout)} holdout images in the training folders")
    return train_dirs, str(val_dir)


def _link(source: Path, link: Path) -> None:
    """``link`` → ``source``, created or accepted as it is: several processes (shards of one experiment) prepare the
    same split at once, so an existing identical link is success, and one pointing elsewhere is an error."""
    try:
        link.symlink_to(source)
    except FileExistsError:
        if link.resolve() != source:
            raise DataError(f"{link}: exists and points to {link.resolve()}, not {source}; use a new folder") from None


# Images never trained on, whatever the recipe (``load_training_pairs`` drops them by name). Each near-duplicate
# entry names its evidence; ``darts-sr check-overlap`` finds them (and a test pins that it finds no others).
NEAR_DUPLICATES: dict[str, str] = {
    # Set5's woman.png is this BSD200 image scaled by 0.72 and cropped: 36.1 dB PSNR once aligned (NCC 0.97; the next
    # best pair of any reported image with any training image is 25 dB). Training on it put a Set5 image in every
    # training set; the Set5 numbers recorded before its exclusion are not clean.
    "302003": "BSD200 302003.png is Set5 woman.png (x0.72, cropped, 36.1 dB aligned)",
}


def training_exclusions() -> dict[str, str]:
    """Image stem → why it never trains: the holdout (the slice checkpoints are chosen on) and near-duplicates of
    reported images. The search's architecture half is then a slice of the same clean pool."""
    held = {Path(name).stem: "holdout (validation slice)" for name in HOLDOUT}
    return held | NEAR_DUPLICATES


def image_stems(spec: str) -> tuple[str, list[str]]:
    """A dataset spec's name (NAME of NAME=PATH, else the folder's) and the sorted stems of its images."""
    name, _, path = spec.rpartition("=")
    if path == "builtin":
        return "builtin", sorted(BUILTIN_SPLITS["train"])
    folder = Path(path)
    folder = folder / "HR" if (folder / "HR").is_dir() else folder
    return name or Path(path).name, sorted(p.stem for p in list_images(folder))


def names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]


def data_identity(train_specs: tuple[str, ...], excluded: dict[str, str] | None = None) -> dict[str, str]:
    """What a training pool is, independent of where it lies on this machine: per spec its name and a hash of the
    stems that train (``training_exclusions()`` left out, or ``excluded`` for describing older records)."""
    excluded = training_exclusions() if excluded is None else excluded
    out = {}
    for spec in train_specs:
        name, stems = image_stems(spec)
        out[name] = names_digest([s for s in stems if s not in excluded])
    return out
