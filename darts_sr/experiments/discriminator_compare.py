"""The evidence for stage 2: one generator genotype fine-tuned against the discriminators stage 2 picks, SRGAN's
reference discriminator and random ones, with several seeds each, scored on Set5 and Set14 and the validation slice.

    darts-sr compare-discriminators --config compare_cpu --generator tpsr \\
        --search-runs runs/race_cpu --random 2 --train-seeds 2 --out results/discriminator_cpu
    darts-sr compare-discriminators --report results/discriminator_cpu   # the report from the records alone

Per training seed k the generator is pixel-pretrained with the recipe's pixel phase (``<work>/pixel_seed<k>``, the
best validation Y-PSNR kept, as ``compare`` trains), or ``--pixel-weights`` serves every seed; then it is
fine-tuned from those weights with the recipe's GAN phase against each discriminator, seed k
(``discriminator_race.finetune``, ``<work>/<model>_seed<k>``), and the end of each fine-tune is the model scored.

Discriminators: ``searched_<i>`` (each ``--search-runs`` folder's ``genotype_discriminator.json``, from the supernet
or the race, then each ``--discriminator`` file), ``reference`` (SRGAN's) and ``random_<i>`` (``--random K`` drawn
uniformly from the search runs' stage-2 space, which must agree, else the default space; ``--sample-seed``). The
recipe's ``discriminator.base_width``, when set, applies to all of them (a record holds the genotype trained).

Honest split as in ``compare``: with ``data.val: holdout`` the 20 ``data.HOLDOUT`` images, which no training
pool holds, are the only images anything is chosen on (the pixel checkpoint); Set5 and Set14 are scored for reporting
only. Every pixel model and fine-tune is a ``trials.Trial`` (the fine-tunes start from their seed's pixel weights:
``init``), recorded as a ``TrialRecord`` with the discriminator in ``extra``.

Records (``trials.TrialRecord``): ``<out>/<model>_seed<k>.json`` per fine-tune, ``pixel_seed<k>.json`` per pixel
model (the starting point), ``experiment.json`` and ``bicubic.json``; a rerun skips recorded models, resumes a cut
fine-tune, and ``--shard I/N`` takes seeds i, i+N, ... (one seed's fine-tunes share its pixel model).
``--reuse FOLDER`` copies a fine-tune recorded there, or scores its finished run folder when the record holds the
validation slice alone (a race's rung folder, ``<race run>/race/rung<r>``: its fine-tunes on the same recipe are
these trials). The report
(``report.md``, ``summary.json``): per model, mean ± sd over seeds of Y-PSNR, NIQE and LPIPS (where its weights exist)
on each dataset; the seed spread (pooled sd over seeds); and what the searched discriminators change against the
reference and the random ones, in units of that spread.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import ConfigError, SearchConfig, TrainConfig, load_config
from darts_sr.data import DEFAULT_BENCHMARKS, centre_crop, load_dataset, parse_data_spec
from darts_sr.evaluation.metrics import METRICS
from darts_sr.evaluation.scoring import Evaluator, format_value
from darts_sr.experiments import records, stats
from darts_sr.experiments.compare import add_recipe_arguments
from darts_sr.io import atomic_write_text, file_sha256
from darts_sr.nets.discriminator import discriminator_params
from darts_sr.nets.genotype import GeneratorGenotype, load_generator_genotype
from darts_sr.nets.networks import generator_macs, generator_params, load_generator
from darts_sr.search.race import (
    Candidate,
    distinct,
    effective_genotype,
    named_candidates,
    sampled_candidates,
    search_space,
)
from darts_sr.training.trials import (
    Planned,
    Trial,
    TrialError,
    TrialRecord,
    add_reuse_argument,
    parse_shard,
    provenance,
    read_record,
    refuse_reported_validation,
    resolve_validation,
    run_trials,
    selection_name,
    short_hash,
    write_record,
)

log = logging.getLogger("discriminator_compare")
GROUPS = ("pixel", "published", "searched", "reference", "random")
FIXED = ("pixel", "published")  # scored, not fine-tuned here: outside the seed spread and the comparisons
REPORTED = ("psnr_y", "niqe", "lpips")  # the report's columns: fidelity, and perception without and with reference


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument("--generator", default="tpsr", metavar="NAME|GENOTYPE.json", help="generator genotype (tpsr)")
    g.add_argument(
        "--init",
        "--pixel-weights",
        dest="pixel_weights",
        type=Path,
        metavar="WEIGHTS",
        help="start every seed's fine-tunes from these pixel-trained weights (model_pixel.pt, or a TPSR-format state "
        "dict such as TPSR_NOGANX4.pt) instead of pretraining",
    )
    g.add_argument(
        "--search-runs",
        nargs="+",
        action="extend",
        default=[],
        metavar="RUN",
        help="stage-2 run folders: each gives genotype_discriminator.json and its search space",
    )
    g.add_argument(
        "--discriminator",
        action="append",
        default=[],
        metavar="GENOTYPE.json",
        help="a discriminator genotype to compare (e.g. stage 2's pick)",
    )
    g.add_argument(
        "--published",
        action="append",
        default=[],
        metavar="LABEL=WEIGHTS",
        help="a generator's published weights (the --generator genotype) scored on the same sets beside the "
        "fine-tunes, nothing trained: a point of comparison such as TPSR_D2=TPSR_D2X4.pt; repeatable",
    )
    g.add_argument("--random", type=int, default=2, metavar="K", help="random discriminators (2)")
    g.add_argument("--sample-seed", type=int, default=0, help="seed of the random discriminators (default 0)")
    g.add_argument("--train-seeds", type=int, default=2, metavar="R", help="training seeds 0..R-1 (2)")
    add_recipe_arguments(p, "seeds")
    o = p.add_argument_group("output")
    add_reuse_argument(o)
    o.add_argument("--out", type=Path, default=Path("results/discriminator_compare"), help="records folder")
    o.add_argument("--work", type=Path, help="run folders (default: runs/<name of --out>)")
    o.add_argument("--report", type=Path, metavar="RESULTS", help="only rebuild the report of RESULTS from records")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    given = sys.argv[1:] if argv is None else argv
    args.command = f"{prog or 'darts-sr compare-discriminators'} {shlex.join(given)}"
    if args.report is not None:
        return cli.run(lambda: print(report(args.report)))
    return cli.run(lambda: experiment(args), "; rerun the same command to continue")


# --- the discriminators -----------------------------------------------------------------------------------------


def discriminators(args: argparse.Namespace) -> tuple[list[Candidate], dict]:
    """The searched ones, the reference and the random ones (distinct genotypes), and the space drawn from."""
    specs, spaces = [], []
    for run in map(Path, args.search_runs):
        specs.append(str(run / run_files.DISCRIMINATOR_GENOTYPE))
        spaces.append(search_space(load_config(SearchConfig, run / run_files.CONFIG)))
    if any(space != spaces[0] for space in spaces):
        raise ConfigError(f"--search-runs: the runs searched different spaces ({', '.join(args.search_runs)})")
    space = spaces[0] if spaces else search_space(SearchConfig())
    if args.random < 0:
        raise ConfigError(f"--random {args.random}: must be >= 0")
    given = named_candidates([*specs, *args.discriminator, "reference"])
    return distinct(given + sampled_candidates(args.random, args.sample_seed, space)), space


# --- the experiment ---------------------------------------------------------------------------------------------


def experiment(args: argparse.Namespace) -> None:
    overrides = [*args.set, *([f"run.device={args.device}"] if args.device else [])]
    if not args.config:
        raise ConfigError("--config is required (a recipe: compare_cpu or a YAML file), or --report")
    recipe = load_config(TrainConfig, cli.resolve_config(args.config), overrides)
    cli.check_run_device(recipe.run, from_flag=bool(args.device))
    if recipe.gan_phase.steps < 1 or recipe.gan_phase.loss.adversarial <= 0:
        raise ConfigError(
            f"{args.config}: gan_phase.steps and gan_phase.loss.adversarial must be > 0: the fine-tunes "
            "are the recipe's GAN phase against each discriminator"
        )
    if args.train_seeds < 1:
        raise ConfigError(f"--train-seeds {args.train_seeds}: must be >= 1")
    index, count = parse_shard(args.shard)
    genotype = load_generator_genotype(args.generator)
    if genotype.scale != recipe.data.scale:
        scales = f"x{genotype.scale}, the recipe's data.scale is {recipe.data.scale}"
        raise ConfigError(f"--generator {args.generator}: {scales}")
    if args.pixel_weights is not None:
        load_generator(args.pixel_weights, genotype)  # refused now, not after the first fine-tune, if it does not fit
    published = parse_published(args.published)
    for weights in published.values():
        load_generator(weights, genotype)
    benchmarks = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    refuse_reported_validation(recipe, benchmarks)
    models, space = discriminators(args)
    if taken := sorted(set(published) & {m.name for m in models}):
        raise ConfigError(f"--published {taken[0]}: a discriminator of the comparison has that name; choose another")
    out, work = args.out, args.work or Path("runs") / args.out.name
    split_dir = work / "split"
    for m in models:
        if effective_genotype(m.genotype, recipe) != m.genotype:
            log.warning(
                "%s: trained at the recipe's discriminator.base_width %d, not its own %d",
                m.name,
                recipe.discriminator.base_width,
                m.genotype.base_width,
            )
    # What trains is the genotype at the recipe's width: two that differ only in width would train the same network.
    models = distinct([replace(m, genotype=effective_genotype(m.genotype, recipe)) for m in models])
    pixel_recipe = replace(recipe, gan_phase=replace(recipe.gan_phase, steps=0))
    selection = selection_name(recipe)
    # The fine-tunes' recipe (each starts from its seed's pixel weights: no pixel phase of its own).
    recipe_hash = Trial(genotype, recipe, 0, init=args.pixel_weights or work / "pixel_seed0").recipe_hash()
    if (out / records.EXPERIMENT).is_file() and records.read_json(out / records.EXPERIMENT).get("recipe_hash") not in (
        recipe_hash,
        None,
    ):
        raise TrialError(f"{out}: records of another recipe (not {recipe_hash}); use a new --out")
    records.write_json(
        out / records.EXPERIMENT,
        {
            "command": args.command,
            "recipe_file": str(args.config),
            "recipe_hash": recipe_hash,
            "recipe": Trial(genotype, recipe).identity()["recipe"],
            "selection": selection,
            "benchmarks": dict(benchmarks),
            "generator": args.generator,
            "generator_genotype": genotype.to_dict(),
            "pixel_weights": None if args.pixel_weights is None else str(args.pixel_weights),
            "sample_seed": args.sample_seed,
            "search_space": space,
            "train_seeds": args.train_seeds,
            "models": {
                m.name: {"group": m.group, "source": m.source, "genotype": m.genotype.to_dict()} for m in models
            },
        },
    )
    evaluator = Evaluator(
        benchmarks, recipe.data.scale, cli.resolve_device(recipe.run.device), recipe.gan_phase.loss.pretrained_dir
    )
    # The validation slice as the retraining sees it, scored beside the benchmarks; it chose the pixel checkpoint.
    val = resolve_validation(recipe, split_dir).data.val
    val_pairs = centre_crop(load_dataset(val, recipe.data.scale, split="val"), recipe.data.val_crop, recipe.data.scale)
    evaluator.sets = {selection: val_pairs, **evaluator.sets}
    bicubic_file = out / records.BICUBIC
    if not bicubic_file.is_file() or set(records.read_json(bicubic_file)) != set(evaluator.sets):
        records.write_json(bicubic_file, evaluator.bicubic())
    log.info(
        "%s (%d params, %.3f GMACs@720p): %d discriminators x %d seeds; records in %s",
        args.generator,
        generator_params(genotype),
        generator_macs(genotype) / 1e9,
        len(models),
        args.train_seeds,
        out,
    )
    for label, weights in published.items() if index == 0 else ():  # scored once, by the first shard
        fixed_record(weights, genotype, 0, evaluator, selection, out / f"{label}_seed0.json", label, "published")
    for seed in range(args.train_seeds)[index::count]:
        names = ["pixel", *(m.name for m in models)]
        if all((out / f"{name}_seed{seed}.json").is_file() for name in names):
            # Their keys need the pixel weights, which may live on another machine: the experiment's recipe hash,
            # checked above, vouches for them.
            log.info("seed %d: every model already recorded, skipped", seed)
            continue
        if args.pixel_weights is not None:
            weights = Path(args.pixel_weights)
            fixed_record(weights, genotype, seed, evaluator, selection, out / f"pixel_seed{seed}.json")
        else:
            pixel = Planned(
                f"pixel_seed{seed}",
                Trial(genotype, pixel_recipe, seed),
                {"model": "pixel", "group": "pixel", "source": "pixel phase of the recipe"},
            )
            pixel.trial.run(work / pixel.name, split_dir)  # the start weights, trained or found (also if recorded)
            run_trials([pixel], out, work, evaluator)
            weights = work / pixel.name / run_files.MODEL_PIXEL
        planned = [
            Planned(
                f"{m.name}_seed{seed}",
                Trial(genotype, recipe, seed, init=weights, discriminator=m.genotype),
                {"model": m.name, "group": m.group, "source": m.source},
                {"discriminator": m.genotype.to_dict(), "discriminator_params": discriminator_params(m.genotype)},
            )
            for m in models
        ]
        run_trials(planned, out, work, evaluator, reuse=args.reuse)
    print(report(out))


def parse_published(specs: list[str]) -> dict[str, Path]:
    """``--published LABEL=WEIGHTS`` flags as ``{label: weights}``; a label must not be a model name of its own."""
    found: dict[str, Path] = {}
    for spec in specs:
        label, sep, weights = spec.partition("=")
        if not sep or not label or not weights:
            raise ConfigError(f"--published {spec!r}: expected LABEL=WEIGHTS")
        if label in found or label in ("pixel", "reference") or label.startswith(("searched_", "random_")):
            raise ConfigError(f"--published {spec!r}: the label {label!r} is taken; choose another")
        found[label] = Path(weights)
    return found


def fixed_record(
    weights: Path,
    genotype: GeneratorGenotype,
    seed: int,
    evaluator: Evaluator,
    selection: str,
    path: Path,
    model: str = "pixel",
    group: str = "pixel",
) -> None:
    """Given weights scored, nothing trained: by default the pixel weights every fine-tune of seed ``seed`` starts
    from; with ``group="published"`` a published model shown beside the fine-tunes."""
    identity = {"evaluated": file_sha256(weights), "seed": seed}
    if path.is_file():
        if read_record(path).identity != identity:
            raise TrialError(f"{path}: recorded for other weights than {weights}; use a new --out")
        return
    network = load_generator(weights, genotype)  # ours, or a TPSR-format state dict such as TPSR_NOGANX4.pt
    write_record(
        path,
        TrialRecord(
            key=short_hash(identity),
            recipe_hash="",
            identity=identity,
            seed=seed,
            genotype=network.genotype.to_dict(),
            params=generator_params(network.genotype),
            macs_720p=generator_macs(network.genotype),
            selection=selection,
            scores={"pixel" if group == "pixel" else "gan": evaluator.network(network)},
            provenance=provenance(os.getloadavg(), str(evaluator.device)),
            model=model,
            group=group,
            source=str(weights),
        ),
    )


def as_row(record: dict) -> dict:
    """A record as the report reads it: the discriminator's genotype and parameters (none for the pixel model).
    Trial records keep them in ``extra``; records made before trials had them at the top."""
    if "identity" not in record:
        return record
    extra = record.get("extra", {})
    return record | {"genotype": extra.get("discriminator"), "params": extra.get("discriminator_params", 0)}


# --- the report -------------------------------------------------------------------------------------------------


def model_values(all_records: list[dict]) -> dict[str, dict]:
    """``{model: {"group", "params", "genotype", "seeds", "values": {(dataset, metric): {seed: value}}}}``, in group
    order (pixel, searched, reference, random) then name."""
    found: dict[str, dict] = {}
    for r in all_records:
        m = found.setdefault(
            r["model"],
            {"group": r["group"], "params": r["params"], "genotype": r["genotype"], "seeds": [], "values": {}},
        )
        if r["genotype"] != m["genotype"]:
            raise records.RecordError(f"{r['model']}_seed{r['seed']}: another genotype than the model's other seeds")
        m["seeds"].append(r["seed"])
        for datasets in r["scores"].values():
            for dataset, scores in datasets.items():
                for metric, value in scores.items():
                    if metric in METRICS and value is not None:
                        m["values"].setdefault((dataset, metric), {})[r["seed"]] = value
    order = {g: i for i, g in enumerate(GROUPS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[1]["group"], len(GROUPS)), _natural(kv[0]))))


def _natural(name: str) -> tuple:
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def _digits(metric: str) -> int:
    return METRICS[metric].digits + 1  # one more than the tables of one model: seed noise is ~0.01 dB


def _cell(values: dict[int, float] | None, metric: str) -> str:
    if not values:
        return "n/a"
    mean, sd = stats.mean_sd(list(values.values()))
    return f"{mean:.{_digits(metric)}f}" + ("" if sd is None else f" ± {sd:.{_digits(metric)}f}")


def differences(models: dict[str, dict], dataset: str, metric: str) -> list[dict]:
    """Each named discriminator (searched, or a built-in such as ``esrgan_body``) against the reference and against the
    random ones' mean, paired by seed (a
    seed's fine-tunes share its pixel model, so the pairs cancel that model's share of the noise), with the seed
    spread of one model (pooled sd over seeds of every GAN model) beside them."""
    gan = {
        n: m["values"][(dataset, metric)]
        for n, m in models.items()
        if m["group"] not in FIXED and m["values"].get((dataset, metric))
    }
    groups = {n: models[n]["group"] for n in gan}
    randoms = [gan[n] for n in gan if groups[n] == "random"]
    random_mean = (
        {k: sum(r[k] for r in randoms) / len(randoms) for k in set.intersection(*map(set, randoms))} if randoms else {}
    )
    comparators = {"reference": gan.get("reference", {}), "random mean": random_mean}
    spread = stats.pooled_sd([list(v.values()) for v in gan.values()])
    sign = -1 if METRICS[metric].lower_is_better else 1  # a positive gap * sign is better
    out = []
    for name in (n for n in gan if groups[n] not in ("reference", "random")):
        row = {
            "dataset": dataset,
            "metric": metric,
            "model": name,
            "mean": stats.mean_sd(list(gan[name].values()))[0],
            "seed_sd": spread,
            "versus": {},
        }
        for label, other in comparators.items():
            seeds = sorted(set(gan[name]) & set(other))
            if seeds:
                gaps = [gan[name][k] - other[k] for k in seeds]
                row["versus"][label] = {
                    "seeds": seeds,
                    "gaps": gaps,
                    "mean_gap": sum(gaps) / len(gaps),
                    "better_seeds": sum(g * sign > 0 for g in gaps),
                }
        out.append(row)
    return out


def versus_random(models: dict[str, dict], dataset: str, metric: str) -> list[dict]:
    """Each named discriminator's mean over seeds against the random discriminators' means: the gap (named − random
    mean) with a 95% t interval whose spread is how much the random discriminators differ among themselves (df =
    their number − 1) plus the named one's seed noise (the pooled seed sd), and how many random ones it beats. A pick
    beats "a discriminator drawn at random" beyond the noise only when the whole interval is on the better side."""
    gan = {n: m for n, m in models.items() if m["group"] not in FIXED and m["values"].get((dataset, metric))}
    means = {n: stats.mean_sd(list(m["values"][(dataset, metric)].values()))[0] for n, m in gan.items()}
    randoms = [means[n] for n, m in gan.items() if m["group"] == "random"]
    if len(randoms) < 2:
        return []
    spread = stats.pooled_sd([list(m["values"][(dataset, metric)].values()) for m in gan.values()]) or 0.0
    lower = METRICS[metric].lower_is_better
    out = []
    for name in (n for n, m in gan.items() if m["group"] not in ("reference", "random")):
        values = list(gan[name]["values"][(dataset, metric)].values())
        flipped = stats.gap_to_fixed(randoms, values, spread)  # random mean − named
        low, high = -flipped.high, -flipped.low
        beaten = sum((means[name] < r) if lower else (means[name] > r) for r in randoms)
        out.append(
            {
                "dataset": dataset,
                "metric": metric,
                "model": name,
                "gap": -flipped.estimate,
                "low": low,
                "high": high,
                "random_models": len(randoms),
                "beats_random": beaten,
                "better_beyond_noise": high < 0 if lower else low > 0,
                "worse_beyond_noise": low > 0 if lower else high < 0,
            }
        )
    return out


def _judge(versus: dict, metric: str) -> str:
    """A paired gap in words: on how many seeds the searched discriminator did better, and the mean gap."""
    n, better = len(versus["seeds"]), versus["better_seeds"]
    gap = f"mean gap {versus['mean_gap']:+.{_digits(metric)}f}"
    if n == 1:
        return f"{'better' if better else 'not better'} on its one seed ({gap}): no spread to judge by"
    if better == n:
        return f"better on all {n} seeds ({gap})"
    if better == 0:
        return f"worse or equal on all {n} seeds ({gap})"
    return f"better on {better} of {n} seeds ({gap}): no consistent difference"


def _gaps(row: dict, label: str) -> str:
    """The mean paired gap and the gap of each seed, e.g. ``-0.120 (-0.100, -0.140)``."""
    versus, digits = row["versus"].get(label), _digits(row["metric"])
    if versus is None:
        return "-"
    return f"{versus['mean_gap']:+.{digits}f} (" + ", ".join(f"{g:+.{digits}f}" for g in versus["gaps"]) + ")"


def report(folder: Path) -> str:
    """Writes ``report.md`` and ``summary.json`` in ``folder`` from its records alone; returns the markdown."""
    folder = Path(folder)
    exp = records.read_json(folder / records.EXPERIMENT) if (folder / records.EXPERIMENT).is_file() else {}
    found = [as_row(r) for r in records.load_records(folder)]
    if not found:
        raise records.RecordError(f"{folder}: no records (<model>_seed<k>.json) to report")
    bicubic = records.read_json(folder / records.BICUBIC) if (folder / records.BICUBIC).is_file() else {}
    models = model_values(found)
    selection = exp.get("selection")
    named = [selection, *exp.get("benchmarks", {})]
    datasets = sorted(
        {d for m in models.values() for d, _ in m["values"]},
        key=lambda d: (named.index(d) if d in named else len(named), d),
    )
    metrics = [k for k in REPORTED if any(k == mk for m in models.values() for _, mk in m["values"])]
    diffs = [row for d in datasets for k in metrics for row in differences(models, d, k)]
    against_random = [row for d in datasets for k in metrics for row in versus_random(models, d, k)]
    lines = [
        f"# Discriminators for `{exp.get('generator', 'the generator')}`: `{folder.name}`",
        "",
        f"{len(found)} records; recipe {', '.join(sorted({r['recipe_hash'] for r in found} - {''}))}"
        + (f" (`{exp['recipe_file']}`)" if exp.get("recipe_file") else "")
        + ". Per seed, one pixel-pretrained "
        "generator (`pixel`, the starting point) is fine-tuned with the recipe's GAN phase against each discriminator.",
        "Mean ± sd over seeds; Y-PSNR in dB (higher better), NIQE and LPIPS lower better"
        + (
            f"; `{selection}` is the validation slice (it chose the pixel checkpoint), the other datasets are reported "
            "only."
            if selection
            else "."
        ),
    ]
    for dataset in datasets:
        columns = [k for k in metrics if any(m["values"].get((dataset, k)) for m in models.values())]
        title = f"{dataset} (validation slice)" if dataset == selection else dataset
        head = "| model | group | D params | seeds | " + " | ".join(METRICS[k].label for k in columns) + " |"
        lines += ["", f"## {title}", "", head, "|" + "---|" * (4 + len(columns))]
        for name, m in models.items():
            cells = [name, m["group"], f"{m['params']:,}" if m["params"] else "-", str(len(m["seeds"]))]
            lines.append("| " + " | ".join(cells + [_cell(m["values"].get((dataset, k)), k) for k in columns]) + " |")
        if dataset in bicubic:
            values = [format_value(bicubic[dataset].get(k), METRICS[k].digits) for k in columns]
            lines.append("| bicubic | - | - | - | " + " | ".join(values) + " |")
    if diffs:
        lines += [
            "",
            "## What the searched discriminators change",
            "",
            "Paired by seed: a seed's fine-tunes start from the same pixel model. Gap = searched − other "
            "(per seed); seed sd = the spread of one model over seeds (pooled over the GAN models), for "
            "scale. With a few seeds, 'better on all seeds' is a hint, not a test.",
            "",
            "| dataset | metric | model | mean | − reference | − random mean | seed sd |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in diffs:
            digits = _digits(row["metric"])
            lines.append(
                f"| {row['dataset']} | {METRICS[row['metric']].label} | {row['model']} | "
                f"{row['mean']:.{digits}f} | {_gaps(row, 'reference')} | {_gaps(row, 'random mean')} | "
                f"{format_value(row['seed_sd'], digits)} |"
            )
        lines.append("")
        for row in diffs:
            parts = [f"vs {label}: {_judge(v, row['metric'])}" for label, v in row["versus"].items()]
            if parts:
                lines.append(f"- {row['dataset']} {METRICS[row['metric']].label}, {row['model']}: " + "; ".join(parts))
    if against_random:
        lines += [
            "",
            "## Against a discriminator drawn at random",
            "",
            "Gap = the model's mean over seeds − the random discriminators' mean, with a 95% t interval over the "
            "random ones (how much drawing a discriminator varies, df = their number − 1) and the model's seed noise. "
            "'Beyond the noise' = the whole interval on one side.",
            "",
            "| dataset | metric | model | gap to random mean | 95% interval | beats random | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in against_random:
            digits = _digits(row["metric"])
            verdict = (
                "better beyond the noise"
                if row["better_beyond_noise"]
                else "worse beyond the noise"
                if row["worse_beyond_noise"]
                else "within the noise"
            )
            lines.append(
                f"| {row['dataset']} | {METRICS[row['metric']].label} | {row['model']} | {row['gap']:+.{digits}f} | "
                f"[{row['low']:+.{digits}f}, {row['high']:+.{digits}f}] | "
                f"{row['beats_random']} of {row['random_models']} | {verdict} |"
            )
    if selection and plot_front(models, selection, folder / FRONT_PLOT):
        lines += ["", f"![{selection}: Y-PSNR against NIQE]({FRONT_PLOT})"]
    text = "\n".join(lines) + "\n"
    summary = {
        "experiment": folder.name,
        "records": len(found),
        "models": {
            n: {
                "group": m["group"],
                "seeds": sorted(m["seeds"]),
                "values": {
                    f"{d}/{k}": dict(zip(("mean", "sd"), stats.mean_sd(list(v.values())))) | {"n": len(v)}
                    for (d, k), v in m["values"].items()
                },
            }
            for n, m in models.items()
        },
        "differences": diffs,
        "versus_random": against_random,
    }
    records.write_json(folder / records.SUMMARY, summary)
    atomic_write_text(folder / records.REPORT, text)
    return text


# --- the front ----------------------------------------------------------------------------------------------------

FRONT_PLOT = "front.png"
FRONT_STYLE = {
    "pixel": {"marker": "D", "color": "black", "markersize": 6},
    "published": {"marker": "*", "color": "tab:blue", "markersize": 12},
    "searched": {"marker": "^", "color": "tab:red", "markersize": 8},
    "random": {"marker": "o", "color": "0.55", "markersize": 6},
}
OTHER_STYLE = {"marker": "s", "color": "tab:green", "markersize": 7}  # the reference and other built-ins


def _nearby_labels(points: dict[str, tuple[float, float]]) -> dict[tuple[float, float], list[str]]:
    """One label per spot: names whose points lie within 1.5% of the axes' spans of a labelled one join its label."""
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    dx, dy = 0.015 * ((max(xs) - min(xs)) or 1.0), 0.015 * ((max(ys) - min(ys)) or 1.0)
    spots: dict[tuple[float, float], list[str]] = {}
    for name, (x, y) in points.items():
        near = next((at for at in spots if abs(at[0] - x) <= dx and abs(at[1] - y) <= dy), (x, y))
        spots.setdefault(near, []).append(name)
    return spots


def plot_front(models: dict[str, dict], dataset: str, path: Path) -> bool:
    """Y-PSNR against NIQE on ``dataset`` (the validation slice): each model at its mean over seeds with each seed's
    point beside it, the models no other beats on both axes joined (the front). False when no model has both."""
    from darts_sr.search.plots import plt  # the Agg backend, set before pyplot loads

    points = {
        n: (m["values"][(dataset, "niqe")], m["values"][(dataset, "psnr_y")])
        for n, m in models.items()
        if m["values"].get((dataset, "niqe")) and m["values"].get((dataset, "psnr_y"))
    }
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5.5), layout="constrained")
    shown: set[str] = set()
    means = {}
    for name, (niqe, psnr) in points.items():
        group = models[name]["group"]
        style = FRONT_STYLE.get(group, OTHER_STYLE)
        x, y = stats.mean_sd(list(niqe.values()))[0], stats.mean_sd(list(psnr.values()))[0]
        means[name] = (x, y)
        seeds = sorted(set(niqe) & set(psnr))
        if len(seeds) > 1:
            ax.scatter([niqe[k] for k in seeds], [psnr[k] for k in seeds], s=10, color=style["color"], alpha=0.45)
            for k in seeds:
                ax.plot([x, niqe[k]], [y, psnr[k]], color=style["color"], alpha=0.3, linewidth=0.8)
        label = group if group in FRONT_STYLE else "reference / built-in"
        ax.plot(x, y, linestyle="none", label=None if label in shown else label, **style)
        shown.add(label)
    for (x, y), names in _nearby_labels(means).items():
        ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(5, 3), textcoords="offset points")
    points_at = list(means.values())
    front = sorted(p for p in points_at if not any(o[0] <= p[0] and o[1] >= p[1] and o != p for o in points_at))
    ax.plot([p[0] for p in front], [p[1] for p in front], color="0.3", linestyle=":", linewidth=1, label="front")
    ax.set_xlabel(f"{dataset} NIQE (lower is better)")
    ax.set_ylabel(f"{dataset} Y-PSNR, dB (higher is better)")
    ax.set_title(f"{dataset}: each model's mean over seeds (small points: single seeds)", fontsize=9)
    ax.invert_xaxis()  # better is up and to the right
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


if __name__ == "__main__":
    sys.exit(main())
