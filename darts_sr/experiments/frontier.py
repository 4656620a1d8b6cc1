"""Quality against measured latency: every trained genotype of one recipe, timed on this machine, and the front.

    darts-sr frontier results/latency/realtime_compare results/calibration/p48_b4_6k \\
        --table results/latency/onnxruntime_t2.json --limit-ms 33 --out results/latency/frontier

Reads the trial records of the folders given (``compare``, ``calibrate``, ``baselines`` write them), which must all
come from one retraining recipe (one ``recipe_hash``: PSNRs of different recipes are not comparable), merges the
records of one genotype over folders and seeds (a trial recorded twice counts once), and times every genotype end to
end with the table's backend, threads and device, all in one interleaved run (``latency.measure_many``): on a VM
whose speed drifts ±15% between runs, one run keeps the genotypes comparable with each other. The timings are kept
in ``<out>/timings.json`` and reused while they cover every genotype and the table is the same; otherwise (or with
``--retime``) all are timed again. Time on a quiet machine: the load average is recorded.

Writes ``<out>/frontier.json`` (every genotype: group, params, MACs, measured ms, holdout PSNR per seed, mean and sd,
on the front or not), ``frontier.md`` and ``frontier.png``. The front is the genotypes no faster genotype beats on
mean holdout PSNR. At ``--limit-ms`` (a real-time budget) the report gives the best genotype of each group under
it; for each searched genotype, its percentile among the random genotypes within ``--tolerance`` of its measured
time. Groups: ``searched``; ``random`` (compare's random genotypes and calibrate's cost and matched ladders, all
uniform samples of a search space); ``tpsr``; ``tpsr_width`` (TPSR's wiring at other widths, the width ladder);
``baseline`` (hand-designed or rule-made genotypes, ``darts-sr baselines``).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from darts_sr import cli
from darts_sr.config import ConfigError
from darts_sr.evaluation.latency import LatencyTable, measure_many, warn_if_loaded
from darts_sr.experiments import stats
from darts_sr.io import atomic_write_bytes, atomic_write_text, file_sha256
from darts_sr.nets.genotype import TPSR, GeneratorGenotype
from darts_sr.training.trials import TrialError, read_record, short_hash

log = logging.getLogger("frontier")

TIMINGS, FRONTIER_JSON, FRONTIER_MD, FRONTIER_PNG = "timings.json", "frontier.json", "frontier.md", "frontier.png"
# Record groups as the experiments write them, and what they are on a frontier.
GROUP_OF = {
    "searched": "searched",
    "random": "random",
    "cost": "random",
    "matched": "random",
    "tpsr": "tpsr",
    "width": "tpsr_width",
    "baseline": "baseline",
}
# A genotype recorded under several names (TPSR is compare's "tpsr" and calibrate's "width_c16") is named by the
# most specific: what a search found, then the reference, then the first seen.
LABEL_RANK = {"searched": 2, "tpsr": 1}
STYLE = {  # group: colour, marker, size, label
    "random": ("0.55", "o", 18, "random genotypes"),
    "tpsr_width": ("tab:green", "s", 30, "TPSR's wiring at 8-32 channels"),
    "baseline": ("tab:blue", "D", 30, "baselines (hand-designed or by rule)"),
    "tpsr": ("black", "P", 70, "TPSR"),
    "searched": ("tab:red", "*", 140, "searched"),
}


@dataclass
class Point:
    """One genotype's records: holdout PSNR per seed, and its measured latency once timed."""

    name: str
    group: str
    genotype: dict
    params: int
    macs_720p: float
    seeds: dict[int, float] = field(default_factory=dict)  # seed -> holdout Y-PSNR
    keys: set[str] = field(default_factory=set)
    folder: str = ""  # the experiment its name came from
    measured_ms: float | None = None
    on_front: bool = False

    @property
    def key(self) -> str:
        return genotype_key(self.genotype)

    @property
    def psnr(self) -> float:
        return stats.mean_sd(list(self.seeds.values()))[0]

    @property
    def psnr_sd(self) -> float | None:
        return stats.mean_sd(list(self.seeds.values()))[1]


def genotype_key(genotype: dict) -> str:
    return short_hash(genotype, 12)


def _group(record_group: str, genotype: dict) -> str:
    group = GROUP_OF.get(record_group, record_group or "other")
    if group == "tpsr_width" and genotype == TPSR.to_dict():
        return "tpsr"  # the width ladder's 16-channel rung is TPSR itself
    return group


def collect(folders: list[Path], phase: str = "pixel") -> tuple[str, list[Point]]:
    """The recipe hash and one ``Point`` per genotype of the records in ``folders`` (``*_seed*.json``)."""
    recipe, where = None, None
    points: dict[str, Point] = {}
    ranks: dict[str, str] = {}  # genotype key -> the record group its name came from
    for folder in folders:
        paths = sorted(Path(folder).glob("*_seed*.json"))
        if not paths:
            raise ConfigError(f"{folder}: no trial records (<model>_seed<k>.json)")
        for path in paths:
            record = read_record(path)
            if recipe is None:
                recipe, where = record.recipe_hash, path
            elif record.recipe_hash != recipe:
                raise TrialError(
                    f"{path}: recipe {record.recipe_hash}, but {where} has {recipe}; a frontier compares one recipe"
                )
            score = record.scores.get(phase, {}).get(record.selection, {}).get("psnr_y")
            if score is None:
                raise TrialError(f"{path}: no {phase} phase score on {record.selection!r}")
            group = _group(record.group, record.genotype)
            point = points.setdefault(
                genotype_key(record.genotype),
                Point(record.model, group, record.genotype, record.params, record.macs_720p, folder=Path(folder).name),
            )
            if LABEL_RANK.get(record.group, 0) > LABEL_RANK.get(ranks.get(point.key, ""), 0):
                point.name, point.group = record.model, group  # a genotype's most specific label wins
                point.folder = Path(folder).name
                ranks[point.key] = record.group
            if record.key in point.keys:
                continue  # the same trial recorded by two experiments
            point.keys.add(record.key)
            if record.seed in point.seeds:
                raise TrialError(f"{path}: seed {record.seed} of this genotype is recorded twice with other trials")
            point.seeds[record.seed] = score
    # Experiments name their models alike (every compare has a searched_0 and a random_0): a name that stands for
    # several genotypes is prefixed by the folder it came from, so each row, marker and percentile is one genotype.
    named = Counter(point.name for point in points.values())
    for point in points.values():
        if named[point.name] > 1:
            point.name = f"{point.folder}/{point.name}"
    return recipe, sorted(points.values(), key=lambda p: (p.group, p.name))


def mark_front(points: list[Point]) -> None:
    """``on_front``: no faster (or equally fast) genotype has a higher mean PSNR."""
    best = float("-inf")
    for p in sorted(points, key=lambda p: (p.measured_ms, -p.psnr)):
        p.on_front = p.psnr > best
        best = max(best, p.psnr)


def under_limit(points: list[Point], limit_ms: float) -> dict[str, Point]:
    """The best genotype (mean PSNR) of each group measured at or under ``limit_ms``."""
    best: dict[str, Point] = {}
    for p in points:
        if p.measured_ms <= limit_ms and (p.group not in best or p.psnr > best[p.group].psnr):
            best[p.group] = p
    return best


def matched_percentiles(points: list[Point], tolerance: float) -> dict[str, dict]:
    """For each searched genotype: the random genotypes measured within ``tolerance`` of its time, and its
    percentile among their mean PSNRs."""
    randoms = [p for p in points if p.group == "random"]
    out = {}
    for s in (p for p in points if p.group == "searched"):
        window = [r for r in randoms if abs(r.measured_ms / s.measured_ms - 1) <= tolerance]
        out[s.name] = {
            "randoms": len(window),
            "percentile": stats.percentile_within(s.psnr, [r.psnr for r in window]) if window else None,
            "best_random": max((r.psnr for r in window), default=None),
        }
    return out


# --- timing ----------------------------------------------------------------------------------------------------


def time_points(points: list[Point], table_path: Path, out: Path, repeats: int, warmup: int, retime: bool) -> dict:
    """Measured ms of every point, from ``out/timings.json`` when it covers them all for this table, else timed in
    one run and written there."""
    table = LatencyTable.load(table_path)
    prov = table.provenance
    sha = file_sha256(table_path)
    path = out / TIMINGS
    if path.is_file() and not retime:
        cached = json.loads(path.read_text())
        if cached.get("table_sha256") == sha and all(p.key in cached["ms"] for p in points):
            log.info("%s: timings of all %d genotypes reused (--retime to time again)", path, len(points))
            for p in points:
                p.measured_ms = cached["ms"][p.key]
            return cached
    genotypes = [GeneratorGenotype.from_dict(p.genotype) for p in points]
    load_before = os.getloadavg()
    warn_if_loaded(load_before, prov.threads)
    log.info("timing %d genotypes: %s, %d thread(s), %d rounds", len(points), prov.backend, prov.threads, repeats)
    ms = measure_many(genotypes, prov.backend, prov.threads, None, repeats, warmup, prov.device)
    timings = {
        "table": str(table_path),
        "table_sha256": sha,
        "backend": prov.backend,
        "threads": prov.threads,
        "device": prov.device,
        "repeats": repeats,
        "warmup": warmup,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "ms": {p.key: m for p, m in zip(points, ms)},
    }
    atomic_write_text(path, json.dumps(timings, indent=2) + "\n")
    for p, m in zip(points, ms):
        p.measured_ms = m
    return timings


# --- the report ------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def report(points: list[Point], recipe: str, timings: dict, limit_ms: float, tolerance: float) -> tuple[dict, str]:
    best = under_limit(points, limit_ms)
    matched = matched_percentiles(points, tolerance)
    tpsr = next((p for p in points if p.group == "tpsr"), None)
    summary = {
        "recipe_hash": recipe,
        "timings": {k: v for k, v in timings.items() if k != "ms"},
        "limit_ms": limit_ms,
        "tolerance": tolerance,
        "best_under_limit": {g: p.name for g, p in best.items()},
        "matched_latency": matched,
        "points": [
            {**{k: v for k, v in asdict(p).items() if k != "keys"}, "psnr": p.psnr, "psnr_sd": p.psnr_sd}
            for p in points
        ],
    }
    load = timings["load_before"][0], timings["load_after"][0]
    lines = [
        f"Recipe {recipe}; {len(points)} genotypes, holdout Y-PSNR (mean over seeds) against measured ms for a "
        f"720p output ({timings['backend']}, {timings['threads']} thread(s), {timings['device']}, median of "
        f"{timings['repeats']} interleaved rounds, {timings['date']}, load {load[0]:.2f} -> {load[1]:.2f}).",
        "",
        f"Best under {limit_ms:g} ms:",
        "",
        "| group | genotype | measured ms | params | holdout Y-PSNR (sd, seeds) | vs TPSR |",
        "|---|---|---|---|---|---|",
    ]
    for group in STYLE:
        if (p := best.get(group)) is not None:
            gap = f"{p.psnr - tpsr.psnr:+.3f}" if tpsr else "–"
            lines.append(
                f"| {group} | {p.name} | {p.measured_ms:.1f} | {p.params:,} | {p.psnr:.3f} "
                f"({_fmt(p.psnr_sd)}, {len(p.seeds)}) | {gap} |"
            )
    if tpsr:
        lines += ["", f"TPSR: {tpsr.measured_ms:.1f} ms, {tpsr.psnr:.3f} dB ({len(tpsr.seeds)} seeds)."]
    if matched:
        lines += ["", f"Searched against the random genotypes measured within ±{tolerance:.0%} of its time:", ""]
        lines += ["| searched | measured ms | holdout Y-PSNR | randoms in window | best random | percentile |"]
        lines += ["|---|---|---|---|---|---|"]
        for name, m in matched.items():
            s = next(p for p in points if p.name == name and p.group == "searched")
            lines.append(
                f"| {name} | {s.measured_ms:.1f} | {s.psnr:.3f} | {m['randoms']} | {_fmt(m['best_random'])} | "
                f"{_fmt(m['percentile'], '.0f')} |"
            )
    lines += ["", "Every genotype (★ on the front: no faster genotype has a higher mean):", ""]
    lines += ["| group | genotype | measured ms | GMACs | params | holdout Y-PSNR | sd | seeds | front |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: p.measured_ms):
        lines.append(
            f"| {p.group} | {p.name} | {p.measured_ms:.1f} | {p.macs_720p / 1e9:.2f} | {p.params:,} | {p.psnr:.3f} | "
            f"{_fmt(p.psnr_sd)} | {len(p.seeds)} | {'★' if p.on_front else ''} |"
        )
    return summary, "\n".join(lines) + "\n"


def plot(points: list[Point], path: Path, limit_ms: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2))
    for group, (colour, marker, size, label) in STYLE.items():
        members = [p for p in points if p.group == group]
        if not members:
            continue
        x = [p.measured_ms for p in members]
        y = [p.psnr for p in members]
        err = [p.psnr_sd or 0.0 for p in members]
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor=colour, elinewidth=0.7, alpha=0.6)
        ax.scatter(x, y, s=size, c=colour, marker=marker, label=f"{label} ({len(members)})", zorder=3)
        if group in ("searched", "tpsr_width", "baseline"):
            for p in members:
                ax.annotate(p.name, (p.measured_ms, p.psnr), fontsize=7, xytext=(4, -9), textcoords="offset points")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.measured_ms)
    ax.step(
        [p.measured_ms for p in front],
        [p.psnr for p in front],
        where="post",
        color="tab:orange",
        linewidth=1,
        label="front (no faster genotype is better)",
        zorder=2,
    )
    ax.axvline(limit_ms, color="tab:red", linestyle="--", linewidth=1, label=f"{limit_ms:g} ms")
    ax.set_xscale("log")
    low, high = min(p.measured_ms for p in points), max(p.measured_ms for p in points)
    ticks = [
        t for t in (5, 10, 15, 20, 25, 30, 40, 50, 70, 100, 150, 200, 300, 500, 1000) if low / 1.2 <= t <= high * 1.2
    ]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("measured ms for a 1280x720 output (log)", fontsize=9)
    ax.set_ylabel("holdout Y-PSNR (dB), mean over seeds (bars: seed sd)", fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", linewidth=0.4, alpha=0.5)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, metavar="RECORDS", help="folders of trial records, one recipe")
    p.add_argument("--table", required=True, type=Path, help="latency table: the backend, threads, device to time")
    p.add_argument("--out", required=True, type=Path, help="writes frontier.json, .md, .png and timings.json here")
    p.add_argument("--limit-ms", type=float, default=33.0, help="the real-time budget the report answers for (33)")
    p.add_argument("--tolerance", type=float, default=0.1, help="matched-latency window around a searched genotype")
    p.add_argument("--phase", default="pixel", choices=("pixel", "gan"), help="which phase's score (pixel)")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds; the median is kept (30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (5)")
    p.add_argument("--retime", action="store_true", help="time every genotype again even if timings.json covers them")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    if args.limit_ms <= 0 or not 0 < args.tolerance < 1:
        raise ConfigError("--limit-ms must be positive and --tolerance within (0, 1)")
    recipe, points = collect(args.folders, args.phase)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = time_points(points, args.table, args.out, args.repeats, args.warmup, args.retime)
    mark_front(points)
    summary, text = report(points, recipe, timings, args.limit_ms, args.tolerance)
    summary["folders"] = [str(f) for f in args.folders]
    atomic_write_text(args.out / FRONTIER_JSON, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(args.out / FRONTIER_MD, "# Holdout PSNR against measured latency\n\n" + text)
    title = f"recipe {recipe}: {timings['backend']}, {timings['threads']} thread(s), {timings['date']}"
    plot(points, args.out / FRONTIER_PNG, args.limit_ms, title)
    print(text)
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    return cli.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
