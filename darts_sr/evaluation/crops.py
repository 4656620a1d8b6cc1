"""Side-by-side crops of what several generators make of the same images: HR, bicubic, then one column per model.

darts-sr crops HOLDOUT/108082.png HOLDOUT/253055.png --model pixel=runs/a/model_pixel.pt \\
    --model gan=runs/a/model_gan.pt --model TPSR_D2=../shared/anchors/tpsr/weights/TPSR_D2X4.pt --genotype tpsr \\
    -o docs/gan_crops.png

A metric such as NIQE rewards hallucinated texture and some artefacts, so a perceptual result is looked at, not only
scored. Each image is downscaled by the MATLAB-compatible bicubic (as training and evaluation make LR), every model
upscales the same LR, and one window per image is cut from every output: by default the most textured one (largest
mean gradient magnitude of the HR luminance), where perceptual losses differ most, or the one ``--box Y,X`` names.
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from darts_sr import cli
from darts_sr.config import ConfigError
from darts_sr.data import DataError, bicubic_downscale, bicubic_upscale, crop_to_multiple, load_image
from darts_sr.evaluation.inference import upscale
from darts_sr.io import atomic_write_bytes
from darts_sr.nets.networks import Generator, load_generator

log = logging.getLogger("crops")

LABEL_HEIGHT = 14  # px of the caption strip above each crop
GAP = 4  # px between crops


def most_textured_box(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``-px square with the largest mean gradient magnitude of the luminance."""
    h, w = hr.shape[:2]
    if h < size or w < size:
        raise DataError(f"image of {h}x{w} px is smaller than the {size}-px crop")
    y = hr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    energy = np.zeros_like(y)
    energy[:, 1:] += np.abs(np.diff(y, axis=1))
    energy[1:, :] += np.abs(np.diff(y, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    )  # sums[i, j] = energy in the window with corner (i, j)
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(i), int(j)


def crop_grid(
    images: list[tuple[str, np.ndarray]],
    models: list[tuple[str, Generator]],
    scale: int,
    size: int = 96,
    zoom: int = 2,
    boxes: list[tuple[int, int] | None] | None = None,
) -> np.ndarray:
    """Rows: images; columns: HR, bicubic, each model. Crops are ``size`` HR px, enlarged ``zoom``x by pixel
    repetition so that texture stays visible. Returns a uint8 (H, W, 3) array."""
    boxes = boxes or [None] * len(images)
    labels = ["HR", "bicubic"] + [label for label, _ in models]
    cell = size * zoom
    grid = np.full((len(images) * (cell + LABEL_HEIGHT + GAP), len(labels) * (cell + GAP), 3), 255, dtype=np.uint8)
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, ((name, hr), box) in enumerate(zip(images, boxes)):
        hr = crop_to_multiple(hr, scale)
        lr = bicubic_downscale(hr, scale)
        try:
            y, x = box if box is not None else most_textured_box(hr, size)
        except DataError as e:
            raise DataError(f"{name}: {e}") from None
        if y < 0 or x < 0 or y + size > hr.shape[0] or x + size > hr.shape[1]:
            raise ConfigError(f"{name}: box {y},{x} with side {size} leaves the {hr.shape[0]}x{hr.shape[1]} image")
        outputs = [hr, bicubic_upscale(lr, scale)]
        with torch.no_grad():
            outputs += [upscale(model, lr, tile=None) for _, model in models]
        top = row * (cell + LABEL_HEIGHT + GAP)
        for col, (label, out) in enumerate(zip(labels, outputs)):
            patch = out[y : y + size, x : x + size].repeat(zoom, axis=0).repeat(zoom, axis=1)
            left = col * (cell + GAP)
            canvas.paste(Image.fromarray(patch), (left, top + LABEL_HEIGHT))
            caption = f"{name} {y},{x}" if col == 0 else label
            draw.text((left + 2, top + 1), caption, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _model_spec(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=WEIGHTS")
    return label, path


def _box(text: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not Y,X (HR pixels)") from None
    return y, x


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, metavar="HR_IMAGE", help="high-resolution images, one row each")
    p.add_argument(
        "--model", action="append", required=True, type=_model_spec, metavar="LABEL=WEIGHTS", help="repeatable"
    )
    p.add_argument("--genotype", help="genotype of bare state dicts (tpsr or JSON); our checkpoints carry theirs")
    p.add_argument("--size", type=int, default=96, help="crop side in HR pixels (default 96)")
    p.add_argument("--zoom", type=int, default=2, help="pixel repetition of each crop (default 2)")
    p.add_argument("--box", action="append", type=_box, metavar="Y,X", help="crop corner per image, in order")
    p.add_argument("-o", "--out", required=True, type=Path, help="output PNG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    cli.setup_logging()

    def body() -> None:
        if args.box and len(args.box) != len(args.images):
            raise ConfigError(f"--box: {len(args.box)} given for {len(args.images)} images (one per image, or none)")
        if args.size < 8 or args.zoom < 1:
            raise ConfigError("--size must be >= 8 and --zoom >= 1")
        models = [(label, load_generator(path, args.genotype).eval()) for label, path in args.model]
        scales = {m.genotype.scale for _, m in models}
        if len(scales) != 1:
            raise ConfigError(f"--model: the generators upscale by different factors {sorted(scales)}")
        images = [(path.stem, load_image(path)) for path in args.images]
        grid = crop_grid(images, models, scales.pop(), args.size, args.zoom, args.box)
        buffer = io.BytesIO()
        Image.fromarray(grid).save(buffer, format="PNG")
        atomic_write_bytes(args.out, buffer.getvalue())
        log.info("wrote %s (%d images x %d columns)", args.out, len(images), len(models) + 2)

    return cli.run(body)
