"""Minutes per TPSR-sized model for each recipe of the calibration sweep, on this machine.

    OMP_NUM_THREADS=1 python bench/recipe_cost.py [--steps 300] [--recipe NAME ...]

The recipes are read from ``scripts/calibration_sweep.sh`` (its ``RECIPE`` table of overrides of
``configs/compare_cpu_short.yaml``, pixel phase only), so the sweep and this benchmark cannot drift apart. For each,
``tpsr``
is retrained for ``--steps`` steps with one thread and no validation, the median step time of the last half is
taken, and the recipe's full length is extrapolated (``steps x step time``; the validations, a few seconds each,
are left out). Run it on a quiet machine: the load average before and after is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import time
from pathlib import Path

import torch

from darts_sr.config import TrainConfig, load_config
from darts_sr.data import PatchSampler, load_training_pairs
from darts_sr.losses import GeneratorLoss
from darts_sr.nets.genotype import TPSR
from darts_sr.nets.networks import Generator
from darts_sr.training.gan import gan_step
from darts_sr.training.runner import NonFiniteGuard

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "scripts" / "calibration_sweep.sh"


def sweep_recipes() -> dict[str, list[str]]:
    """``{name: overrides}`` from the sweep script's ``RECIPE`` table."""
    table = re.search(r"declare -A RECIPE=\((.*?)\n\)", SWEEP.read_text(), re.S).group(1)
    return {m.group(1): shlex.split(m.group(2)) for m in re.finditer(r'\[(\w+)\]="([^"]*)"', table)}


def step_seconds(recipe: TrainConfig, steps: int) -> float:
    sampler = PatchSampler(load_training_pairs(recipe.data.train, 4), recipe.data.patch_size, 4, skip_small=True)
    generator = Generator(TPSR)
    optimizer = torch.optim.Adam(generator.parameters(), lr=recipe.pixel_phase.lr)
    criterion = GeneratorLoss.from_config(recipe.pixel_phase.loss)
    rng, guard, times = torch.Generator().manual_seed(0), NonFiniteGuard(5), []
    params = list(generator.parameters())
    for step in range(steps):
        lq, gt = sampler.sample(recipe.data.batch_size, rng)
        started = time.perf_counter()
        gan_step(generator, None, lq, gt, criterion, optimizer, None, params, guard, step)
        times.append(time.perf_counter() - started)
    return statistics.median(times[steps // 2 :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--recipe", action="append", help="only these recipes (default: all of the sweep)")
    args = p.parse_args()
    torch.set_num_threads(1)
    recipes = sweep_recipes()
    print(f"load average before: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    for name in args.recipe or recipes:
        overrides = ["gan_phase.steps=0", "data.skip_small=true", *recipes[name]]
        recipe = load_config(TrainConfig, ROOT / "configs" / "compare_cpu_short.yaml", overrides)
        seconds = step_seconds(recipe, args.steps)
        minutes = seconds * recipe.pixel_phase.steps / 60
        print(f"{name}: {1000 * seconds:.1f} ms/step x {recipe.pixel_phase.steps} steps = {minutes:.1f} min per tpsr")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
