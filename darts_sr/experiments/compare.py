"""The evidence: searched genotypes against random ones of matched cost (MACs, or milliseconds on a device) and TPSR,
each retrained under one recipe with several training seeds, with statistics that say whether the search beat random
sampling.

    darts-sr compare --search-runs runs/search_s0 runs/search_s1 --random 20 --config compare_cpu \\
        --seeds tpsr=3 --seeds searched_0=3 --out results/compare_cpu
    darts-sr compare --report results/compare_cpu            # tables, statistics and plot from the records alone

Models: ``searched_<i>`` (each ``--search-runs`` folder's ``genotype_generator.json``, then each ``--searched``
file), ``tpsr``, and ``random_<i>``, drawn uniformly from the searched genotypes' search space (same ops, nodes and
skip cap) within ``--tolerance`` (3%) of ``--target-macs`` (default: the searched genotypes' mean MACs) by rejection.
Each is retrained with seeds 0..R-1 (``--train-seeds R``, per model ``--seeds NAME=R``). ``--baseline FILE``
adds ``baseline_<stem>`` genotypes (``darts-sr baselines``). ``experiment.json`` keeps what choosing each genotype
cost (``choice_s``: a search run's wall time, a best-of-k baseline's proxy trainings, 0 for a draw or a rule), which
the report's cost table sets beside the retraining minutes.

At matched latency instead (``--target-ms MS --latency-table T.json``): the random genotypes are drawn uniformly
within ``MS · (1 ± tolerance)`` (5%) as the table predicts them (``predict_ms`` at the scale's 720p LR size, the
table's correction where it marks it used); the table must cover every model's ops, channels and that LR size.
``experiment.json`` records the window, the table (path, SHA-256, provenance: backend, threads, CPU, load) and each
model's predicted ms. ``--confirm-timing`` also times every model end to end here (``measure_many`` with the table's
backend, threads, repeats and warm-up) and redraws the random genotypes measured outside the window (the next ones of
the same seed), recording measured ms and the load average; without it ``experiment.json`` says the latency is
predicted only. A folder whose ``experiment.json`` holds a timing of the same request keeps it (a rerun, or a shard
started after the first one timed, draws the same genotypes; start shards of a timed comparison one after another).

Honest split: with ``data.val: holdout`` in the recipe, the 20 BSD200 images of ``data.HOLDOUT`` are taken
out of the training folders and are the only images checkpoints are chosen on; the ``--benchmark`` sets are
scored for reporting only (a recipe validating on a benchmark is refused).

Each (model, seed) is a ``trials.Trial``; each finished one a ``TrialRecord``, ``<out>/<model>_seed<k>.json`` (small,
meant to be committed). A rerun skips recorded trials (a record there of another trial is an error), copies one
recorded in a ``--reuse`` folder, and resumes an interrupted one from its run folder in ``--work``, so the comparison
can be finished later, on another machine, or by several processes at once (``--shard``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import ConfigError, SearchConfig, SupernetConfig, TrainConfig, load_config
from darts_sr.data import DEFAULT_BENCHMARKS, parse_data_spec
from darts_sr.evaluation.latency import LatencyTable, LatencyTableError, measure_many, predict_ms, warn_if_loaded
from darts_sr.evaluation.scoring import Evaluator
from darts_sr.experiments import records
from darts_sr.experiments.records import markdown_table  # noqa: F401  (the per-record table, also used by tests)
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, load_generator_genotype
from darts_sr.nets.networks import REFERENCE_LR_SIZE, LatencyWindow, MacsWindow, generator_macs
from darts_sr.search.cost import Cost, latency_cost
from darts_sr.search.sampling import CostFunction, Window, random_genotypes
from darts_sr.training.trials import (
    Planned,
    Trial,
    add_reuse_argument,
    parse_shard,
    refuse_reported_validation,
    run_trials,
    selection_name,
)

log = logging.getLogger("compare")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument(
        "--search-runs",
        nargs="+",
        action="extend",
        default=[],
        metavar="RUN",
        help="search run folders; each gives its genotype_generator.json and its search space",
    )
    g.add_argument("--searched", action="append", default=[], metavar="GENOTYPE.json", help="a searched genotype")
    g.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="GENOTYPE.json",
        help="a baseline genotype (darts-sr baselines), retrained and reported like the searched ones",
    )
    g.add_argument("--random", type=int, default=20, metavar="K", help="random genotypes of matched cost (20)")
    g.add_argument("--target-macs", type=float, help="MACs@720p the random genotypes match (default: searched mean)")
    g.add_argument(
        "--target-ms",
        type=float,
        metavar="MS",
        help="match latency instead: the milliseconds --latency-table predicts for a 720p output",
    )
    g.add_argument(
        "--latency-table", type=Path, metavar="T.json", help="with --target-ms: a table of darts-sr latency-table"
    )
    g.add_argument(
        "--tolerance", type=float, help="window around the target, a fraction (default 0.03 for MACs, 0.05 for ms)"
    )
    g.add_argument(
        "--confirm-timing",
        action="store_true",
        help="with --target-ms: time every model here (the table's backend and threads); redraw random genotypes "
        "measured outside the window",
    )
    g.add_argument("--sample-seed", type=int, default=0, help="seed of the random genotypes (default 0)")
    g.add_argument("--train-seeds", type=int, default=1, metavar="R", help="training seeds 0..R-1 per model (1)")
    g.add_argument("--seeds", action="append", default=[], metavar="NAME=R", help="per model, e.g. tpsr=3")
    add_recipe_arguments(p, "models")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("results/compare"), help="records folder (results/compare)")
    o.add_argument("--work", type=Path, help="run folders (default: runs/<name of --out>)")
    add_reuse_argument(o)
    o.add_argument("--report", type=Path, metavar="RESULTS", help="only rebuild the report of RESULTS from records")
    o.add_argument("--versus", type=Path, metavar="RESULTS", help="with the report: Kendall tau against RESULTS")
    return p.parse_args(argv)


def add_recipe_arguments(p: argparse.ArgumentParser, units: str) -> None:
    """The training-and-evaluation flags every comparison shares (this one and ``discriminator_compare``)."""
    t = p.add_argument_group("training and evaluation")
    t.add_argument("--config", metavar="PRESET|FILE.yaml", help="training recipe: a preset (compare_cpu) or YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    t.add_argument(
        "--benchmark",
        action="append",
        metavar="NAME=PATH",
        help="reported sets, never used for choosing (default: Set5 and Set14 from ../shared)",
    )
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides run.device")
    t.add_argument("--shard", default="0/1", metavar="I/N", help=f"train {units} i, i+N, ... (N processes share)")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    args.command = f"{prog or 'darts-sr compare'} {shlex.join(sys.argv[1:] if argv is None else argv)}"
    if args.report is not None:
        return cli.run(lambda: print(records.report(args.report, args.versus)))
    return cli.run(lambda: compare(args), "; rerun the same command to continue")


# --- the models -----------------------------------------------------------------------------------------------


def searched_genotypes(args: argparse.Namespace) -> tuple[list[tuple[str, GeneratorGenotype]], dict]:
    """``[(source, genotype)]`` of the searched genotypes, and the search space random genotypes are drawn from: the
    search runs' own (they must agree), else the default supernet's at the genotypes' width and scale."""
    found, spaces = [], []
    for run in map(Path, args.search_runs):
        found.append((str(run), load_generator_genotype(run / run_files.GENERATOR_GENOTYPE)))
        search = load_config(SearchConfig, run / run_files.CONFIG)
        s = search.supernet
        spaces.append(
            {
                "ops": list(s.ops),
                "nodes": s.nodes,
                "channels": s.channels,
                "scale": search.data.scale,
                "input_window": s.input_window,
                "max_skip_nodes": s.max_skip_nodes,
            }
        )
    found += [(spec, load_generator_genotype(spec)) for spec in args.searched]
    if any(space != spaces[0] for space in spaces):
        raise ConfigError(f"--search-runs: the runs searched different spaces ({', '.join(args.search_runs)})")
    if spaces:
        return found, spaces[0]
    first = found[0][1] if found else TPSR
    s = SupernetConfig()
    space = {
        "ops": list(s.ops),
        "nodes": s.nodes,
        "channels": first.channels,
        "scale": first.scale,
        "input_window": s.input_window,
        "max_skip_nodes": s.max_skip_nodes,
    }
    return found, space


MACS_TOLERANCE, MS_TOLERANCE = 0.03, 0.05  # --tolerance's defaults


def check_cost_flags(args: argparse.Namespace) -> None:
    """One window, in one unit: ``--target-macs``, or ``--target-ms`` with its ``--latency-table``."""
    if args.target_ms is not None and args.target_macs is not None:
        raise ConfigError("--target-ms and --target-macs: give one target, milliseconds or MACs")
    if args.target_ms is not None and args.latency_table is None:
        raise ConfigError("--target-ms needs --latency-table T.json (the table that predicts each genotype's ms)")
    if args.latency_table is not None and args.target_ms is None:
        raise ConfigError("--latency-table needs --target-ms MS (the latency the random genotypes match)")
    if args.confirm_timing and args.target_ms is None:
        raise ConfigError("--confirm-timing needs --target-ms and --latency-table (it checks the latency window)")
    if args.target_ms is not None and not args.target_ms > 0:
        raise ConfigError(f"--target-ms {args.target_ms:g}: must be positive")
    if args.tolerance is not None and not 0 < args.tolerance < 1:
        raise ConfigError(f"--tolerance {args.tolerance:g}: a fraction between 0 and 1, e.g. 0.05")


@dataclass
class Latency:
    """``--latency-table`` as compare uses it: the table, its file, and the LR size every prediction and timing is at
    (the scale's 720p output, as the search's latency cost reads its table)."""

    table: LatencyTable
    path: Path
    lr_size: tuple[int, int]
    cost: Cost  # over the random genotypes' space, checked covered; ``cost.of_genotype`` is ``predict_ms`` exactly
    sha256: str  # of the file: what a timing or a prediction was made with

    @classmethod
    def load(cls, path: Path, space: dict) -> Latency:
        """The table at ``path``, covering ``space`` (every op at its channels, the LR size of its scale): else a
        one-line error naming the file and the first missing entry."""
        table = LatencyTable.load(path)  # its errors name the file
        lr_size = REFERENCE_LR_SIZE[space["scale"]]
        try:
            cost = latency_cost(table, space["ops"], space["channels"], space["scale"], space["nodes"], lr_size)
        except LatencyTableError as e:
            raise LatencyTableError(f"--latency-table {path}: {e}") from None
        return cls(table, Path(path), lr_size, cost, hashlib.sha256(Path(path).read_bytes()).hexdigest())

    def predict(self, name: str, genotype: GeneratorGenotype) -> float:
        """``predict_ms`` of one model; a model the table does not cover is a one-line error naming both."""
        try:
            return predict_ms(genotype, self.table, self.lr_size)
        except LatencyTableError as e:
            raise LatencyTableError(f"--latency-table {self.path}: {name}: {e}") from None

    def time(self, genotypes: list[GeneratorGenotype]) -> list[float]:
        """End-to-end median ms of each genotype here, with the table's backend, threads, device, repeats, warm-up."""
        p = self.table.provenance
        return measure_many(genotypes, p.backend, p.threads, self.lr_size, p.repeats, p.warmup, p.device)

    def record(self) -> dict:
        correction = self.table.correction
        return {
            "table": str(self.path),
            "table_sha256": self.sha256,
            "lr_size": list(self.lr_size),
            "provenance": asdict(self.table.provenance),
            "correction": None if correction is None else asdict(correction),
        }


def candidates(args: argparse.Namespace, scale: int) -> tuple[dict[str, dict], Window, dict, Latency | None]:
    """``{name: {"group", "genotype", "source"[, "predicted_ms"]}}`` for every model, the cost window of the random
    ones, the search space they are drawn from (uniform within the window, by rejection) and, with ``--target-ms``,
    the latency table that predicts their ms (every model's ``predicted_ms``)."""
    searched, space = searched_genotypes(args)
    if space["scale"] != scale:
        raise ConfigError(f"the searched genotypes are x{space['scale']}, the recipe's data.scale is {scale}")
    latency = None
    if args.target_ms is not None:
        latency = Latency.load(args.latency_table, space)
        window: Window = LatencyWindow(args.target_ms, MS_TOLERANCE if args.tolerance is None else args.tolerance)
    else:
        target = args.target_macs
        if target is None and searched:
            target = sum(generator_macs(g) for _, g in searched) / len(searched)
        window = MacsWindow.around(target, scale, MACS_TOLERANCE if args.tolerance is None else args.tolerance)
    models = {
        f"searched_{i}": {"group": "searched", "genotype": g, "source": src, "choice_s": search_seconds(Path(src))}
        for i, (src, g) in enumerate(searched)
    }
    for spec in args.baseline:
        models[f"baseline_{Path(spec).stem}"] = {
            "group": "baseline",
            "genotype": load_generator_genotype(spec),
            "source": str(spec),
            "choice_s": baseline_seconds(Path(spec)),
        }
    if scale == TPSR.scale:
        models["tpsr"] = {"group": "tpsr", "genotype": TPSR, "source": "tpsr"}
    randoms = islice(random_draws(args, window, space, latency), args.random)
    models |= {
        f"random_{i}": {
            "group": "random",
            "genotype": g,
            "source": f"sample {i} (seed {args.sample_seed})",
            "choice_s": 0.0,
        }
        for i, g in enumerate(randoms)
    }
    if latency is not None:
        for name, m in models.items():
            m["predicted_ms"] = latency.predict(name, m["genotype"])
    return models, window, space, latency


def search_seconds(run: Path) -> float | None:
    """What a searched genotype cost to choose: its search run's wall time (``summary.json``), None for a genotype
    file (``--searched``) or a run without one."""
    summary = run / run_files.GENERATOR_SEARCH.summary
    return json.loads(summary.read_text()).get("wall_time_s") if run.is_dir() and summary.is_file() else None


def baseline_seconds(spec: Path) -> float | None:
    """What a baseline cost to choose: a ``best_of_<k>`` file's k proxy trainings (their records' wall times in the
    ``proxy`` folder beside it, as ``darts-sr baselines`` writes them), 0 for a rule (``shallow_wide``,
    ``deep_chain``, ``most_params``: counting or sampling, no training); None for any other file."""
    if spec.stem.startswith("best_of_"):
        found = [json.loads(p.read_text()) for p in sorted((spec.parent / "proxy").glob("*_seed*.json"))]
        return sum(r["wall_time_s"] for r in found) if found else None
    return 0.0 if spec.stem in ("shallow_wide", "deep_chain", "most_params") else None


def random_draws(
    args: argparse.Namespace, window: Window, space: dict, latency: Latency | None
) -> Iterator[GeneratorGenotype]:
    """The random genotypes in the window, one after another from ``--sample-seed``: the first ``--random`` are the
    models, the ones after them replace those a timing rejects."""
    cost: CostFunction | None = None if latency is None else latency.cost.of_genotype
    return random_genotypes(window, args.sample_seed, cost, **space | {"ops": tuple(space["ops"])})


PREDICTED_ONLY = (
    "latency predicted only: the table's prediction (predict_ms), no model timed on this machine "
    "(compare --confirm-timing times them)"
)


def timing_request(args: argparse.Namespace, window: Window, space: dict, latency: Latency) -> dict:
    """What a timing's outcome depends on besides the machine: a rerun with the same request keeps it."""
    return {
        **window.record(),
        "table_sha256": latency.sha256,
        "lr_size": list(latency.lr_size),
        "sample_seed": args.sample_seed,
        "random": args.random,
        "search_space": space,
    }


def earlier_timing(out: Path, request: dict, models: dict[str, dict]) -> dict | None:
    """The timing ``out``'s ``experiment.json`` holds for the same request and the same other models, applied to
    ``models`` (its random genotypes, everyone's measured ms); None when there is none to keep."""
    path = out / records.EXPERIMENT
    if not path.is_file():
        return None
    earlier = records.read_json(path)
    timing = earlier.get("latency", {}).get("timing", {})
    if not timing.get("confirmed") or timing.get("request") != request:
        return None
    kept = earlier.get("models", {})
    if set(kept) != set(models) or any(
        kept[n]["genotype"] != m["genotype"].to_dict() for n, m in models.items() if m["group"] != "random"
    ):
        return None
    for name, m in models.items():
        if m["group"] == "random":
            m |= {"genotype": GeneratorGenotype.from_dict(kept[name]["genotype"]), "source": kept[name]["source"]}
        m |= {"predicted_ms": kept[name]["predicted_ms"], "measured_ms": kept[name]["measured_ms"]}
    log.info("%s: keeping its timing (%s, load %.2f): not timed again", path, timing["date"], timing["load_before"][0])
    return timing


def confirm_timing(
    args: argparse.Namespace, models: dict[str, dict], window: LatencyWindow, space: dict, latency: Latency
) -> dict:
    """Times every model end to end here and replaces each random genotype measured outside ``window`` by the next
    draw of the same seed (timed in turn) until all are inside; returns what ``experiment.json`` records. Gives up,
    one line, when the replacements run past four times ``--random``: the table does not predict this machine now."""
    p = latency.table.provenance
    load_before = os.getloadavg()
    warn_if_loaded(load_before, p.threads)
    log.info("timing %d models end to end (%s, %d thread(s), %s)", len(models), p.backend, p.threads, p.device)
    names = list(models)
    for name, ms in zip(names, latency.time([models[n]["genotype"] for n in names])):
        models[name]["measured_ms"] = ms
    later = enumerate(islice(random_draws(args, window, space, latency), args.random, None), start=args.random)
    rejected: list[dict] = []
    outside = [n for n in names if models[n]["group"] == "random" and not window.contains(models[n]["measured_ms"])]
    while outside:
        if len(rejected) + len(outside) > max(4 * args.random, 10):
            ratios = sorted(r["measured_ms"] / r["predicted_ms"] for r in rejected)
            raise ConfigError(
                f"--confirm-timing: {len(rejected) + len(outside)} random genotypes measured outside {window} "
                f"(measured/predicted median {ratios[len(ratios) // 2]:.2f}, load {os.getloadavg()[0]:.2f}): "
                f"{latency.path} does not predict this machine now; rebuild it here or widen --tolerance"
            )
        for name in outside:
            m = models[name]
            rejected.append(
                {"model": name, "genotype": m["genotype"].to_dict(), "source": m["source"]}
                | {k: m[k] for k in ("predicted_ms", "measured_ms")}
            )
            i, g = next(later)
            models[name] = {
                "group": "random",
                "genotype": g,
                "source": f"sample {i} (seed {args.sample_seed}), redrawn",
                "predicted_ms": latency.predict(name, g),
            }
        for name, ms in zip(outside, latency.time([models[n]["genotype"] for n in outside])):
            models[name]["measured_ms"] = ms
        outside = [n for n in outside if not window.contains(models[n]["measured_ms"])]
    load_after = os.getloadavg()
    randoms = sum(m["group"] == "random" for m in models.values())
    log.info(
        "%d of %d random genotypes measured outside %s were redrawn (%d timed in all); load %.2f -> %.2f",
        len(rejected),
        randoms,
        window,
        randoms + len(rejected),
        load_before[0],
        load_after[0],
    )
    return {
        "confirmed": True,
        "backend": p.backend,
        "threads": p.threads,
        "device": p.device,
        "repeats": p.repeats,
        "warmup": p.warmup,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_before": list(load_before),
        "load_after": list(load_after),
        "redrawn": len(rejected),
        "rejected": rejected,
    }


def seed_counts(args: argparse.Namespace, models: dict) -> dict[str, int]:
    counts = dict.fromkeys(models, args.train_seeds)
    for spec in args.seeds:
        name, _, value = spec.partition("=")
        if name not in models or not value.isdigit() or int(value) < 1:
            randoms = sum(m["group"] == "random" for m in models.values())
            names = [n for n, m in models.items() if m["group"] != "random"]
            names += [f"random_0..{randoms - 1}"] if randoms else []
            raise ConfigError(f"--seeds {spec!r}: expected NAME=R with R >= 1, NAME one of {', '.join(names)}")
        counts[name] = int(value)
    return counts


# --- the experiment ------------------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> None:
    check_cost_flags(args)
    overrides = [*args.set, *([f"run.device={args.device}"] if args.device else [])]
    if not args.config:
        raise ConfigError("--config is required (a recipe: compare_cpu, compare_div2k or a YAML file), or --report")
    config_file = cli.resolve_config(args.config)
    recipe = load_config(TrainConfig, config_file, overrides)
    cli.check_run_device(recipe.run, from_flag=bool(args.device))
    parse_shard(args.shard)
    benchmarks = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    refuse_reported_validation(recipe, benchmarks)
    models, window, space, latency = candidates(args, recipe.data.scale)
    seeds = seed_counts(args, models)
    out, work = args.out, args.work or Path("runs") / args.out.name
    latency_record = {}
    if latency is not None:
        request = timing_request(args, window, space, latency)
        timing = earlier_timing(out, request, models)
        if timing is None and args.confirm_timing:
            timing = confirm_timing(args, models, window, space, latency) | {"request": request}
        timing = timing or {"confirmed": False, "note": PREDICTED_ONLY}
        latency_record = {"latency": latency.record() | {"timing": timing}}
    planned = [
        Planned(
            f"{name}_seed{seed}",
            Trial(m["genotype"], recipe, seed),
            {"model": name, "group": m["group"], "source": m["source"]},
        )
        for name, m in models.items()
        for seed in range(seeds[name])
    ]
    first = planned[0].trial
    records.write_json(
        out / records.EXPERIMENT,
        {
            "command": args.command,
            "recipe_file": str(args.config),
            "recipe_hash": first.recipe_hash(),
            "recipe": first.identity()["recipe"],
            "selection": selection_name(recipe),
            "benchmarks": dict(benchmarks),
            **window.record(),
            **latency_record,
            "sample_seed": args.sample_seed,
            "search_space": space,
            "models": {
                name: {
                    "group": m["group"],
                    "source": m["source"],
                    "genotype": m["genotype"].to_dict(),
                    "macs_720p": generator_macs(m["genotype"]),
                    **{k: m[k] for k in ("predicted_ms", "measured_ms") if k in m},
                    **({"choice_s": m["choice_s"]} if m.get("choice_s") is not None else {}),
                    "seeds": seeds[name],
                }
                for name, m in models.items()
            },
        },
    )
    within = f"{window} as {latency.path} predicts" if latency is not None else str(window)
    log.info(
        "%d models, %d trainings; random genotypes within %s; records in %s", len(models), len(planned), within, out
    )
    evaluator = Evaluator(
        benchmarks, recipe.data.scale, cli.resolve_device(recipe.run.device), recipe.gan_phase.loss.pretrained_dir
    )
    bicubic_file = out / records.BICUBIC
    if not bicubic_file.is_file() or set(records.read_json(bicubic_file)) != set(evaluator.sets):
        records.write_json(bicubic_file, evaluator.bicubic())
    run_trials(planned, out, work, evaluator, args.shard, args.reuse)
    print(records.report(out))


if __name__ == "__main__":
    sys.exit(main())
