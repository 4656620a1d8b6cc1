"""Does the supernet rank architectures as standalone training does? Kendall's tau between the two rankings.

    darts-sr rank-check runs/search --samples 12 --recipe configs/compare_cpu.yaml

Samples ``--samples`` genotypes within ``--tolerance`` of the search's target MACs (the project's own sampler,
the search's ops, node count and skip cap), then scores each twice on a validation slice held out of the
training images (never a reported benchmark):

1. with the supernet's inherited weights: the architecture parameters set to the genotype, the search-time
   batch norms recalibrated on training batches of that path (their running statistics are shared by every
   path), Y-PSNR of the argmax network;
2. standalone: ``Generator(genotype)`` retrained from scratch with the recipe's pixel phase, Y-PSNR at the end.

Standalone results are trial records (``darts_sr.training.trials``), ``<key>.json`` in ``--records`` (the trial's key),
written as each lands and reused by every later call: the same samples serve every search run with the same target,
and an interrupted check continues where it stopped; ``--reuse RESULTS`` copies a trial another experiment recorded
(calibrate's matched ladder trains the same samples when its recipe is the same). With ``--standalone-seeds K`` each
genotype is trained with seeds 0..K-1 and ranked by its mean; from K = 2 the result also says how reliable those
means are (``stats.reliability_of_means``) and the most tau they allow against a noise-free supernet score
(``stats.tau_ceiling``): at matched MACs genotypes differ by about one seed's noise, so a low tau may be the
yardstick's and not the supernet's. The result, with tau and its p-value, goes to ``<run>/rank_check.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from darts_sr import cli, run_files
from darts_sr.config import ConfigError, SearchConfig, TrainConfig, from_dict, load_config
from darts_sr.data import DEFAULT_BENCHMARKS, HOLDOUT, PatchSampler, load_dataset, load_training_pairs, parse_data_spec
from darts_sr.evaluation.scoring import Evaluator, evaluate_pairs
from darts_sr.experiments import stats
from darts_sr.io import atomic_write_text, load_checkpoint
from darts_sr.nets.genotype import GeneratorGenotype, load_generator_genotype
from darts_sr.nets.networks import MacsWindow, generator_macs, generator_params
from darts_sr.search.sampling import matched_random_genotypes
from darts_sr.search.supernet import GeneratorSupernet
from darts_sr.training.trials import (
    HOLDOUT_VAL,
    Planned,
    Trial,
    TrialRecord,
    add_reuse_argument,
    resolve_validation,
    run_trials,
    short_hash,
)

log = logging.getLogger("rank_check")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a search run folder (config.yaml and checkpoints/last.pt)")
    p.add_argument("--samples", type=int, default=12, help="how many genotypes (default 12)")
    p.add_argument("--tolerance", type=float, default=0.03, help="MACs window around the target (default ±3%%)")
    p.add_argument("--recipe", type=Path, default=Path("configs/compare_cpu.yaml"), help="standalone recipe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--records", type=Path, default=Path("results/rank_check"), help="standalone records folder")
    p.add_argument("--split-dir", type=Path, default=Path("runs/rank_check_split"), help="where the split's links go")
    p.add_argument("--seed", type=int, default=0, help="genotype sampling seed")
    p.add_argument("--calibration-batches", type=int, default=20)
    p.add_argument("--standalone-seeds", type=int, default=1, help="training seeds per genotype, mean ranked (1)")
    add_reuse_argument(p)
    p.add_argument("--only-standalone", action="store_true", help="train the missing records, skip the supernet")
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="with --only-standalone: train samples i, i+N, ... (N processes share the work)",
    )
    p.add_argument(
        "--benchmark",
        action="append",
        metavar="NAME=PATH",
        help="benchmarks each standalone model is also scored on, for reporting only (default: Set5 and Set14)",
    )
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="GENOTYPE.json",
        help="more genotypes (e.g. searched ones) to retrain and place among the samples",
    )
    return p.parse_args(argv)


def standalone_records(
    genotypes: list[GeneratorGenotype],
    recipe: TrainConfig,
    records: Path,
    work: Path,
    benchmarks: list[tuple[str, str]],
    shard: str = "0/1",
    seeds: int = 1,
    reuse: list[Path] = (),
) -> list[list[TrialRecord]]:
    """Each genotype retrained with ``recipe`` (pixel phase, seeds 0..``seeds``-1) as ``Trial``s, recorded as
    ``<key>.json`` in ``records`` (the trial's key: the same samples serve every search run with the same target).
    The model kept is the recipe's best on the holdout slice; benchmarks are scored with it for reporting, never for
    choosing. Returns each genotype's records (those of this shard that are done)."""
    trials = [Trial(g, recipe, seed) for g in genotypes for seed in range(seeds)]
    planned = [Planned(t.key(), t, {"model": "standalone", "group": "sample"}) for t in trials]
    evaluator = Evaluator(benchmarks, recipe.data.scale, cli.resolve_device(recipe.run.device))
    done = {r.key: r for r in run_trials(planned, records, work, evaluator, shard, reuse)}
    return [
        [done[p.name] for p in planned[i * seeds : (i + 1) * seeds] if p.name in done] for i in range(len(genotypes))
    ]


def mean_psnr(records: list[TrialRecord], dataset: str = HOLDOUT_VAL) -> float:
    return stats.mean_sd([r.psnr(dataset) for r in records])[0]


def convert_legacy_record(old: dict, train_specs: tuple[str, ...]) -> TrialRecord:
    """A record of the rank_check format before trials (``val_psnr``, ``benchmark_psnr``, the whole recipe with
    this machine's split folders) as a ``TrialRecord``, numbers unchanged. Its identity names the data as it was
    then: the training folders given (``train_specs``) less the holdout only, since Set5's duplicate was not yet
    left out; so it never matches a trial trained on today's clean pool."""
    recipe = from_dict(TrainConfig, old["recipe"])
    recipe = replace(recipe, data=replace(recipe.data, train=tuple(train_specs), val=HOLDOUT_VAL))
    trial = Trial(GeneratorGenotype.from_dict(old["genotype"]), recipe, old["seed"])
    held = {Path(n).stem: "holdout" for n in HOLDOUT}
    identity = trial.identity(excluded=held)
    scores = {
        "holdout": {"dataset": "holdout", "psnr_y": old["val_psnr"]},
        **{k: {"dataset": k, "psnr_y": v} for k, v in old["benchmark_psnr"].items()},
    }
    return TrialRecord(
        key=short_hash(identity),
        recipe_hash=short_hash(
            {k: v for k, v in identity.items() if k not in ("genotype", "seed", "discriminator")}, 12
        ),
        identity=identity,
        seed=old["seed"],
        genotype=old["genotype"],
        params=generator_params(trial.genotype),
        macs_720p=old["macs_720p"],
        selection=HOLDOUT_VAL,
        scores={"pixel": scores},
        steps=old["steps"],
        wall_time_s=old["wall_time_s"],
        model="standalone",
        group="sample",
        extra={"converted_from": "rank_check record before trials (training pool included BSD200 302003.png)"},
    )


@torch.no_grad()
def supernet_psnr(net: GeneratorSupernet, genotype: GeneratorGenotype, sampler, val_pairs, batches: int) -> float:
    """Y-PSNR of the argmax path ``genotype`` with inherited weights, after recalibrating the search batch norms."""
    net.set_genotype(genotype, confidence=30.0)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
        m.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(batches if norms else 0):
        lq, _gt = sampler.sample(16, generator)
        net(lq)
    net.eval()
    return evaluate_pairs(net, val_pairs, "holdout", net.scale)["psnr_y"]


def place_among_samples(names: list[str], extra: list[list[TrialRecord]], samples: list[list[TrialRecord]]) -> None:
    """Prints where each extra genotype (a searched one, say) falls among the random samples, per score (means over
    seeds)."""
    for name, records in zip(names, extra):
        datasets = [HOLDOUT_VAL, *(d for d in records[0].scores["pixel"] if d != HOLDOUT_VAL)]
        cells = []
        for dataset in datasets:
            value, population = mean_psnr(records, dataset), [mean_psnr(r, dataset) for r in samples]
            cells.append(
                f"{dataset} {value:.3f} dB (random median {np.median(population):.3f}, above "
                f"{sum(value > p for p in population)} of {len(population)})"
            )
        print(f"{name}: {generator_macs(load_generator_genotype(name)) / 1e9:.3f} GMACs; " + "; ".join(cells))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: rank_check(args))


def rank_check(args: argparse.Namespace) -> None:
    search = load_config(SearchConfig, args.run / run_files.CONFIG)
    s = search.supernet
    window = MacsWindow.around(search.cost.target_macs, search.data.scale, args.tolerance)
    genotypes = matched_random_genotypes(
        args.samples,
        window,
        args.seed,
        ops=tuple(o for o in s.ops if o != "none"),
        nodes=s.nodes,
        channels=s.channels,
        scale=search.data.scale,
        input_window=s.input_window,
        max_skip_nodes=s.max_skip_nodes,
    )
    recipe = load_config(TrainConfig, args.recipe, [*args.set, "gan_phase.steps=0"])
    if recipe.data.val != HOLDOUT_VAL:
        raise ConfigError(f"{args.recipe}: data.val must be {HOLDOUT_VAL}: standalone models are judged on it")
    work = args.split_dir.parent / "rank_check_runs"
    benchmarks = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    also = [load_generator_genotype(a) for a in args.also]
    if args.standalone_seeds < 1:
        raise ConfigError(f"--standalone-seeds {args.standalone_seeds}: at least 1")
    common = (args.records, work, benchmarks)
    seeds = {"seeds": args.standalone_seeds, "reuse": args.reuse}
    if args.only_standalone:
        standalone_records([*genotypes, *also], recipe, *common, args.shard, **seeds)
        if args.shard != "0/1":
            return  # the other shards may still be training; rerun with --shard 0/1 for the comparison
    samples = standalone_records(genotypes, recipe, *common, **seeds)
    extra = standalone_records(also, recipe, *common, **seeds)
    place_among_samples(args.also, extra, samples)
    if args.only_standalone:
        return
    standalone = [mean_psnr(r) for r in samples]
    _spread, floor, reliability = stats.reliability_of_means([[r.psnr(HOLDOUT_VAL) for r in rs] for rs in samples])
    net = GeneratorSupernet(s.nodes, s.channels, search.data.scale, s.ops, s.input_window, s.strategy, s.normalize)
    net.load_state_dict(load_checkpoint(args.run / run_files.GENERATOR_SEARCH.checkpoint)["supernet"])
    scale = search.data.scale
    sampler = PatchSampler(
        load_training_pairs(recipe.data.train, scale), search.data.patch_size, scale, skip_small=search.data.skip_small
    )
    val_pairs = load_dataset(resolve_validation(recipe, args.split_dir).data.val, scale)
    inherited = [supernet_psnr(net, g, sampler, val_pairs, args.calibration_batches) for g in genotypes]
    tau, p_value = kendalltau(inherited, standalone)
    result = {
        "run": str(args.run),
        "samples": args.samples,
        **window.record(),
        "tau": float(tau),
        "p_value": float(p_value),
        "recipe": str(args.recipe),
        "standalone_seeds": args.standalone_seeds,
        "standalone_noise_floor": floor,  # None with one seed
        "standalone_reliability": reliability,
        "tau_ceiling": stats.tau_ceiling(reliability, 1.0),  # the supernet's score taken as noise-free: an upper bound
        "genotypes": [
            {
                "genotype": g.to_dict(),
                "macs_720p": generator_macs(g),
                "supernet_psnr": a,
                "standalone_psnr": b,
                "records": [r.key for r in rs],
            }
            for g, a, b, rs in zip(genotypes, inherited, standalone, samples)
        ],
        "also": [
            {"genotype": spec, "records": [r.key for r in rs], "holdout_psnr": mean_psnr(rs)}
            for spec, rs in zip(args.also, extra)
        ],
    }
    atomic_write_text(args.run / "rank_check.json", json.dumps(result, indent=2) + "\n")
    ceiling = result["tau_ceiling"]
    limit = (
        "" if ceiling is None else f"; the standalone means' reliability {reliability:.2f} allows at most {ceiling:.2f}"
    )
    print(f"Kendall tau {tau:.3f} (p = {p_value:.3f}) over {args.samples} genotypes{limit}")


if __name__ == "__main__":
    sys.exit(main())
