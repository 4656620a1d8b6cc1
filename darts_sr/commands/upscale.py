"""Super-resolve images with a trained generator.

darts-sr upscale photo.png -o photo_x4.png --model runs/train/model_gan.pt
darts-sr upscale LR_FOLDER more.png -o SR_FOLDER --model tpsr --weights TPSR_NOGANX4.pt --device auto

IN is an image file or a folder of images (not searched recursively). With one input image and an OUT that ends in
an image extension (.png, .jpg, .jpeg, .bmp), OUT is that file; otherwise OUT is a folder receiving <name>.png per
image. The pixels are those `darts-sr evaluate --save-images` writes. Large images run tile by tile (--tile LR pixels
per side, with enough context that the result equals one whole-image pass), so memory stays bounded.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from pathlib import Path

import torch

from darts_sr import cli
from darts_sr.config import ConfigError
from darts_sr.data import IMAGE_EXTENSIONS, DataError, list_images, load_image
from darts_sr.evaluation.inference import DEFAULT_TILE, upscale
from darts_sr.io import atomic_save_png, atomic_write_bytes
from darts_sr.nets.genotype import BUILTIN_GENERATORS
from darts_sr.nets.networks import Generator, load_generator

log = logging.getLogger("upscale")

PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}


def _tile(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tile size (LR pixels; 0 = whole images)")
    return value


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="output image file or folder")
    p.add_argument(
        "--model",
        required=True,
        metavar="CKPT|GENOTYPE",
        help="our checkpoint (it carries its genotype), or a genotype (tpsr or JSON) whose weights --weights gives",
    )
    p.add_argument("--weights", metavar="FILE", help="weights for a --model genotype: a TPSR state dict or ours")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--tile", type=_tile, default=DEFAULT_TILE, help=f"LR tile side, 0 = whole images (default {DEFAULT_TILE})"
    )
    return p.parse_args(argv)


def collect_inputs(specs: list[str]) -> list[Path]:
    """The image files named by ``specs`` (files, or folders' images), in order."""
    files = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files += list_images(path)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def output_paths(files: list[Path], out: Path) -> list[Path]:
    """One output per input: ``out`` itself for one image and an image-file ``out``, else ``out/<stem>.png``."""
    if out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        if len(files) != 1:
            raise DataError(f"{out}: one output file for {len(files)} images; give a folder as -o")
        outputs = [out]
    else:
        outputs = [out / f"{f.stem}.png" for f in files]
    seen: dict[Path, Path] = {}
    inputs = {f.resolve() for f in files}
    for source, target in zip(files, outputs):
        if target.resolve() in inputs:
            raise DataError(f"{target}: the output would overwrite an input image")
        if target in seen:
            raise DataError(f"{seen[target]} and {source} would both be written to {target}")
        seen[target] = source
    return outputs


def load_model(args: argparse.Namespace) -> Generator:
    if args.weights:
        return load_generator(args.weights, args.model)
    if args.model in BUILTIN_GENERATORS or Path(args.model).suffix.lower() == ".json":
        raise ConfigError(f"--model {args.model} is a genotype: give its weights with --weights FILE")
    return load_generator(args.model)


def save_image(path: Path, image) -> None:
    """PNG exactly as evaluation writes it; other formats by extension (JPEG at quality 95)."""
    fmt = PIL_FORMATS.get(path.suffix.lower(), "PNG")
    if fmt == "PNG":
        atomic_save_png(path, image)
        return
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    atomic_write_bytes(path, buffer.getvalue())


def run(args: argparse.Namespace) -> str:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    started = time.time()
    device = cli.resolve_device(args.device)
    files = collect_inputs(args.inputs)
    outputs = output_paths(files, args.out)
    model = load_model(args).to(device).eval()
    tile = args.tile or None
    with logging_redirect_tqdm(), tqdm(total=len(files), desc="upscale", unit="image", dynamic_ncols=True) as bar:
        for source, target in zip(files, outputs):
            bar.set_postfix_str(source.name, refresh=False)
            try:
                sr = upscale(model, load_image(source), tile=tile)
            except torch.OutOfMemoryError:
                raise ConfigError(f"{source}: out of memory on {device}; use a smaller --tile") from None
            save_image(target, sr)
            bar.update(1)
    where = outputs[0] if len(outputs) == 1 else args.out
    seconds = time.time() - started
    return f"wrote {len(outputs)} image(s) to {where}: x{model.genotype.scale} on {device}, {seconds:.1f} s"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: print(run(args)))
