"""CPU latency of one 720p output frame: PyTorch eager vs ONNX Runtime, with MACs beside each.

    .venv/bin/python bench/latency.py [--genotype {tpsr|PATH.json} ...] [--threads N] [--repeats 15] [--warmup 3]
                                      [--ort-variants]

Input is the reference LR size of each genotype's scale (1x3x180x320 for x4, a 1280x720 output). Weights are random:
latency does not depend on their values. Eager runs under ``torch.no_grad()`` in eval mode; ONNX Runtime uses the
CPU execution provider with graph optimisation ALL, sequential execution and ``--threads`` intra-op threads
(torch gets the same count). Eager and ORT runs alternate, so load from other users of the machine hits both alike;
the median of ``--repeats`` runs after ``--warmup`` is reported. ``--ort-variants`` also times ORT under other
session options for the first model.

Default models: TPSR and two derived from it with the same 10 nodes and wiring: ``tpsr_sep`` (every dense conv
replaced by the separable op of the same kernel) and ``tpsr_3x3`` (every kernel cut to 3x3), to compare cheaper
derived models per MAC.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darts_sr.evaluation.export import onnx_bytes, run_session, session  # noqa: E402
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node, load_generator_genotype  # noqa: E402
from darts_sr.nets.networks import REFERENCE_LR_SIZE, Generator, generator_macs, generator_params  # noqa: E402

TPSR_SEP = GeneratorGenotype(
    nodes=tuple(Node(n.op.replace("conv_", "sep_"), n.input) for n in TPSR.nodes),
    outputs=TPSR.outputs,
    channels=TPSR.channels,
    scale=TPSR.scale,
)
# TPSR's wiring with every 5x5 and 7x7 kernel cut to 3x3: dense convs only, fewer MACs.
TPSR_3X3 = GeneratorGenotype(
    nodes=tuple(Node(n.op[:-3] + "3x3", n.input) for n in TPSR.nodes),
    outputs=TPSR.outputs,
    channels=TPSR.channels,
    scale=TPSR.scale,
)
BUILTIN = {"tpsr": TPSR, "tpsr_sep": TPSR_SEP, "tpsr_3x3": TPSR_3X3}


def median_ms(fns: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time of each fn in ms; the fns are called in turn within each repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def ort_variants(threads: int) -> dict[str, dict]:
    level = ort.GraphOptimizationLevel
    return {
        "ORT all, sequential (used)": dict(threads=threads),
        "ORT basic": dict(threads=threads, optimization=level.ORT_ENABLE_BASIC),
        "ORT extended": dict(threads=threads, optimization=level.ORT_ENABLE_EXTENDED),
        "ORT disabled": dict(threads=threads, optimization=level.ORT_DISABLE_ALL),
        "ORT all, parallel": dict(threads=threads, sequential=False),
        "ORT all, 1 thread": dict(threads=1),
        "ORT all, default threads": dict(threads=None),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotype", action="append", help=f"{', '.join(BUILTIN)} or a genotype JSON; repeatable")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: all cores")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ort-variants", action="store_true", help="also time other ORT session options (first model)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = args.genotype or list(BUILTIN)
    genotypes = {s: BUILTIN[s] if s in BUILTIN else load_generator_genotype(s) for s in specs}

    load = os.getloadavg()
    print(
        f"CPU, {args.threads} threads (torch intra-op and ORT intra-op), torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; median of {args.repeats} after {args.warmup} warm-up; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores\n"
    )
    rows, tpsr_ms_per_gmac = [], None
    for i, (name, genotype) in enumerate(genotypes.items()):
        torch.manual_seed(0)
        model = Generator(genotype).eval()
        x = torch.rand(1, 3, *REFERENCE_LR_SIZE[genotype.scale])
        data = onnx_bytes(model)
        sess = session(data, threads=args.threads)

        def eager(model=model, x=x):
            with torch.no_grad():
                return model(x)

        fns = {"eager": eager, "ORT": lambda sess=sess, x=x: run_session(sess, x)}
        if args.ort_variants and i == 0:
            variants = {label: session(data, **kw) for label, kw in list(ort_variants(args.threads).items())[1:]}
            for label, variant in variants.items():
                fns[label] = lambda variant=variant, x=x: run_session(variant, x)
        ms = median_ms(fns, args.warmup, args.repeats)
        gmacs = generator_macs(genotype) / 1e9
        if genotype == TPSR:
            tpsr_ms_per_gmac = ms["eager"] / gmacs, ms["ORT"] / gmacs
        rows.append((name, genotype, gmacs, ms))

    print("| model | scale | nodes | params | GMACs | eager ms | eager ms/GMAC | ORT ms | ORT ms/GMAC | ORT/eager |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, g, gmacs, ms in rows:
        e, o = ms["eager"], ms["ORT"]
        print(
            f"| {Path(name).stem} | x{g.scale} | {len(g.nodes)} | {generator_params(g):,} | {gmacs:.3f} | {e:.1f} | "
            f"{e / gmacs:.1f} | {o:.1f} | {o / gmacs:.1f} | {o / e:.2f} |"
        )
    for name, _, _, ms in rows:
        if len(ms) > 2:
            print(f"\nORT session options, {Path(name).stem} (eager {ms['eager']:.1f} ms):\n")
            print("| options | ms | /eager |\n|---|---|---|")
            print(f"| {list(ort_variants(args.threads))[0]} | {ms['ORT']:.1f} | {ms['ORT'] / ms['eager']:.2f} |")
            for label, t in ms.items():
                if label not in ("eager", "ORT"):
                    print(f"| {label} | {t:.1f} | {t / ms['eager']:.2f} |")

    print("\nGoals:")
    ratios = ", ".join(f"{ms['ORT'] / ms['eager']:.2f}" for *_, ms in rows)
    met = all(ms["ORT"] <= 0.7 * ms["eager"] for *_, ms in rows)
    print(f"- ORT <= 0.7x eager: {'met' if met else 'NOT met'} (ORT/eager {ratios})")
    if tpsr_ms_per_gmac is None:
        print("- per MAC vs TPSR: TPSR not among the models")
    else:
        for k, backend in enumerate(("eager", "ORT")):
            slower = [Path(n).stem for n, g, gm, ms in rows if g != TPSR and ms[backend] / gm > tpsr_ms_per_gmac[k]]
            verdict = "met" if not slower else f"NOT met ({', '.join(slower)} slower per MAC)"
            print(f"- no derived model slower per MAC than TPSR ({backend}): {verdict}")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
