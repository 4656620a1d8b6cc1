"""The yardstick's calibration: can a retraining recipe order models whose order is known?

    darts-sr calibrate --make-ladders                    # once: the ladders' genotype files (committed)
    darts-sr calibrate --config compare_cpu --set gan_phase.steps=0 --ladder cost --ladder width \\
        --seeds 2 --out results/calibration/short --shard 0/2     # one recipe; a second process takes --shard 1/2
    darts-sr calibrate --report results/calibration/*/  # the table and the figure, from records alone

Ladders (``results/calibration/ladders/<ladder>/<rung>.json``):

- ``width``: TPSR's genotype at 8, 12, 16, 24 and 32 channels. At convergence wider is better, so a yardstick must
  order it, each adjacent gap clear of the noise (sd over training seeds).
- ``cost``: uniform random genotypes of the search space at about 0.5, 1, 2, 3.6 (TPSR's) and 6 GMACs@720p (the last
  at 24 channels: at 16 the space ends near 4.7). Across topologies more capacity should win: Kendall's tau of
  holdout Y-PSNR against MACs.
- ``matched``: ten random genotypes at TPSR's MACs ± 3% (``compare``'s random_0..9: the same sampler and seed), for
  the check against a recipe with several times the compute (``--versus``).

Each (rung, seed) is a ``trials.Trial`` recorded as ``<out>/<ladder>_<rung>_seed<k>.json`` as it lands; a rerun
skips what is recorded. Checkpoints are chosen on the holdout slice only; Set5/Set14 are scored for reporting. The
ceiling a recipe approaches is the published TPSR_NOGAN weights on the same holdout (``published.json``).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
from pathlib import Path

from darts_sr import cli
from darts_sr.config import ConfigError, SupernetConfig, TrainConfig, load_config
from darts_sr.data import DEFAULT_BENCHMARKS, HOLDOUT, holdout_split, parse_data_spec
from darts_sr.evaluation.scoring import Evaluator
from darts_sr.experiments import stats
from darts_sr.experiments.records import read_json, write_json
from darts_sr.io import atomic_write_bytes, atomic_write_text
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, load_generator_genotype, save_genotype
from darts_sr.nets.networks import MacsWindow, generator_macs, generator_params
from darts_sr.search.sampling import matched_random_genotypes
from darts_sr.training.trials import (
    HOLDOUT_VAL,
    Planned,
    Trial,
    TrialRecord,
    add_reuse_argument,
    read_record,
    run_trials,
)

log = logging.getLogger("calibrate")

LADDERS = Path("results/calibration/ladders")
PUBLISHED = Path("results/calibration/published.json")
PUBLISHED_WEIGHTS = "../shared/anchors/tpsr/weights/TPSR_NOGANX4.pt"
WIDTHS = (8, 12, 16, 24, 32)
COSTS_G = (0.5, 1.0, 2.0, 3.575, 6.0)  # GMACs@720p; 3.575 is TPSR's
MATCHED = 10
SAMPLE_SEED = 0
REPORT, SUMMARY, FIGURE = "report.md", "summary.json", "docs/calibration.png"


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--make-ladders", action="store_true", help="write the ladders' genotype files and published.json")
    p.add_argument("--ladders", type=Path, default=LADDERS, help=f"ladder folder ({LADDERS})")
    p.add_argument("--config", metavar="PRESET|FILE.yaml", help="the recipe to calibrate")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--ladder", action="append", default=[], help="width, cost or matched (repeatable)")
    p.add_argument("--rungs", help="only these rungs, comma-separated (e.g. c08,c16,c32)")
    p.add_argument("--seeds", type=int, default=2, metavar="R", help="training seeds 0..R-1 per rung (2)")
    p.add_argument("--out", type=Path, help="records folder, e.g. results/calibration/NAME")
    p.add_argument("--work", type=Path, help="run folders (default runs/calibration/<name of --out>)")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="train trials i, i+N, ... (N processes share)")
    p.add_argument(
        "--benchmark",
        action="append",
        metavar="NAME=PATH",
        help="reported sets, never used for choosing (default: Set5 and Set14 from ../shared)",
    )
    add_reuse_argument(p)
    p.add_argument("--report", nargs="+", type=Path, metavar="RESULTS", help="only the report of these recipes")
    p.add_argument("--versus", type=Path, metavar="RESULTS", help="with --report: Kendall tau against a long recipe")
    p.add_argument("--figure", type=Path, default=Path(FIGURE), help=f"with --report: the figure ({FIGURE})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    if args.make_ladders:
        return cli.run(lambda: make_ladders(args.ladders))
    if args.report:
        return cli.run(lambda: print(report(args.report, args.versus, args.figure)))
    return cli.run(lambda: calibrate(args), "; rerun the same command to continue")


# --- the ladders ---------------------------------------------------------------------------------------------------


def ladder_genotypes() -> dict[str, dict[str, GeneratorGenotype]]:
    """The ladders as ``{ladder: {rung: genotype}}``, made from fixed seeds (``--make-ladders`` writes them)."""
    s = SupernetConfig()
    space = {
        "ops": tuple(o for o in s.ops if o != "none"),
        "nodes": s.nodes,
        "channels": s.channels,
        "scale": 4,
        "input_window": s.input_window,
        "max_skip_nodes": s.max_skip_nodes,
    }
    width = {f"c{c:02d}": GeneratorGenotype(TPSR.nodes, TPSR.outputs, c, TPSR.scale) for c in WIDTHS}
    # At 16 channels the space tops out near 4.7 GMACs (TPSR's 3.575 is its 99th percentile), so the 6 GMACs rung
    # is drawn from the same space at 24 channels.
    cost = {
        f"g{g:.2f}": matched_random_genotypes(
            1, MacsWindow(g * 1e9), SAMPLE_SEED, **space | {"channels": 16 if g < 4 else 24}
        )[0]
        for g in COSTS_G
    }
    matched = matched_random_genotypes(MATCHED, MacsWindow.around(None, 4), SAMPLE_SEED, **space)
    return {"width": width, "cost": cost, "matched": {f"random_{i}": g for i, g in enumerate(matched)}}


def make_ladders(folder: Path) -> None:
    for ladder, rungs in ladder_genotypes().items():
        for rung, genotype in rungs.items():
            save_genotype(genotype, folder / ladder / f"{rung}.json")
            log.info(
                "%s/%s: %d params, %.3f GMACs@720p",
                ladder,
                rung,
                generator_params(genotype),
                generator_macs(genotype) / 1e9,
            )
    if not PUBLISHED.is_file():
        split = Path("runs/calibration/published_split")
        _, val_dir = holdout_split(("BSD200=../shared/datasets/BSD200/HR",), HOLDOUT, split)
        sets = [(HOLDOUT_VAL, val_dir), *map(parse_data_spec, DEFAULT_BENCHMARKS)]
        scores = Evaluator(sets, 4, cli.resolve_device("cpu")).model(Path(PUBLISHED_WEIGHTS), "tpsr")
        write_json(PUBLISHED, {"weights": PUBLISHED_WEIGHTS, "scores": scores})
        log.info("published TPSR_NOGAN: holdout Y-PSNR %.3f dB", scores[HOLDOUT_VAL]["psnr_y"])


def load_ladder(folder: Path, ladder: str) -> dict[str, GeneratorGenotype]:
    files = sorted((folder / ladder).glob("*.json"))
    if not files:
        raise ConfigError(f"{folder / ladder}: no ladder files; run darts-sr calibrate --make-ladders")
    return {f.stem: load_generator_genotype(f) for f in files}


# --- one recipe ----------------------------------------------------------------------------------------------------


def calibrate(args: argparse.Namespace) -> None:
    if not (args.config and args.out and args.ladder):
        raise ConfigError("--config, --out and at least one --ladder are needed (or --make-ladders, --report)")
    recipe = load_config(TrainConfig, cli.resolve_config(args.config), args.set)
    if recipe.data.val != HOLDOUT_VAL:
        raise ConfigError(f"{args.config}: data.val must be {HOLDOUT_VAL}: the ladders are judged on the holdout")
    wanted = None if args.rungs is None else set(args.rungs.split(","))
    planned = []
    for seed in range(args.seeds):  # seed 0 of every rung first: an interrupted sweep still has a whole ladder
        for ladder in args.ladder:
            for rung, genotype in load_ladder(args.ladders, ladder).items():
                if wanted is None or rung in wanted:
                    planned.append(
                        Planned(
                            f"{ladder}_{rung}_seed{seed}",
                            Trial(genotype, recipe, seed),
                            {"model": f"{ladder}_{rung}", "group": ladder, "source": rung},
                            {"ladder": ladder, "rung": rung},
                        )
                    )
    write_json(
        args.out / "experiment.json",
        {
            "recipe_file": str(args.config),
            "overrides": args.set,
            "recipe_hash": planned[0].trial.recipe_hash(),
            "recipe": planned[0].trial.identity()["recipe"],
            "ladders": args.ladder,
            "seeds": args.seeds,
        },
    )
    # Reported only; the holdout's score is the selection, from the run's validation history.
    sets = [parse_data_spec(b) for b in args.benchmark or DEFAULT_BENCHMARKS]
    evaluator = Evaluator(sets, recipe.data.scale, cli.resolve_device(recipe.run.device))
    work = args.work or Path("runs/calibration") / args.out.name
    run_trials(planned, args.out, work, evaluator, args.shard, args.reuse)


# --- the report ----------------------------------------------------------------------------------------------------


def load_records(folder: Path) -> list[TrialRecord]:
    return [read_record(p) for p in sorted(folder.glob("*_seed*.json"))]


def by_rung(records: list[TrialRecord], ladder: str, dataset: str = HOLDOUT_VAL) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in records:
        if r.extra.get("ladder") == ladder and r.psnr(dataset) is not None:
            out.setdefault(r.extra["rung"], []).append(r.psnr(dataset))
    return dict(sorted(out.items()))


def recipe_summary(folder: Path) -> dict:
    """One recipe's calibration numbers from its records."""
    records = load_records(folder)
    experiment = read_json(folder / "experiment.json")
    recipe = experiment["recipe"]
    out: dict = {
        "name": folder.name,
        "records": len(records),
        "recipe_hash": experiment["recipe_hash"],
        "patch": recipe["data"]["patch_size"],
        "batch": recipe["data"]["batch_size"],
        "steps": recipe["pixel_phase"]["steps"],
        "lr": recipe["pixel_phase"]["lr"],
        "warmup": recipe["pixel_phase"].get("warmup_steps", 0),
        "ema": recipe["pixel_phase"].get("ema"),
        "pools": sorted(recipe["data"]["train"]),
    }
    out["rung_gmacs"] = {r.extra["rung"]: r.macs_720p / 1e9 for r in records if "rung" in r.extra}
    width = by_rung(records, "width")
    floors = [v for v in width.values() if len(v) > 1]
    floor = stats.pooled_sd(floors)
    means = {k: stats.mean_sd(v)[0] for k, v in width.items()}
    out["width"] = {k: {"mean": m, "n": len(width[k])} for k, m in means.items()}
    out["noise_floor"] = floor
    if len(means) > 1:
        rungs = list(means)
        gaps = [means[b] - means[a] for a, b in zip(rungs, rungs[1:])]
        out["width_gaps"] = gaps
        out["width_min_gap_floors"] = None if not floor else min(gaps) / floor
        out["width_ordered"] = all(g > 0 for g in gaps)
    cost = by_rung(records, "cost")
    if len(cost) > 1:
        macs = [float(k[1:]) for k in cost]
        psnr = [stats.mean_sd(v)[0] for v in cost.values()]
        tau, p = stats.kendall_tau(macs, psnr)
        out["cost"] = {k: {"mean": stats.mean_sd(v)[0], "n": len(v)} for k, v in cost.items()}
        out["cost_tau"], out["cost_p"] = tau, p
    out.update(matched_summary(by_rung(records, "matched")))
    # The cost of a TPSR-sized model: every record within TPSR's MACs ± 3% (width c16 is TPSR, cost g3.58 and the
    # matched ladder are random genotypes of its MACs).
    window = MacsWindow.around(None, 4)
    sized = [r for r in records if window.contains(r.macs_720p)]
    if sized:
        out["minutes_per_tpsr"] = sum(r.wall_time_s for r in sized) / len(sized) / 60
        out["tpsr_load"] = [r.provenance.get("load_average", {}).get("before", [None])[0] for r in sized]
    tpsr_runs = [r for r in records if r.genotype == TPSR.to_dict()]
    if tpsr_runs:
        out["tpsr_holdout"] = stats.mean_sd([r.psnr(HOLDOUT_VAL) for r in tpsr_runs])[0]
        if PUBLISHED.is_file():
            out["below_published"] = read_json(PUBLISHED)["scores"][HOLDOUT_VAL]["psnr_y"] - out["tpsr_holdout"]
    return out


def matched_summary(matched: dict[str, list[float]]) -> dict:
    """How much of the matched ladder's spread is the genotypes and how much the training seed: the noise floor
    (pooled sd over seeds), the sd of the genotype means, and the reliability of those means (the share of their
    variance that is not seed noise, floor^2 / seeds removed). A recipe cannot rank genotypes (against another recipe
    or a search) better than its reliability allows."""
    if len(matched) < 2:
        return {}
    means = [stats.mean_sd(v)[0] for v in matched.values()]
    spread, floor, reliability = stats.reliability_of_means(list(matched.values()))
    seeds_needed = None
    if reliability:  # the genotypes' own variance, floor^2 / k to reach TAU_RELIABILITY with k seeds
        genotype_variance = reliability * spread**2
        seeds_needed = math.ceil(TAU_RELIABILITY / (1 - TAU_RELIABILITY) * floor**2 / genotype_variance)
    return {
        "matched": {k: {"mean": m, "n": len(v)} for (k, v), m in zip(matched.items(), means)},
        "matched_spread": spread,
        "matched_noise_floor": floor,
        "matched_reliability": reliability,
        "matched_seeds_for_tau": seeds_needed,
    }


TAU_TARGET = 0.7  # the τ the long-recipe check asks for
# Two recipes that rank the genotypes' true means identically, each measuring them with reliability R, correlate at
# most R (Spearman's attenuation; normal errors), and Kendall's τ = (2/π)·asin(correlation): τ 0.7 needs R ≥ sin(0.35π).
TAU_RELIABILITY = math.sin(math.pi * TAU_TARGET / 2)


def versus(folder: Path, long: Path) -> dict | None:
    """Kendall's tau between two recipes over the genotypes both trained (means over seeds, holdout Y-PSNR)."""
    mine, theirs = {}, {}
    for target, source in ((mine, folder), (theirs, long)):
        for r in load_records(source):
            if r.psnr(HOLDOUT_VAL) is not None:
                target.setdefault(str(sorted(r.genotype.items())), []).append(r.psnr(HOLDOUT_VAL))
    common = sorted(set(mine) & set(theirs))
    if len(common) < 3:
        return None
    tau, p = stats.kendall_tau(
        [stats.mean_sd(mine[k])[0] for k in common], [stats.mean_sd(theirs[k])[0] for k in common]
    )
    return {"versus": long.name, "genotypes": len(common), "tau": tau, "p": p}


def _f(value, spec: str, none: str = "–") -> str:
    return none if value is None else format(value, spec)


def report(folders: list[Path], long: Path | None = None, figure: Path | None = None) -> str:
    rows = [recipe_summary(f) for f in folders if (f / "experiment.json").is_file()]
    if long is not None:
        for row, folder in zip(rows, folders):
            row["versus"] = versus(folder, long)
    lines = [
        "| recipe | LR patch, batch, steps | warm-up, EMA | min per TPSR-sized model (load before) | cost ladder "
        "(holdout, g0.5…g6) | τ vs MACs (p) | width ladder (holdout, c08…c32) | smallest adjacent gap / noise floor "
        "| TPSR below published | τ vs long (p, n) |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        cost_values = " / ".join(f"{v['mean']:.3f}" for v in r.get("cost", {}).values()) or "–"
        width = " / ".join(f"{v['mean']:.3f}" for v in r["width"].values()) or "–"
        floor = "" if r.get("noise_floor") is None else f" (floor {r['noise_floor']:.3f} dB)"
        gap = _f(r.get("width_min_gap_floors"), ".1f") + floor
        cost = "–" if "cost_tau" not in r else f"{r['cost_tau']:+.2f} ({r['cost_p']:.2g})"
        load = ", ".join(_f(x, ".1f") for x in r.get("tpsr_load", []))
        minutes = "–" if "minutes_per_tpsr" not in r else f"{r['minutes_per_tpsr']:.1f} ({load})"
        v = r.get("versus")
        vs = "–" if not v else f"{v['tau']:+.2f} ({v['p']:.2g}, {v['genotypes']})"
        lines.append(
            f"| {r['name']} | {r['patch']}, {r['batch']}, {r['steps']} | {r['warmup']}, {_f(r['ema'], 'g', 'off')} | "
            f"{minutes} | {cost_values} | {cost} | {width} | {gap} | {_f(r.get('below_published'), '.3f')} | {vs} |"
        )
    long_row = recipe_summary(long) if long is not None and (long / "experiment.json").is_file() else None
    matched = [r for r in rows if r.get("matched")]
    if long_row is not None and long_row.get("matched"):
        matched.append(long_row | {"name": f"{long_row['name']} (long)"})
    if matched:
        lines += [
            "",
            "Matched ladder (ten random genotypes at TPSR's MACs ± 3%): how much of the spread is the genotype, and so "
            f"the most τ any recipe pair could show. τ {TAU_TARGET} needs both recipes' reliability ≥ "
            f"{TAU_RELIABILITY:.2f}.",
            "",
            "| recipe | genotypes (trials) | sd of genotype means | noise floor (sd over seeds) "
            f"| reliability of the means | seeds per genotype for reliability {TAU_RELIABILITY:.2f} "
            "| τ vs long (p, n) | τ ceiling from the noise |",
            "|" + "---|" * 8,
        ]
        for r in matched:
            n = sum(v["n"] for v in r["matched"].values())
            v = r.get("versus")
            vs = "–" if not v else f"{v['tau']:+.2f} ({v['p']:.2g}, {v['genotypes']})"
            ceiling = None
            if v and long_row is not None:
                r["tau_ceiling"] = ceiling = stats.tau_ceiling(
                    r["matched_reliability"], long_row.get("matched_reliability")
                )
            lines.append(
                f"| {r['name']} | {len(r['matched'])} ({n}) | {r['matched_spread']:.3f} | "
                f"{_f(r['matched_noise_floor'], '.3f')} | {_f(r['matched_reliability'], '.2f')} | "
                f"{_f(r['matched_seeds_for_tau'], 'd')} | {vs} | {_f(ceiling, '.2f')} |"
            )
    text = "\n".join(lines)
    if figure is not None and rows:
        draw(rows, figure)
    for folder, row in zip(folders, rows):
        write_json(folder / SUMMARY, row)
    root = Path(folders[0]).parent
    atomic_write_text(root / REPORT, "# Calibration of the retraining recipes\n\n" + text + "\n")
    return text


def draw(rows: list[dict], path: Path) -> None:
    """Discriminating power against minutes per TPSR-sized model: the cost ladder's tau and the width ladder's
    smallest adjacent gap in noise floors, one point per recipe; and the ladders themselves, holdout Y-PSNR against
    MACs, one line per recipe."""
    from darts_sr.search.plots import plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    for r in rows:
        for ladder, style in (("cost", "-o"), ("width", "--s")):
            rungs = r.get(ladder, {}) if ladder == "cost" else r["width"]
            if rungs:
                gmacs = [r["rung_gmacs"][k] for k in rungs]
                axes[2].plot(gmacs, [v["mean"] for v in rungs.values()], style, label=f"{r['name']} {ladder}")
    axes[2].set_xscale("log")
    ticks = []
    for g in sorted({round(g, 1) for r in rows for g in r["rung_gmacs"].values()}):
        if not ticks or g > 1.15 * ticks[-1]:  # rungs of nearly equal MACs share one tick
            ticks.append(g)
    axes[2].set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
    axes[2].minorticks_off()
    axes[2].set_xlabel("GMACs for a 1280x720 output (log)", fontsize=8)
    axes[2].set_ylabel("holdout Y-PSNR (dB), mean over seeds", fontsize=8)
    axes[2].grid(True, linewidth=0.4, alpha=0.5)
    axes[2].legend(fontsize=7)
    for ax, key, label, line in (
        (axes[0], "cost_tau", "cost ladder: Kendall τ (holdout PSNR vs MACs)", 0.8),
        (axes[1], "width_min_gap_floors", "width ladder: smallest adjacent gap / noise floor", 2.0),
    ):
        for r in rows:
            if r.get(key) is not None and r.get("minutes_per_tpsr") is not None:
                rungs = len(r["cost" if key == "cost_tau" else "width"])
                name = r["name"] if rungs == 5 else f"{r['name']} ({rungs} of 5 rungs)"
                ax.plot(r["minutes_per_tpsr"], r[key], "o", color="tab:blue" if rungs == 5 else "0.6")
                shift = 3 + 9 * (rows.index(r) % 3)  # neighbours' labels apart
                ax.annotate(
                    name, (r["minutes_per_tpsr"], r[key]), fontsize=7, xytext=(4, shift), textcoords="offset points"
                )
        ax.axhline(line, color="tab:red", linestyle="--", linewidth=1, label=f"pass: ≥ {line}")
        ax.set_xlabel("minutes per TPSR-sized model, one core (load in the table)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        values = [r[key] for r in rows if r.get(key) is not None]
        low = min(0.0, *values) - 0.3  # a failed (negative) gap stays in view
        ax.set_ylim(*((-1.05, 1.05) if key == "cost_tau" else (low, max(4.0, *values) * 1.1)))
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
