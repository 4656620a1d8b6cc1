"""The evidence: searched genotypes against random ones of matched MACs and TPSR, each retrained under one recipe
with several training seeds, with statistics that say whether the search beat random sampling.

    darts-sr compare --search-runs runs/search_s0 runs/search_s1 --random 20 --config compare_cpu \\
        --seeds tpsr=3 --seeds searched_0=3 --out results/compare_cpu
    darts-sr compare --report results/compare_cpu            # tables, statistics and plot from the records alone

Models: ``searched_<i>`` (each ``--search-runs`` folder's ``genotype_generator.json``, then each ``--searched``
file), ``tpsr``, and ``random_<i>``, drawn uniformly from the searched genotypes' search space (same ops, nodes and
skip cap) within ``--tolerance`` of ``--target-macs`` (default: the searched genotypes' mean MACs) by rejection.
Each is retrained with seeds 0..R-1 (``--train-seeds R``, per model ``--seeds NAME=R``).

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
import logging
import shlex
import sys
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import ConfigError, SearchConfig, SupernetConfig, TrainConfig, load_config
from darts_sr.data import DEFAULT_BENCHMARKS, parse_data_spec
from darts_sr.evaluation.scoring import Evaluator
from darts_sr.experiments import records
from darts_sr.experiments.records import markdown_table  # noqa: F401  (the per-record table, also used by tests)
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, load_generator_genotype
from darts_sr.nets.networks import MacsWindow, generator_macs
from darts_sr.search.sampling import matched_random_genotypes
from darts_sr.training.trials import Planned, Trial, parse_shard, refuse_reported_validation, run_trials, selection_name

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
    g.add_argument("--random", type=int, default=20, metavar="K", help="random genotypes of matched MACs (20)")
    g.add_argument("--target-macs", type=float, help="MACs@720p the random genotypes match (default: searched mean)")
    g.add_argument("--tolerance", type=float, default=0.03, help="MACs window around the target (default ±3%%)")
    g.add_argument("--sample-seed", type=int, default=0, help="seed of the random genotypes (default 0)")
    g.add_argument("--train-seeds", type=int, default=1, metavar="R", help="training seeds 0..R-1 per model (1)")
    g.add_argument("--seeds", action="append", default=[], metavar="NAME=R", help="per model, e.g. tpsr=3")
    add_recipe_arguments(p, "models")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("results/compare"), help="records folder (results/compare)")
    o.add_argument("--work", type=Path, help="run folders (default: runs/<name of --out>)")
    o.add_argument(
        "--reuse",
        action="append",
        default=[],
        type=Path,
        metavar="RESULTS",
        help="another experiment's records: a model with the same genotype, recipe and seed there is "
        "copied, not retrained",
    )
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


def candidates(args: argparse.Namespace, scale: int) -> tuple[dict[str, dict], MacsWindow, dict]:
    """``{name: {"group", "genotype", "source"}}`` for every model, the MACs window of the random ones and the
    search space they are drawn from (uniform within the window, by rejection)."""
    searched, space = searched_genotypes(args)
    if space["scale"] != scale:
        raise ConfigError(f"the searched genotypes are x{space['scale']}, the recipe's data.scale is {scale}")
    target = args.target_macs
    if target is None and searched:
        target = sum(generator_macs(g) for _, g in searched) / len(searched)
    window = MacsWindow.around(target, scale, args.tolerance)
    models = {
        f"searched_{i}": {"group": "searched", "genotype": g, "source": src} for i, (src, g) in enumerate(searched)
    }
    for spec in args.baseline:
        models[f"baseline_{Path(spec).stem}"] = {
            "group": "baseline",
            "genotype": load_generator_genotype(spec),
            "source": str(spec),
        }
    if scale == TPSR.scale:
        models["tpsr"] = {"group": "tpsr", "genotype": TPSR, "source": "tpsr"}
    randoms = matched_random_genotypes(args.random, window, args.sample_seed, **space | {"ops": tuple(space["ops"])})
    models |= {
        f"random_{i}": {"group": "random", "genotype": g, "source": f"sample {i} (seed {args.sample_seed})"}
        for i, g in enumerate(randoms)
    }
    return models, window, space


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
    overrides = [*args.set, *([f"run.device={args.device}"] if args.device else [])]
    if not args.config:
        raise ConfigError("--config is required (a recipe: compare_cpu, compare_div2k or a YAML file), or --report")
    config_file = cli.resolve_config(args.config)
    recipe = load_config(TrainConfig, config_file, overrides)
    cli.check_run_device(recipe.run, from_flag=bool(args.device))
    parse_shard(args.shard)
    benchmarks = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    refuse_reported_validation(recipe, benchmarks)
    models, window, space = candidates(args, recipe.data.scale)
    seeds = seed_counts(args, models)
    out, work = args.out, args.work or Path("runs") / args.out.name
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
            "sample_seed": args.sample_seed,
            "search_space": space,
            "models": {
                name: {
                    "group": m["group"],
                    "source": m["source"],
                    "genotype": m["genotype"].to_dict(),
                    "macs_720p": generator_macs(m["genotype"]),
                    "seeds": seeds[name],
                }
                for name, m in models.items()
            },
        },
    )
    log.info(
        "%d models, %d trainings; random genotypes within %s; records in %s", len(models), len(planned), window, out
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
