"""Time of one NIQE evaluation (evaluation/niqe.py) on a 500x480 image: Set14's baboon, or noise if it is absent.

    .venv/bin/python bench/niqe_speed.py [--image PATH] [--repeats 20] [--threads 1]

Prints the median and best wall time of ``niqe(img)`` after one warm-up call (which also loads the pristine
model), and the load average, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_IMAGE = REPO.parent / "shared" / "datasets" / "Set14" / "HR" / "baboon.png"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="an RGB image (default: Set14 baboon)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (set before numpy loads)")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    from PIL import Image

    from darts_sr.evaluation.niqe import niqe

    if args.image.is_file():
        img, what = np.asarray(Image.open(args.image).convert("RGB")), str(args.image)
    else:
        img, what = np.random.default_rng(0).integers(0, 256, (480, 500, 3), dtype=np.uint8), "noise"
    score = niqe(img)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        niqe(img)
        times.append(time.perf_counter() - start)
    times.sort()
    h, w = img.shape[:2]
    print(f"image {what} ({w}x{h}), NIQE {score:.6f}, threads {args.threads}")
    print(f"niqe(): median {1e3 * times[len(times) // 2]:.1f} ms, best {1e3 * times[0]:.1f} ms over {args.repeats}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
