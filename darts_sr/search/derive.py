"""Derive a genotype again from a finished (or interrupted) search, by another rule, without searching again.

    darts-sr derive runs/search --method perturbation --out runs/search/genotype_perturbation.json

Loads the run's config and last checkpoint (weights and architecture parameters as the search left them), derives
with ``--method`` (``argmax``: the most probable op and input per node; ``perturbation``: DARTS-PT's selection by
measurement, ``GeneratorSupernet.perturbation_scores``), within the run's MACs window and skip cap, and writes the
genotype (atomically) with its diagnostics on stdout. The run folder is not changed unless ``--out`` points into it.

``--target-ms`` / ``--target-macs`` derive the same supernet at another target (the run's tolerance and unit): the
way to close a latency search's loop when its table's prediction misses the machine. Time the derived network
(``darts-sr latency-check --reference tpsr``), then derive again at ``target * target / measured``:

    darts-sr derive runs/latency_search --method argmax --target-ms 81.3 --out runs/latency_search/retargeted.json
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import ConfigError, SearchConfig, load_config
from darts_sr.nets.genotype import save_genotype
from darts_sr.nets.networks import LatencyWindow, MacsWindow, generator_macs, generator_params
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
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-ms", type=float, help="derive at this latency instead (a latency search's unit)")
    target.add_argument("--target-macs", type=float, help="derive at these MACs@720p instead (a MACs search's unit)")
    return p.parse_args(argv)


def derive_from_run(
    run: Path,
    method: str,
    batches: int | None = None,
    device: str | None = None,
    target_ms: float | None = None,
    target_macs: float | None = None,
):
    """``(genotype, report)`` of ``run``'s last checkpoint derived with ``method``, in the run's window or one around
    another target in the run's unit (``target_ms`` for a latency search, ``target_macs`` for a MACs search)."""
    if not (run / run_files.GENERATOR_SEARCH.checkpoint).is_file():
        raise RunFolderError(f"{run}: no {run_files.GENERATOR_SEARCH.checkpoint} to derive from")
    config = load_config(SearchConfig, run / run_files.CONFIG)
    if batches is not None:
        config = replace(config, derive=replace(config.derive, batches=batches))
    if device is not None:
        config = replace(config, run=replace(config.run, device=device))
    unit = config.cost.unit
    if (target_ms is not None and unit != "latency") or (target_macs is not None and unit != "macs"):
        given = "--target-ms" if target_ms is not None else "--target-macs"
        raise ConfigError(f"{given}: {run} searched with cost.unit {unit}; give its target in that unit")
    target = target_ms if target_ms is not None else target_macs
    if target is not None and not target > 0:
        raise ConfigError(f"derive target {target}: must be positive")
    search = GeneratorSearch(config, run, resume=True)
    window = None
    if target is not None:
        band = (LatencyWindow if unit == "latency" else MacsWindow)(target, config.cost.tolerance)
        window = (band.low, band.high)
    return search.derive(method, window=window)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)

    def derive() -> None:
        genotype, report = derive_from_run(
            args.run, args.method, args.batches, args.device, args.target_ms, args.target_macs
        )
        if args.out is not None:
            save_genotype(genotype, args.out)
        facts = {
            "method": args.method,
            "params": generator_params(genotype),
            "macs_720p": generator_macs(genotype),
            **search_diagnostics(genotype),
            "window_changes": report["window_changes"],
            "cost": report["cost"],  # in the run's cost.unit: MACs, or ms as its latency table predicts them
            "target": args.target_ms if args.target_ms is not None else args.target_macs,  # None: the run's
            "genotype": genotype.to_dict(),
        }
        print(json.dumps(facts))

    return cli.run(derive)


if __name__ == "__main__":
    raise SystemExit(main())
