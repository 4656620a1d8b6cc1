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

Each finished model is a record, ``<out>/<model>_seed<k>.json`` (small, meant to be committed; ``darts_sr.records``
says what is in it). A rerun skips recorded models and resumes an interrupted one from its run folder in
``--work``, so the comparison can be finished later, on another machine, or by several processes (``--shard``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from darts_sr import cli, records, run_files
from darts_sr.config import ConfigError, SearchConfig, SupernetConfig, TrainConfig, load_config, to_dict
from darts_sr.data import DEFAULT_BENCHMARKS, HOLDOUT, holdout_split, parse_data_spec
from darts_sr.discriminator import load_discriminator_genotype
from darts_sr.evaluation import Evaluator
from darts_sr.genotype import TPSR, GeneratorGenotype, load_generator_genotype, save_genotype
from darts_sr.networks import generator_macs, generator_params
from darts_sr.records import markdown_table  # noqa: F401  (the per-record table, also used by tests)
from darts_sr.runner import prepare_run_folder, save_config
from darts_sr.sampling import matched_random_genotypes
from darts_sr.search import default_target
from darts_sr.train import Retrainer

log = logging.getLogger("compare")
MODEL_FILES = {"pixel": run_files.MODEL_PIXEL, "gan": run_files.MODEL_GAN}
HOLDOUT_VAL = "holdout"  # the data.val value that asks for the held-out slice


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument("--search-runs", nargs="+", action="extend", default=[], metavar="RUN",
                   help="search run folders; each gives its genotype_generator.json and its search space")  # fmt: skip
    g.add_argument("--searched", action="append", default=[], metavar="GENOTYPE.json", help="a searched genotype")
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
    o.add_argument("--reuse", action="append", default=[], type=Path, metavar="RESULTS",
                   help="another experiment's records: a model with the same genotype, recipe and seed there is "
                        "copied, not retrained")  # fmt: skip
    o.add_argument("--report", type=Path, metavar="RESULTS", help="only rebuild the report of RESULTS from records")
    o.add_argument("--versus", type=Path, metavar="RESULTS", help="with the report: Kendall tau against RESULTS")
    return p.parse_args(argv)


def add_recipe_arguments(p: argparse.ArgumentParser, units: str) -> None:
    """The training-and-evaluation flags every comparison shares (this one and ``discriminator_compare``)."""
    t = p.add_argument_group("training and evaluation")
    t.add_argument("--config", metavar="PRESET|FILE.yaml", help="training recipe: a preset (compare_cpu) or YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    t.add_argument("--benchmark", action="append", metavar="NAME=PATH",
                   help="reported sets, never used for choosing (default: Set5 and Set14 from ../shared)")  # fmt: skip
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides run.device")
    t.add_argument("--shard", default="0/1", metavar="I/N", help=f"train {units} i, i+N, ... (N processes share)")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    args.command = f"{prog or 'python -m darts_sr.compare'} {shlex.join(sys.argv[1:] if argv is None else argv)}"
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
        spaces.append({"ops": list(s.ops), "nodes": s.nodes, "channels": s.channels, "scale": search.data.scale,
                       "input_window": s.input_window, "max_skip_nodes": s.max_skip_nodes})  # fmt: skip
    found += [(spec, load_generator_genotype(spec)) for spec in args.searched]
    if any(space != spaces[0] for space in spaces):
        raise ConfigError(f"--search-runs: the runs searched different spaces ({', '.join(args.search_runs)})")
    if spaces:
        return found, spaces[0]
    first = found[0][1] if found else TPSR
    s = SupernetConfig()
    space = {"ops": list(s.ops), "nodes": s.nodes, "channels": first.channels, "scale": first.scale,
             "input_window": s.input_window, "max_skip_nodes": s.max_skip_nodes}  # fmt: skip
    return found, space


def random_candidates(count: int, target: float, tolerance: float, seed: int, space: dict) -> list[GeneratorGenotype]:
    """``count`` distinct genotypes, uniform over ``space`` within ``target · (1 ± tolerance)`` MACs@720p."""
    return matched_random_genotypes(count, target, tolerance, seed, **{**space, "ops": tuple(space["ops"])})


def candidates(args: argparse.Namespace, scale: int) -> tuple[dict[str, dict], float, dict]:
    """``{name: {"group", "genotype", "source"}}`` for every model, the target MACs and the search space."""
    searched, space = searched_genotypes(args)
    if space["scale"] != scale:
        raise ConfigError(f"the searched genotypes are x{space['scale']}, the recipe's data.scale is {scale}")
    if args.target_macs is not None:
        target = args.target_macs
    elif searched:
        target = sum(generator_macs(g) for _, g in searched) / len(searched)
    else:
        target = default_target(scale)
    models = {f"searched_{i}": {"group": "searched", "genotype": g, "source": src}
              for i, (src, g) in enumerate(searched)}  # fmt: skip
    if scale == TPSR.scale:
        models["tpsr"] = {"group": "tpsr", "genotype": TPSR, "source": "tpsr"}
    randoms = random_candidates(args.random, target, args.tolerance, args.sample_seed, space)
    models |= {f"random_{i}": {"group": "random", "genotype": g, "source": f"sample {i} (seed {args.sample_seed})"}
               for i, g in enumerate(randoms)}  # fmt: skip
    return models, target, space


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


# --- the recipe -----------------------------------------------------------------------------------------------


def hashed_recipe(recipe: TrainConfig) -> dict:
    """What defines the recipe for the records: everything but the run section (the seed is recorded beside it;
    device and logging do not change what is trained), plus the held-out names when the split is used."""
    data = to_dict(recipe)
    data.pop("run")
    if recipe.data.val == HOLDOUT_VAL:
        data["holdout"] = list(HOLDOUT)
    return data


def honest_split(recipe: TrainConfig, benchmarks: list[tuple[str, str]], where: Path) -> tuple[TrainConfig, str]:
    """The recipe with the validation slice it names (``data.val: holdout``: ``data.HOLDOUT`` taken out of the
    training folders, linked under ``where``), and the slice's name; a reported benchmark as ``data.val`` is refused,
    since the checkpoint chosen on it would be reported on it."""
    if recipe.data.val == HOLDOUT_VAL:
        try:
            train_dirs, val_dir = holdout_split(recipe.data.train, HOLDOUT, where)
        except FileExistsError:  # another shard linked the same image a moment ago
            train_dirs, val_dir = holdout_split(recipe.data.train, HOLDOUT, where)
        return replace(recipe, data=replace(recipe.data, train=tuple(train_dirs), val=val_dir)), HOLDOUT_VAL
    if recipe.data.val != "builtin":
        val = Path(recipe.data.val).expanduser().resolve()
        for name, path in benchmarks:
            root = Path(path).expanduser().resolve()
            if path != "builtin" and val in (root, root / "HR"):
                raise ConfigError(f"data.val {recipe.data.val}: is the reported benchmark {name}; choose checkpoints "
                                  f"on a held-out slice (data.val: {HOLDOUT_VAL})")  # fmt: skip
    return recipe, "val"


# --- training and records -------------------------------------------------------------------------------------


def selection_scores(summary: dict, selection: str) -> dict[str, dict]:
    """Per phase, the validation record of the model kept: the pixel phase's best Y-PSNR, the GAN phase's last."""
    out = {}
    pixel = [h for h in summary["val_history"] if h["phase"] == "pixel"]
    gan = [h for h in summary["val_history"] if h["phase"] == "gan"]
    for phase, chosen in (("pixel", max(pixel, key=lambda h: h["psnr_y"], default=None)), ("gan", (gan or [None])[-1])):
        if chosen is not None:
            out[phase] = {"dataset": selection, **{k: v for k, v in chosen.items() if k != "phase"}}
    return out


def train_model(name: str, genotype: GeneratorGenotype, recipe: TrainConfig, run_dir: Path) -> dict:
    """Trains (or resumes, or finds finished) ``genotype`` in ``run_dir``; returns the run's summary."""
    summary_file = run_dir / run_files.RETRAIN.summary
    saved = run_dir / run_files.GENERATOR_GENOTYPE
    if saved.is_file() and load_generator_genotype(saved) != genotype:
        raise records.RecordError(f"{run_dir}: a run of another genotype; use a new --work folder")
    if summary_file.is_file():
        log.info("%s: already trained in %s", name, run_dir)
        return records.read_json(summary_file)
    resume = (run_dir / run_files.RETRAIN.checkpoint).is_file()
    run_dir = prepare_run_folder(run_dir, resume=resume, overwrite=not resume)
    if not resume:
        save_config(run_dir, to_dict(recipe))
        save_genotype(genotype, saved)
    log.info("%s: %s %s (%d params, %.3f GMACs@720p)", name, "resuming" if resume else "training", run_dir,
             generator_params(genotype), generator_macs(genotype) / 1e9)  # fmt: skip
    d_genotype = load_discriminator_genotype(recipe.discriminator.genotype)
    return Retrainer(recipe, genotype, d_genotype, run_dir, resume=resume).run()


def record_model(name: str, model: dict, seed: int, recipe: TrainConfig, recipe_hash: str, selection: str,
                 work: Path, evaluator: Evaluator) -> dict:  # fmt: skip
    genotype, run_dir = model["genotype"], work / f"{name}_seed{seed}"
    load_before = os.getloadavg()
    summary = train_model(f"{name} seed {seed}", genotype, replace(recipe, run=replace(recipe.run, seed=seed)), run_dir)
    scores = {phase: evaluator.model(run_dir / file) for phase, file in MODEL_FILES.items()
              if (run_dir / file).is_file()}  # fmt: skip
    for phase, score in selection_scores(summary, selection).items():
        scores[phase][selection] = score
    return {
        "model": name, "group": model["group"], "seed": seed, "source": model["source"],
        "genotype": genotype.to_dict(), "params": generator_params(genotype), "macs_720p": generator_macs(genotype),
        "recipe_hash": recipe_hash, "selection": selection, "scores": scores,
        "steps": summary["steps"], "wall_time_s": summary["wall_time_s"],
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "device": str(evaluator.device), "torch": torch.__version__, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip


def compare(args: argparse.Namespace) -> None:
    overrides = [*args.set, *([f"run.device={args.device}"] if args.device else [])]
    if not args.config:
        raise ConfigError("--config is required (a recipe: compare_cpu, compare_div2k or a YAML file), or --report")
    config_file = cli.resolve_config(args.config)
    recipe = load_config(TrainConfig, config_file, overrides)
    cli.check_run_device(recipe.run, from_flag=bool(args.device))
    index, count = parse_shard(args.shard)
    benchmarks = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    models, target, space = candidates(args, recipe.data.scale)
    seeds = seed_counts(args, models)
    out, work = args.out, args.work or Path("runs") / args.out.name
    hashed = hashed_recipe(recipe)
    recipe_hash = records.recipe_hash(hashed)
    recipe, selection = honest_split(recipe, benchmarks, work / "split")
    records.write_json(out / records.EXPERIMENT, {
        "command": args.command, "recipe_file": str(args.config), "recipe_hash": recipe_hash, "recipe": hashed,
        "selection": selection, "benchmarks": dict(benchmarks), "target_macs_720p": target,
        "tolerance": args.tolerance, "sample_seed": args.sample_seed, "search_space": space,
        "models": {name: {"group": m["group"], "source": m["source"], "genotype": m["genotype"].to_dict(),
                          "macs_720p": generator_macs(m["genotype"]), "seeds": seeds[name]}
                   for name, m in models.items()},
    })  # fmt: skip
    log.info("%d models, %d trainings; random genotypes within %.3f GMACs ± %.0f%%; records in %s", len(models),
             sum(seeds.values()), target / 1e9, 100 * args.tolerance, out)  # fmt: skip
    evaluator = Evaluator(benchmarks, recipe.data.scale, cli.resolve_device(recipe.run.device),
                          recipe.gan_phase.loss.pretrained_dir)  # fmt: skip
    bicubic_file = out / records.BICUBIC
    if not bicubic_file.is_file() or set(records.read_json(bicubic_file)) != set(evaluator.sets):
        records.write_json(bicubic_file, evaluator.bicubic())
    plan = [(name, seed) for name, m in models.items() for seed in range(seeds[name])]
    for name, seed in plan[index::count]:
        path = records.record_path(out, name, seed)
        genotype = models[name]["genotype"].to_dict()
        if records.existing_record(path, genotype, recipe_hash) is not None:
            log.info("%s seed %d: already recorded in %s, skipped", name, seed, path)
            continue
        if found := records.matching_record(args.reuse, genotype, recipe_hash, seed):
            source, record = found
            m = models[name]
            records.write_json(path, record | {"model": name, "group": m["group"], "source": m["source"],
                                               "reused_from": str(source)})  # fmt: skip
            log.info("%s seed %d: the same model is recorded in %s, copied", name, seed, source)
            continue
        record = record_model(name, models[name], seed, recipe, recipe_hash, selection, work, evaluator)
        records.write_json(path, record)
        log.info("%s seed %d: recorded in %s", name, seed, path)
    print(records.report(out))


def parse_shard(spec: str) -> tuple[int, int]:
    index, _, count = spec.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ConfigError(f"--shard {spec!r}: expected I/N with 0 <= I < N")
    return int(index), int(count)


if __name__ == "__main__":
    sys.exit(main())
