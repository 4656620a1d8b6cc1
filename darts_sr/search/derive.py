"""Derive a genotype again from a finished (or interrupted) search, by another rule, without searching again.

    darts-sr derive runs/search --method perturbation --out runs/search/genotype_perturbation.json

Loads the run's config and last checkpoint (weights and architecture parameters as the search left them), derives
with ``--method`` (``argmax``: the most probable op and input per node; ``perturbation``: DARTS-PT's selection by
measurement, ``GeneratorSupernet.perturbation_scores``), within the run's MACs window and skip cap, and writes the
genotype (atomically) with its diagnostics on stdout. The run folder is not changed unless ``--out`` points into it.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import SearchConfig, load_config
from darts_sr.nets.genotype import save_genotype
from darts_sr.nets.networks import generator_macs, generator_params
from darts_sr.search.generator_stage import GeneratorSearch, search_diagnostics
from darts_sr.training.runner import RunFolderError

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog or "darts-sr derive", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a search run folder (its config.yaml and checkpoint)")
    p.add_argument("--method", choices=("argmax", "perturbation"), default="perturbation")
    p.add_argument("--batches", type=int, help="perturbation: fixed validation batches (derive.batches)")
    p.add_argument("--out", type=Path, help="genotype JSON to write (default: print only)")
    p.add_argument("--device", help="cpu, cuda, ... (default: the run's)")
    return p.parse_args(argv)


def derive_from_run(run: Path, method: str, batches: int | None = None, device: str | None = None):
    """``(genotype, report)`` of ``run``'s last checkpoint derived with ``method``."""
    if not (run / run_files.GENERATOR_SEARCH.checkpoint).is_file():
        raise RunFolderError(f"{run}: no {run_files.GENERATOR_SEARCH.checkpoint} to derive from")
    config = load_config(SearchConfig, run / run_files.CONFIG)
    if batches is not None:
        config = replace(config, derive=replace(config.derive, batches=batches))
    if device is not None:
        config = replace(config, run=replace(config.run, device=device))
    search = GeneratorSearch(config, run, resume=True)
    return search.derive(method)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)

    def derive() -> None:
        genotype, report = derive_from_run(args.run, args.method, args.batches, args.device)
        if args.out is not None:
            save_genotype(genotype, args.out)
        facts = {
            "method": args.method,
            "params": generator_params(genotype),
            "macs_720p": generator_macs(genotype),
            **search_diagnostics(genotype),
            "window_changes": report["window_changes"],
            "cost": report["cost"],  # in the run's cost.unit: MACs, or ms as its latency table predicts them
            "genotype": genotype.to_dict(),
        }
        print(json.dumps(facts))

    return cli.run(derive)


if __name__ == "__main__":
    raise SystemExit(main())
