"""Does the supernet rank architectures as standalone training does? Kendall's tau between the two rankings.

    python -m darts_sr.rank_check runs/search --samples 12 --recipe configs/compare_cpu.yaml

Samples ``--samples`` genotypes within ``--tolerance`` of the search's target MACs (the project's own sampler,
the search's ops, node count and skip cap), then scores each twice on a validation slice held out of the
training images (never a reported benchmark):

1. with the supernet's inherited weights: the architecture parameters set to the genotype, the search-time
   batch norms recalibrated on training batches of that path (their running statistics are shared by every
   path), Y-PSNR of the argmax network;
2. standalone: ``Generator(genotype)`` retrained from scratch with the recipe's pixel phase, Y-PSNR at the end.

Standalone results are records, one JSON per genotype in ``--records`` (keyed by genotype and recipe), written as
each lands and reused by every later call: the same samples serve every search run with the same target, and an
interrupted check continues where it stopped. The result, with tau and its p-value, goes to
``<run>/rank_check.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from darts_sr import cli, run_files
from darts_sr.compare import train_model
from darts_sr.config import SearchConfig, TrainConfig, load_config, to_dict
from darts_sr.data import DEFAULT_BENCHMARKS, HOLDOUT, PatchSampler, holdout_split, load_dataset, parse_data_spec
from darts_sr.evaluation import evaluate_pairs
from darts_sr.genotype import GeneratorGenotype, load_generator_genotype
from darts_sr.io import atomic_write_text, load_checkpoint
from darts_sr.networks import generator_macs, load_generator
from darts_sr.sampling import matched_random_genotypes
from darts_sr.search import default_target
from darts_sr.supernet import GeneratorSupernet

log = logging.getLogger("rank_check")

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a search run folder (config.yaml and checkpoints/last.pt)")
    p.add_argument("--samples", type=int, default=12, help="how many genotypes (default 12)")
    p.add_argument("--tolerance", type=float, default=0.03, help="MACs window around the target (default ±3%%)")
    p.add_argument("--recipe", type=Path, default=Path("configs/compare_cpu.yaml"), help="standalone recipe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--records", type=Path, default=Path("results/rank_check"), help="standalone records folder")
    p.add_argument("--split-dir", type=Path, default=Path("runs/rank_check_split"), help="where the split's links go")
    p.add_argument("--seed", type=int, default=0, help="genotype sampling seed")
    p.add_argument("--calibration-batches", type=int, default=20)
    p.add_argument("--only-standalone", action="store_true", help="train the missing records, skip the supernet")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="with --only-standalone: train samples i, i+N, ... (N processes share the work)")  # fmt: skip
    p.add_argument(
        "--benchmark", action="append", metavar="NAME=PATH",
        help="benchmarks each standalone model is also scored on, for reporting only (default: Set5 and Set14)",
    )  # fmt: skip
    p.add_argument("--also", action="append", default=[], metavar="GENOTYPE.json",
                   help="more genotypes (e.g. searched ones) to retrain and place among the samples")  # fmt: skip
    return p.parse_args(argv)




def record_key(genotype: GeneratorGenotype, recipe: dict) -> str:
    text = json.dumps({"genotype": genotype.to_dict(), "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def standalone_record(
    genotype: GeneratorGenotype, recipe: TrainConfig, records: Path, work: Path, benchmarks: list[tuple[str, str]]
) -> dict:
    """``genotype`` retrained with ``recipe`` (pixel phase): its record, trained now if it has none. The model kept
    is the recipe's best on the holdout slice; benchmarks are scored with it for reporting, never for choosing."""
    key = record_key(genotype, to_dict(recipe))
    path = records / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    run_dir = work / key
    summary = train_model(key, genotype, recipe, run_dir)
    model = load_generator(run_dir / run_files.MODEL_PIXEL)
    scores = {name: evaluate_pairs(model, load_dataset(p, genotype.scale), name, genotype.scale)["psnr_y"]
              for name, p in benchmarks}  # fmt: skip
    record = {
        "genotype": genotype.to_dict(), "macs_720p": generator_macs(genotype), "recipe": to_dict(recipe),
        "seed": recipe.run.seed, "val_psnr": summary["best_val_psnr_pixel"], "benchmark_psnr": scores,
        "steps": summary["steps"], "wall_time_s": summary["wall_time_s"],
    }  # fmt: skip
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


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


def place_among_samples(names: list[str], extra: list[dict], samples: list[dict]) -> None:
    """Prints where each extra genotype (a searched one, say) falls among the random samples, per score."""
    for name, record in zip(names, extra):
        scores = {"holdout": (record["val_psnr"], [r["val_psnr"] for r in samples])}
        for bench, value in record["benchmark_psnr"].items():
            scores[bench] = (value, [r["benchmark_psnr"][bench] for r in samples])
        cells = [
            f"{k} {v:.3f} dB (random median {np.median(pop):.3f}, above {sum(v > p for p in pop)} of {len(pop)})"
            for k, (v, pop) in scores.items()
        ]
        print(f"{name}: {generator_macs(load_generator_genotype(name)) / 1e9:.3f} GMACs; " + "; ".join(cells))


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    return cli.run(lambda: rank_check(args))


def rank_check(args: argparse.Namespace) -> None:
    search = load_config(SearchConfig, args.run / run_files.CONFIG)
    s = search.supernet
    target = search.cost.target_macs or default_target(search.data.scale)
    genotypes = matched_random_genotypes(
        args.samples, target, args.tolerance, args.seed, ops=tuple(o for o in s.ops if o != "none"), nodes=s.nodes,
        channels=s.channels, scale=search.data.scale, input_window=s.input_window, max_skip_nodes=s.max_skip_nodes,
    )  # fmt: skip
    recipe = load_config(TrainConfig, args.recipe, [*args.set, "gan_phase.steps=0"])
    train_dirs, val_dir = holdout_split(recipe.data.train, HOLDOUT, args.split_dir)
    recipe = replace(recipe, data=replace(recipe.data, train=tuple(train_dirs), val=val_dir))
    work = args.split_dir.parent / "rank_check_runs"
    benchmarks = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    if args.only_standalone:
        index, count = (int(v) for v in args.shard.split("/"))
        for g in [*genotypes, *map(load_generator_genotype, args.also)][index::count]:
            standalone_record(g, recipe, args.records, work, benchmarks)
        if count > 1:
            return  # the other shards may still be training; rerun with --shard 0/1 for the comparison
    samples = [standalone_record(g, recipe, args.records, work, benchmarks) for g in genotypes]
    extra = [standalone_record(load_generator_genotype(a), recipe, args.records, work, benchmarks) for a in args.also]
    place_among_samples(args.also, extra, samples)
    if args.only_standalone:
        return
    standalone = [r["val_psnr"] for r in samples]
    net = GeneratorSupernet(s.nodes, s.channels, search.data.scale, s.ops, s.input_window, s.strategy, s.normalize)
    net.load_state_dict(load_checkpoint(args.run / run_files.GENERATOR_SEARCH.checkpoint)["supernet"])
    scale = search.data.scale
    train_pairs = [p for d in train_dirs for p in load_dataset(d, scale)]
    sampler = PatchSampler(train_pairs, search.data.patch_size, scale)
    val_pairs = load_dataset(val_dir, scale)
    inherited = [supernet_psnr(net, g, sampler, val_pairs, args.calibration_batches) for g in genotypes]
    tau, p_value = kendalltau(inherited, standalone)
    result = {
        "run": str(args.run), "samples": args.samples, "target_macs_720p": target, "tolerance": args.tolerance,
        "tau": float(tau), "p_value": float(p_value), "recipe": str(args.recipe),
        "genotypes": [
            {"genotype": g.to_dict(), "macs_720p": generator_macs(g), "supernet_psnr": a, "standalone_psnr": b}
            for g, a, b in zip(genotypes, inherited, standalone)
        ],
        "also": [{"genotype": spec, **record} for spec, record in zip(args.also, extra)],
    }  # fmt: skip
    atomic_write_text(args.run / "rank_check.json", json.dumps(result, indent=2) + "\n")
    print(f"Kendall tau {tau:.3f} (p = {p_value:.3f}) over {args.samples} genotypes")


if __name__ == "__main__":
    sys.exit(main())
