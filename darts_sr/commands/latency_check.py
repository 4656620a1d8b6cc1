"""Does a latency table still predict this machine? Time genotypes end to end as the table was built and compare.

darts-sr latency-check --table results/latency/eager_t1.json runs/S/genotype_generator.json tpsr [--target-ms 90]
                       [--repeats 30] [--warmup 5] [--json OUT.json]

Each genotype (a JSON file or a built-in name) is timed with the table's backend, threads and device at the scale's
720p LR size (random weights, batch 1: ``darts_sr.evaluation.latency.measure_many``), beside the table's prediction.
With ``--target-ms`` (a latency search's target) each measured time is also set against the target: the search's
promise is the derived network's measured latency within a few percent of it on the machine the table was built on.
Time on a quiet machine: the load average before and after is printed and recorded. A shared or throttling machine
drifts (on this project's 2-core VM one genotype measured 78 to 114 ms in three quiet runs minutes apart), so
``--reference tpsr`` times a reference in the same interleaved rounds and also reports each genotype rescaled by the
reference's measured/predicted ratio: the table's error with the machine's drift taken out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from darts_sr import cli
from darts_sr.config import ConfigError
from darts_sr.evaluation.latency import LatencyTable, measure_many, predict_ms, warn_if_loaded
from darts_sr.io import atomic_write_text
from darts_sr.nets.genotype import load_generator_genotype
from darts_sr.nets.networks import generator_macs

log = logging.getLogger("latency-check")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("genotypes", nargs="+", metavar="GENOTYPE", help="genotype JSON files or built-in names (tpsr)")
    p.add_argument("--table", required=True, help="the latency table (darts-sr latency-table)")
    p.add_argument("--target-ms", type=float, help="also report each measured time against this target")
    p.add_argument("--reference", metavar="GENOTYPE", help="timed in the same rounds; rescales the others by its drift")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds; the median is kept (30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (5)")
    p.add_argument("--json", metavar="OUT.json", help="write the rows and the load as JSON")
    return p.parse_args(argv)


def check(args: argparse.Namespace) -> list[dict]:
    if args.target_ms is not None and args.target_ms <= 0:
        raise ConfigError(f"--target-ms {args.target_ms}: must be positive")
    table = LatencyTable.load(args.table)
    names = list(args.genotypes) + ([args.reference] if args.reference else [])
    genotypes = [load_generator_genotype(g) for g in names]
    predicted = [predict_ms(g, table) for g in genotypes]  # refuses a genotype the table cannot price, before timing
    prov = table.provenance
    load_before = os.getloadavg()
    warn_if_loaded(load_before, prov.threads)
    measured = measure_many(genotypes, prov.backend, prov.threads, None, args.repeats, args.warmup, prov.device)
    load_after = os.getloadavg()
    # The machine's drift since the table was built, as the reference shows it (None without a reference).
    drift = measured[-1] / predicted[-1] if args.reference else None
    rows = []
    for name, g, pred, meas in zip(names, genotypes, predicted, measured):
        row = {
            "genotype": name,
            "gmacs_720p": generator_macs(g) / 1e9,
            "predicted_ms": pred,
            "measured_ms": meas,
            "table_error": meas / pred - 1,
        }
        if drift is not None:
            row["drift_corrected_ms"] = meas / drift
        if args.target_ms is not None:
            row["target_ms"] = args.target_ms
            row["target_error"] = meas / args.target_ms - 1
            if drift is not None:
                row["drift_corrected_target_error"] = meas / drift / args.target_ms - 1
        rows.append(row)
    lines = [
        f"{prov.backend}, {prov.threads} thread(s), {prov.device}; load {load_before[0]:.2f} -> {load_after[0]:.2f}"
    ]
    for r in rows:
        target = "" if "target_error" not in r else f", {r['target_error']:+.1%} vs target {r['target_ms']:g} ms"
        if "drift_corrected_ms" in r:
            target += f"; drift-corrected {r['drift_corrected_ms']:.1f} ms"
            if "drift_corrected_target_error" in r:
                target += f" ({r['drift_corrected_target_error']:+.1%} vs target)"
        lines.append(
            f"{r['genotype']}: {r['gmacs_720p']:.3f} GMACs, predicted {r['predicted_ms']:.1f} ms, "
            f"measured {r['measured_ms']:.1f} ms ({r['table_error']:+.1%} vs table{target})"
        )
    print("\n".join(lines))
    if args.json:
        record = {
            "table": args.table,
            "backend": prov.backend,
            "threads": prov.threads,
            "device": prov.device,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "load_before": list(load_before),
            "load_after": list(load_after),
            "reference": args.reference,
            "drift": drift,
            "rows": rows,
        }
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: check(args))
