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

``--land`` closes that loop here: derive at the run's target, time the derived network end to end with the run's
table's backend and threads (the median of ``--timings`` separate timings, each the median of the table's repeats),
and while it measures outside ``--land-tolerance`` of the target derive again at ``derive_target * target /
measured``, for at most ``--land-rounds`` derivations (fewer when a retarget gives a network already timed). Writes
the network that measured nearest the target, and with ``--json`` every round (target derived at, predicted and
measured ms, the load average): time on a quiet machine.

    darts-sr derive runs/latency_search --method argmax --land --out G.json --json landing.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
from dataclasses import replace
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import ConfigError, SearchConfig, load_config
from darts_sr.evaluation.latency import LatencyTable, measure_ms, predict_ms, warn_if_loaded
from darts_sr.io import atomic_write_text
from darts_sr.nets.genotype import save_genotype
from darts_sr.nets.networks import REFERENCE_LR_SIZE, LatencyWindow, MacsWindow, generator_macs, generator_params
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
    landing = p.add_argument_group("landing a latency search on this machine's measured ms")
    landing.add_argument("--land", action="store_true", help="time and derive again until it measures on target")
    landing.add_argument("--land-tolerance", type=float, default=0.05, help="measured within target * (1 +- this)")
    landing.add_argument("--land-rounds", type=int, default=4, help="derivations at most (4)")
    landing.add_argument("--timings", type=int, default=3, help="end-to-end timings per round, median kept (3)")
    landing.add_argument("--json", type=Path, help="with --land: write every round as JSON")
    return p.parse_args(argv)


def resumed_search(run: Path, batches: int | None = None, device: str | None = None) -> GeneratorSearch:
    """``run``'s search as its last checkpoint left it (weights and architecture parameters), ready to derive."""
    if not (run / run_files.GENERATOR_SEARCH.checkpoint).is_file():
        raise RunFolderError(f"{run}: no {run_files.GENERATOR_SEARCH.checkpoint} to derive from")
    config = load_config(SearchConfig, run / run_files.CONFIG)
    if batches is not None:
        config = replace(config, derive=replace(config.derive, batches=batches))
    if device is not None:
        config = replace(config, run=replace(config.run, device=device))
    return GeneratorSearch(config, run, resume=True)


def derive_at(search: GeneratorSearch, method: str, target_ms: float | None = None, target_macs: float | None = None):
    """``(genotype, report)`` derived with ``method`` in the run's window or one around another target in the run's
    unit (``target_ms`` for a latency search, ``target_macs`` for a MACs search)."""
    cost = search.cfg.cost
    if (target_ms is not None and cost.unit != "latency") or (target_macs is not None and cost.unit != "macs"):
        given = "--target-ms" if target_ms is not None else "--target-macs"
        raise ConfigError(
            f"{given}: {search.run_dir} searched with cost.unit {cost.unit}; give its target in that unit"
        )
    target = target_ms if target_ms is not None else target_macs
    if target is not None and not target > 0:
        raise ConfigError(f"derive target {target}: must be positive")
    window = None
    if target is not None:
        band = (LatencyWindow if cost.unit == "latency" else MacsWindow)(target, cost.tolerance)
        window = (band.low, band.high)
    return search.derive(method, window=window)


def derive_from_run(
    run: Path,
    method: str,
    batches: int | None = None,
    device: str | None = None,
    target_ms: float | None = None,
    target_macs: float | None = None,
):
    """``(genotype, report)`` of ``run``'s last checkpoint (``resumed_search``, ``derive_at``)."""
    return derive_at(resumed_search(run, batches, device), method, target_ms, target_macs)


def land(
    run: Path,
    method: str,
    tolerance: float = 0.05,
    rounds: int = 4,
    timings: int = 3,
    batches: int | None = None,
    device: str | None = None,
    start_ms: float | None = None,
):
    """``(genotype, report, landing)``: the derived network that measured nearest the run's ``cost.target_ms`` on
    this machine, deriving again at ``derive_target * target / measured`` while it measures outside ``tolerance``
    (at most ``rounds`` derivations, the first at ``start_ms``, default the target). ``landing`` holds every round."""
    if not 0 < tolerance < 1 or rounds < 1 or timings < 1:
        raise ConfigError("--land-tolerance must be within (0, 1), --land-rounds and --timings at least 1")
    config = load_config(SearchConfig, run / run_files.CONFIG)
    if config.cost.unit != "latency":
        raise ConfigError(f"--land: {run} searched with cost.unit {config.cost.unit}; landing needs a latency search")
    goal = config.cost.target_ms
    table = LatencyTable.load(config.cost.latency_table)
    prov = table.provenance
    search = resumed_search(run, batches, device)  # loaded once: each round only derives again
    target, history, timed = start_ms or goal, [], {}
    for _ in range(rounds):
        genotype, report = derive_at(search, method, target_ms=target)
        if genotype.to_json() in timed:
            log.info("derived at %.1f ms: the network of an earlier round; stopping", target)
            break
        load_before = os.getloadavg()
        warn_if_loaded(load_before, prov.threads)
        ms = [
            measure_ms(genotype, prov.backend, prov.threads, None, prov.repeats, prov.warmup, prov.device)
            for _ in range(timings)
        ]
        measured = statistics.median(ms)
        timed[genotype.to_json()] = (genotype, report)
        history.append(
            {
                "derive_target_ms": target,
                "predicted_ms": predict_ms(genotype, table, REFERENCE_LR_SIZE[genotype.scale]),  # as the search
                "timings_ms": ms,
                "measured_ms": measured,
                "error": measured / goal - 1,
                "load_before": list(load_before),
                "load_after": list(os.getloadavg()),
                "genotype": genotype.to_dict(),
            }
        )
        log.info(
            "derived at %.1f ms: predicted %.1f, measured %.1f ms (%+.1f%% vs %g)",
            target,
            history[-1]["predicted_ms"],
            measured,
            100 * (measured / goal - 1),
            goal,
        )
        if abs(measured / goal - 1) <= tolerance:
            break
        target = target * goal / measured
    best = min(history, key=lambda h: abs(h["error"]))
    genotype, report = list(timed.values())[history.index(best)]
    landing = {
        "target_ms": goal,
        "tolerance": tolerance,
        "landed": abs(best["error"]) <= tolerance,
        "table": config.cost.latency_table,
        "backend": prov.backend,
        "threads": prov.threads,
        "device": prov.device,
        "rounds": history,
        "chosen_round": history.index(best),
    }
    return genotype, report, landing


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)

    def derive() -> None:
        landing = None
        if args.land:
            if args.target_macs is not None:
                raise ConfigError("--land: a latency search lands in ms; --target-ms sets the first derivation")
            genotype, report, landing = land(
                args.run,
                args.method,
                args.land_tolerance,
                args.land_rounds,
                args.timings,
                args.batches,
                args.device,
                args.target_ms,
            )
            if args.json is not None:
                atomic_write_text(args.json, json.dumps(landing, indent=2) + "\n")
        else:
            if args.json is not None:
                raise ConfigError("--json: only with --land")
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
        if landing is not None:
            chosen = landing["rounds"][landing["chosen_round"]]
            facts |= {"target": chosen["derive_target_ms"], "measured_ms": chosen["measured_ms"]}
            facts |= {"landed": landing["landed"], "rounds": len(landing["rounds"])}
        print(json.dumps(facts))

    return cli.run(derive)


if __name__ == "__main__":
    raise SystemExit(main())
