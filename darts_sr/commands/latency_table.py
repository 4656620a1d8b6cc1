"""Build (and validate) a latency table for this machine: ms per op of the generator search space and per fixed part.

darts-sr latency-table --backend {eager,onnxruntime} --threads N [--lr-size 180x320] [--channels 16] [--scale 4]
                       [--device cpu|cuda] [--repeats 50] [--warmup 5] --out TABLE.json [--validate K [--seed S]]

Each op (C -> C at the LR size, batch 1), the stem, the upsampler and the output sum of k = 1..N nodes are timed
alone as tiny modules (eager PyTorch, or an ONNX Runtime CPU session with N intra-op threads); the median of
--repeats after --warmup is kept, with the machine's description and load (darts_sr.evaluation.latency).
--validate K also times K uniform random genotypes of the space (darts_sr.search.sampling, --seed) end to end and
records in the table how well the sum of parts predicts them: Spearman, MAPE raw and after a fitted linear
correction (used only when it wins out of sample). Build tables on a quiet machine; the table records the load.
"""

from __future__ import annotations

import argparse
import logging
import random

from darts_sr import cli
from darts_sr.config import ConfigError, SupernetConfig
from darts_sr.evaluation.latency import BACKENDS, build_table, parse_lr_size, predict_ms, summary, validate
from darts_sr.nets.genotype import TPSR, GeneratorGenotype
from darts_sr.nets.networks import REFERENCE_LR_SIZE
from darts_sr.search.sampling import sample_genotype

log = logging.getLogger("latency-table")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    space = SupernetConfig()
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", required=True, choices=BACKENDS, help="eager PyTorch or ONNX Runtime (CPU)")
    p.add_argument("--threads", required=True, type=int, metavar="N", help="torch / ORT intra-op threads")
    p.add_argument("--lr-size", metavar="HxW", help="LR input size (default: the scale's 720p output, 180x320 at x4)")
    p.add_argument("--channels", action="append", type=int, metavar="C", help=f"repeatable (default {space.channels})")
    p.add_argument("--scale", type=int, default=4, help="x2, x3 or x4 upsampler (default 4)")
    p.add_argument("--ops", help=f"comma-separated ops (default the search space: {','.join(space.ops)})")
    p.add_argument("--max-outputs", type=int, default=space.nodes, help=f"output sums timed for k=1..N ({space.nodes})")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (onnxruntime: cpu only)")
    p.add_argument("--repeats", type=int, default=50, help="timed rounds; the median is kept (50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (5)")
    p.add_argument("--out", required=True, help="the table's JSON file")
    p.add_argument("--validate", type=int, default=0, metavar="K", help="time K random genotypes end to end (K >= 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --validate genotypes (0)")
    return p.parse_args(argv)


def validation_genotypes(
    count: int, seed: int, channels: int, scale: int, ops: tuple[str, ...]
) -> list[GeneratorGenotype]:
    """``count`` distinct uniform random genotypes of the supernet's space (its nodes, input window, skip cap)."""
    space = SupernetConfig()
    rng, found, seen = random.Random(seed), [], set()
    for _ in range(100 * count):
        if len(found) == count:
            return found
        g = sample_genotype(
            rng,
            ops,
            nodes=space.nodes,
            channels=channels,
            scale=scale,
            input_window=space.input_window,
            max_skip_nodes=space.max_skip_nodes,
        )
        if g.canonical_form() not in seen:
            seen.add(g.canonical_form())
            found.append(g)
    if len(found) < count:
        raise ConfigError(f"--validate {count}: the space has fewer distinct genotypes (found {len(found)})")
    return found


def run(args: argparse.Namespace) -> None:
    lr_size = parse_lr_size(args.lr_size) if args.lr_size is not None else None
    if args.scale not in REFERENCE_LR_SIZE:
        raise ConfigError(f"--scale {args.scale}: use one of {', '.join(map(str, REFERENCE_LR_SIZE))}")
    if args.validate and args.validate < 3:
        raise ConfigError(f"--validate {args.validate}: need at least 3 genotypes for a rank correlation")
    ops = tuple(o.strip() for o in args.ops.split(",")) if args.ops else SupernetConfig().ops
    channels = args.channels or [SupernetConfig().channels]
    device = cli.resolve_device(args.device)
    table = build_table(
        ops,
        channels,
        lr_size,
        args.backend,
        args.threads,
        args.repeats,
        args.warmup,
        device=device,
        scale=args.scale,
        max_outputs=args.max_outputs,
    )
    table.save(args.out)  # a long validation that fails or is stopped keeps the table
    log.info("%s\nwrote %s", summary(table), args.out)
    if {n.op for n in TPSR.nodes} <= set(ops):
        reference = GeneratorGenotype(TPSR.nodes, TPSR.outputs, channels[0], args.scale)
        log.info(
            "TPSR's genotype at %d channels, x%d: %.3f ms predicted",
            channels[0],
            args.scale,
            predict_ms(reference, table),
        )
    if args.validate:
        genotypes = validation_genotypes(args.validate, args.seed, channels[0], args.scale, ops)
        result = validate(table, genotypes)
        table.validation = result | {"seed": args.seed, "sampler": "darts_sr.search.sampling.sample_genotype"}
        table.save(args.out)
        log.info("wrote %s with its validation", args.out)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: run(args))
