"""Baselines a practitioner would try before NAS, each a genotype of the search space inside the same MACs window as
the searched ones, so a comparison retrains them exactly like the searched genotypes.

    darts-sr baselines --out results/baselines                  # shallow_wide, deep_chain, most_params (+ JSON)
    darts-sr baselines --out results/baselines --best-of-k 20 --proxy-config compare_cpu \\
        --proxy-set pixel_phase.steps=300 --proxy-set gan_phase.steps=0    # best of k random by a short training

- ``shallow_wide``: every node reads the stem and feeds the output (depth 1), as many nodes as fit;
- ``deep_chain``: a plain chain, each node reading the last, the last one the output (an FSRCNN/ESPCN-like body);
- ``most_params``: capacity only, the most parameters among ``--samples`` uniform genotypes in the window;
- ``best_of_<k>``: k uniform genotypes in the window, each trained with a short proxy recipe (trials, recorded under
  ``<out>/proxy/``), the best on the holdout kept: what a search must beat for its cost (the proxy's minutes are in
  its records).

For the two structures the ops are chosen by rule, not by data: the most nodes that fit the window, then the
multiset of ops nearest the target MACs (ties: more parameters, then the op table's order).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import sys
from pathlib import Path

from darts_sr import cli
from darts_sr.config import ConfigError, SupernetConfig, TrainConfig, load_config
from darts_sr.evaluation.scoring import Evaluator
from darts_sr.io import atomic_write_text
from darts_sr.nets.genotype import GeneratorGenotype, Node, save_genotype
from darts_sr.nets.networks import MacsWindow, generator_macs, generator_params
from darts_sr.search.sampling import matched_random_genotypes, sample_genotype
from darts_sr.training.trials import HOLDOUT_VAL, Planned, Trial, run_trials

log = logging.getLogger(__name__)


def _by_rule(wiring: str, window: MacsWindow, ops: tuple[str, ...], nodes: int, channels: int, scale: int):
    """The genotype of ``wiring`` (``stem``: all nodes on the stem, all outputs; ``chain``: node k reads k-1, the last
    is the output) with the most nodes inside ``window``, then the op multiset nearest the target (ties: more
    parameters)."""
    convs = [o for o in ops if o not in ("skip", "none")]
    for n in range(nodes, 0, -1):
        best = None
        for multiset in itertools.combinations_with_replacement(convs, n):
            if wiring == "stem":
                genotype = GeneratorGenotype(
                    tuple(Node(o, 0) for o in multiset), tuple(range(1, n + 1)), channels, scale
                )
            else:
                genotype = GeneratorGenotype(tuple(Node(o, k) for k, o in enumerate(multiset)), (n,), channels, scale)
            if window.contains(generator_macs(genotype)):
                key = (abs(generator_macs(genotype) - window.target_macs), -generator_params(genotype))
                if best is None or key < best[0]:
                    best = (key, genotype)
        if best is not None:
            return best[1]
    raise ConfigError(f"no {wiring} genotype of at most {nodes} nodes within {window}")


def shallow_wide(window: MacsWindow, ops: tuple[str, ...], nodes: int = 10, channels: int = 16, scale: int = 4):
    return _by_rule("stem", window, ops, nodes, channels, scale)


def deep_chain(window: MacsWindow, ops: tuple[str, ...], nodes: int = 10, channels: int = 16, scale: int = 4):
    return _by_rule("chain", window, ops, nodes, channels, scale)


def most_params(window: MacsWindow, samples: int, seed: int, **space) -> GeneratorGenotype:
    """The most parameters among ``samples`` uniform genotypes in ``window`` (ties: the first drawn)."""
    rng = random.Random(seed)
    drawn = [sample_genotype(rng, macs_window=window, **space) for _ in range(samples)]
    return max(drawn, key=generator_params)


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the baselines' genotype files")
    p.add_argument("--target-macs", type=float, help="MACs@720p (default: TPSR's at the scale)")
    p.add_argument("--tolerance", type=float, default=0.03, help="window around the target (default ±3%%)")
    p.add_argument("--samples", type=int, default=200, help="uniform samples for most_params (200)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed (1: not compare's seed 0, so no overlap)")
    p.add_argument("--best-of-k", type=int, default=0, metavar="K", help="also the best of K by a proxy training")
    p.add_argument("--proxy-config", metavar="PRESET|FILE.yaml", help="the proxy's recipe (with --best-of-k)")
    p.add_argument("--proxy-set", action="append", default=[], metavar="KEY=VALUE", help="proxy recipe override")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="proxy trainings i, i+N, ... (N processes share)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: baselines(args), "; rerun the same command to continue")


def baselines(args: argparse.Namespace) -> None:
    s = SupernetConfig()
    ops = tuple(o for o in s.ops if o != "none")
    space = {"ops": ops, "nodes": s.nodes, "channels": s.channels, "scale": 4, "input_window": s.input_window,
             "max_skip_nodes": s.max_skip_nodes}  # fmt: skip
    window = MacsWindow.around(args.target_macs, 4, args.tolerance)
    found = {
        "shallow_wide": shallow_wide(window, ops, s.nodes, s.channels),
        "deep_chain": deep_chain(window, ops, s.nodes, s.channels),
        "most_params": most_params(window, args.samples, args.seed, **space),
    }
    if args.best_of_k:
        found[f"best_of_{args.best_of_k}"] = best_of_k(args, window, space)
    for name, genotype in found.items():
        save_genotype(genotype, args.out / f"{name}.json")
        log.info("%s: %d params, %.3f GMACs@720p", name, generator_params(genotype), generator_macs(genotype) / 1e9)


def best_of_k(args: argparse.Namespace, window: MacsWindow, space: dict) -> GeneratorGenotype:
    """K uniform genotypes in the window, each a trial of the proxy recipe (records in ``<out>/proxy``); the best
    holdout Y-PSNR wins."""
    if not args.proxy_config:
        raise ConfigError("--best-of-k needs --proxy-config (e.g. compare_cpu with a short pixel phase)")
    recipe = load_config(TrainConfig, cli.resolve_config(args.proxy_config), args.proxy_set)
    if recipe.data.val != HOLDOUT_VAL:
        raise ConfigError(f"{args.proxy_config}: data.val must be {HOLDOUT_VAL}: the proxy chooses on it")
    candidates = matched_random_genotypes(args.best_of_k, window, args.seed, **space)
    planned = [Planned(f"candidate_{i}_seed0", Trial(g, recipe), {"model": f"candidate_{i}", "group": "proxy"})
               for i, g in enumerate(candidates)]  # fmt: skip
    evaluator = Evaluator([], recipe.data.scale, cli.resolve_device(recipe.run.device))
    records = run_trials(planned, args.out / "proxy", Path("runs") / "baselines_proxy", evaluator, args.shard)
    if len(records) < len(planned):
        raise ConfigError(f"{len(records)} of {len(planned)} proxy trainings in this shard; rerun with --shard 0/1")
    scores = [r.psnr(HOLDOUT_VAL) for r in records]
    best = max(range(len(scores)), key=scores.__getitem__)
    atomic_write_text(args.out / "proxy" / "choice.txt", f"candidate_{best}: holdout {scores[best]:.3f} dB\n")
    return candidates[best]


if __name__ == "__main__":
    sys.exit(main())
