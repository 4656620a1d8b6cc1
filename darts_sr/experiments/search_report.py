"""One markdown row per search run: what shape it found, how its cost landed, how decided it is, how it ranks.

    darts-sr search-report RUN... [--save results/search_ablation] [--figure docs/search_ablation.png]

Reads each run's ``summary.json``, ``config.yaml`` and epoch history (``history.json``, or the checkpoint's),
and ``rank_check.json`` where ``rank_check`` has written one. ``--save`` copies those small files into
a committed folder per run (the report reads such a folder as it reads a run); ``--figure`` draws, per run and
epoch, the derived network's MACs over the target, the nodes reading the stem and the mean largest op probability.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from darts_sr import run_files
from darts_sr.config import SearchConfig, load_config
from darts_sr.io import atomic_write_text, load_checkpoint
from darts_sr.nets.genotype import GeneratorGenotype

HEADER = (
    "| run | LR patch | steps | minutes | strategy | normalised | cost on | depth | nodes on stem "
    "| derived / target MACs | argmax / target MACs "
    "| changed to fit | supernet val PSNR (dB) | mean max op prob | Kendall τ (p) |"
)


def _landing(summary: dict) -> tuple[float, float | None, float, str]:
    """(derived, argmax, target, unit suffix) in the unit the run searched in: MACs, or ms (``cost.unit: latency``)."""
    if summary.get("unit") == "latency":
        return summary["derived_ms"], summary.get("argmax_ms"), summary["target_ms"], " (ms)"
    target = summary.get("target_macs_720p") or summary.get("budget_macs_720p")
    return summary["macs_720p"], summary.get("argmax_macs_720p"), target, ""


def row(run: Path) -> str:
    summary = json.loads((run / run_files.GENERATOR_SEARCH.summary).read_text())
    config = load_config(SearchConfig, run / run_files.CONFIG)
    derived, argmax, target, unit = _landing(summary)
    changed = summary.get("window_changes")
    changed = f"{changed} nodes (window)" if changed is not None else f"{summary.get('repair_swaps', 0)} swaps (repair)"
    tau = "–"
    if (run / "rank_check.json").is_file():
        check = json.loads((run / "rank_check.json").read_text())
        tau = f"{check['tau']:.2f} ({check['p_value']:.2f})"
    minutes = summary.get("wall_time_s")
    cells = [
        run_name(run),
        str(config.data.patch_size),
        str(summary.get("steps", config.optim.epochs * config.optim.steps_per_epoch)),
        "–" if minutes is None else f"{minutes / 60:.0f}",
        config.supernet.strategy,
        "yes" if config.supernet.normalize else "no",
        f"{config.cost.measure}, {config.cost.penalty}",
        str(summary["depth"]),
        str(summary["nodes_on_stem"]),
        f"{derived / target:.3f}{unit}",
        "–" if argmax is None else f"{argmax / target:.3f}{unit}",
        changed,
        f"{summary['supernet_val_psnr']:.2f}",
        f"{summary['max_op_prob']:.3f}",
        tau,
    ]
    return "| " + " | ".join(cells) + " |"


def run_name(run: Path) -> str:
    """The folder's name, with its parent's for a seed folder (``p48_720/seed0``: search_sweep.sh's layout)."""
    return f"{run.parent.name}/{run.name}" if re.fullmatch(r"seed\d+(_t\d+)?", run.name) else run.name


def history(run: Path) -> list[dict]:
    if (run / "history.json").is_file():
        return json.loads((run / "history.json").read_text())
    return load_checkpoint(run / run_files.GENERATOR_SEARCH.checkpoint)["history"]


def save(run: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (run_files.CONFIG, run_files.GENERATOR_SEARCH.summary, run_files.GENERATOR_GENOTYPE, "rank_check.json"):
        if (run / name).is_file():
            shutil.copyfile(run / name, folder / name)
    atomic_write_text(folder / "history.json", json.dumps(history(run), indent=1) + "\n")


def figure(runs: list[Path], path: Path) -> None:
    from darts_sr.search.plots import plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for run in runs:
        records = history(run)
        summary = json.loads((run / run_files.GENERATOR_SEARCH.summary).read_text())
        _, _, target, unit = _landing(summary)
        epochs = [r["epoch"] for r in records]
        if unit:  # a latency search: its argmax and expected ms
            argmax = [r["argmax_ms"] / target for r in records]
            expected = [r["expected_ms"] / target for r in records]
        else:
            argmax = [r.get("argmax_macs_720p", r["derived_macs_720p"]) / target for r in records]
            expected = [r["expected_macs_720p"] / target for r in records]
        (line,) = axes[0].plot(epochs, argmax, marker="o", ms=3, label=run.name + unit)
        axes[0].plot(epochs, expected, ls=":", color=line.get_color())
        axes[1].plot(epochs, [r.get("nodes_on_stem", float("nan")) for r in records], marker="o", ms=3)
        axes[2].plot(epochs, [r.get("max_prob", float("nan")) for r in records], marker="o", ms=3)
    axes[0].axhspan(0.97, 1.03, color="0.85", label="target ±3%")
    axes[0].set_title("argmax network MACs / target (dotted: E[MACs])", fontsize=9)
    axes[1].set_title("derived nodes reading the stem", fontsize=9)
    axes[2].set_title("mean largest op probability (uniform 0.125)", fontsize=9)
    axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def agreement(runs: list[Path]) -> list[str]:
    """Pairwise: do the derived genotypes build the same network (up to node order: ``canonical_form``), how many
    ops they share (as multisets), and on how many nodes (by index) op and input agree."""
    genotypes = {
        run: GeneratorGenotype.from_dict(json.loads((run / run_files.GENERATOR_SEARCH.summary).read_text())["genotype"])
        for run in runs
    }
    lines = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            na, nb = genotypes[a].nodes, genotypes[b].nodes
            n = min(len(na), len(nb))
            ops = sum(x.op == y.op for x, y in zip(na, nb))
            both = sum(x == y for x, y in zip(na, nb))
            shared = sum((Counter(x.op for x in na) & Counter(y.op for y in nb)).values())
            same = genotypes[a].canonical_form() == genotypes[b].canonical_form()
            lines.append(
                f"{a.name} vs {b.name}: same network {same} (identical {genotypes[a] == genotypes[b]}); "
                f"{len(na)} and {len(nb)} nodes; {shared} ops shared; op agrees on {ops} of {n} nodes by index, "
                f"op and input on {both} of {n}"
            )
    return lines


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--save", type=Path, help="copy each run's summary, config, genotype, history here")
    p.add_argument("--figure", type=Path, help="write the per-epoch figure here")
    p.add_argument("--agreement", action="store_true", help="also compare the derived genotypes pairwise")
    args = p.parse_args(argv)
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for run in args.runs:
        print(row(run))
        if args.save:
            save(run, args.save / run.name)
    if args.figure:
        figure(args.runs, args.figure)
    if args.agreement:
        print("\n" + "\n".join(agreement(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
