"""The evidence: a searched genotype against TPSR and K random genotypes of matched MACs, all
retrained under one recipe and one seed, evaluated on the same benchmarks.

    darts-sr compare --searched runs/search/genotype_generator.json --config compare_cpu --out runs/compare

Each model trains in ``<out>/<name>/`` (a ``train.py`` run folder); a finished one is reused and an
interrupted one resumed, so the command can be rerun after a stop. Results: ``results.json``,
``results.md`` and ``psnr_vs_macs.png`` in ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from darts_sr import cli, run_files
from darts_sr.config import TrainConfig, load_config, to_dict
from darts_sr.data import bicubic_upscale, load_dataset, parse_data_spec
from darts_sr.discriminator import load_discriminator_genotype
from darts_sr.evaluation import evaluate_pairs, format_value, score_images
from darts_sr.genotype import TPSR, load_generator_genotype, save_genotype
from darts_sr.io import atomic_write_text
from darts_sr.metrics import METRICS, MetricSettings, create_scorers
from darts_sr.networks import generator_macs, generator_params, load_generator
from darts_sr.runner import prepare_run_folder, save_config
from darts_sr.sampling import matched_random_genotypes
from darts_sr.train import Retrainer
from operations import GENERATOR_SEARCH_SPACE

log = logging.getLogger("compare")
MODEL_FILES = {"pixel": run_files.MODEL_PIXEL, "gan": run_files.MODEL_GAN}


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--searched", required=True, help="the searched generator genotype (JSON)")
    p.add_argument("--config", required=True, metavar="PRESET|FILE.yaml", help="training recipe: a preset or YAML file")
    p.add_argument("--random", type=int, default=3, help="how many random genotypes (default 3)")
    p.add_argument("--tolerance", type=float, default=0.05, help="MACs window for random genotypes (default ±5%%)")
    p.add_argument("--benchmark", action="append", metavar="NAME=PATH", help="evaluation sets (default: builtin)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/compare-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--seed", type=int, help="overrides run.seed (training and random sampling)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides run.device")
    return p.parse_args(argv)


def candidates(searched_path: str, count: int, tolerance: float, seed: int) -> dict:
    searched = load_generator_genotype(searched_path)
    models = {"searched": searched}
    if searched.scale == TPSR.scale:
        models["tpsr"] = TPSR
    randoms = matched_random_genotypes(
        count, generator_macs(searched), tolerance, seed,
        ops=GENERATOR_SEARCH_SPACE, nodes=max(10, len(searched.nodes)), channels=searched.channels,
        scale=searched.scale,
    )  # fmt: skip
    models |= {f"random_{i + 1}": g for i, g in enumerate(randoms)}
    return models


def train_one(name: str, genotype, config: TrainConfig, out: Path) -> None:
    run_dir = out / name
    if (run_dir / run_files.RETRAIN.summary).is_file():
        log.info("%s: already trained, reusing %s", name, run_dir)
        return
    resume = (run_dir / run_files.RETRAIN.checkpoint).is_file()
    run_dir = prepare_run_folder(run_dir, resume=resume, overwrite=not resume)
    if not resume:
        save_config(run_dir, to_dict(config))
        save_genotype(genotype, run_dir / run_files.GENERATOR_GENOTYPE)
    d_genotype = load_discriminator_genotype(config.discriminator.genotype)
    log.info("%s: training %s (%d params, %.3f GMACs@720p)", name, run_dir, generator_params(genotype),
             generator_macs(genotype) / 1e9)  # fmt: skip
    Retrainer(config, genotype, d_genotype, run_dir, resume=resume).run()


def evaluate_all(models: dict, out: Path, benchmarks: list[tuple[str, str]], scale: int, device: str) -> list[dict]:
    scorers = create_scorers(settings=MetricSettings(device=device))
    sets = {name: load_dataset(path, scale) for name, path in benchmarks}
    rows = [_bicubic_row(sets, scale, scorers)]
    for name, genotype in models.items():
        for phase, file in MODEL_FILES.items():
            path = out / name / file
            if not path.is_file():
                continue
            model = load_generator(path).to(device)
            scores = {
                set_name: evaluate_pairs(model, pairs, set_name, scale, scorers, device).record()
                for set_name, pairs in sets.items()
            }
            rows.append({
                "model": name, "phase": phase, "genotype": genotype.to_dict(),
                "params": generator_params(genotype), "macs_720p": generator_macs(genotype), "scores": scores,
            })  # fmt: skip
    return rows


def _bicubic_row(sets: dict, scale: int, scorers: dict) -> dict:
    scores = {
        set_name: score_images(((bicubic_upscale(p.lq, scale), p) for p in pairs), set_name, scale, scorers).record()
        for set_name, pairs in sets.items()
    }
    return {"model": "bicubic", "phase": "-", "genotype": None, "params": 0, "macs_720p": 0, "scores": scores}


def markdown_table(rows: list[dict], set_names: list[str]) -> str:
    """One row per model and phase; per benchmark, one column per metric the rows carry (``METRICS`` order)."""
    metrics = [m for m in METRICS if any(m in r["scores"][s] for r in rows for s in set_names)]
    head = "| model | phase | params | GMACs@720p | " + " | ".join(
        f"{s} {METRICS[m].label}" for s in set_names for m in metrics
    )
    lines = [head + " |", "|" + "---|" * (4 + len(metrics) * len(set_names))]
    for r in rows:
        cells = [r["model"], r["phase"], f"{r['params']:,}", f"{r['macs_720p'] / 1e9:.3f}"]
        for s in set_names:
            cells += [format_value(r["scores"][s].get(m), METRICS[m].digits) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], set_name: str, path: Path) -> None:
    from darts_sr.plots import plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for phase, marker in (("pixel", "o"), ("gan", "s")):
        for r in rows:
            if r["phase"] != phase or r["scores"][set_name]["psnr_y"] is None:
                continue
            colour = {"searched": "tab:red", "tpsr": "tab:blue"}.get(r["model"], "0.5")
            x, y = r["macs_720p"] / 1e9, r["scores"][set_name]["psnr_y"]
            ax.scatter([x], [y], marker=marker, color=colour)
            ax.annotate(f"{r['model']} ({phase})", (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    bicubic = next(r for r in rows if r["model"] == "bicubic")["scores"][set_name]["psnr_y"]
    if bicubic is not None:
        ax.axhline(bicubic, color="0.7", linestyle="--", linewidth=1, label="bicubic")
        ax.legend(fontsize=7)
    ax.set_xlabel("GMACs for a 1280x720 output")
    ax.set_ylabel(f"{set_name} Y-PSNR (dB)")
    ax.set_title("retrained under one recipe: o pixel phase, s GAN phase", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv, prog)
    out = args.out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    return cli.run(lambda: compare(args, out), "; rerun the same command to continue")


def compare(args: argparse.Namespace, out: Path) -> None:
    started = time.time()
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    config = load_config(TrainConfig, cli.resolve_config(args.config), overrides)
    cli.check_run_device(config.run, from_flag=bool(args.device))
    benchmarks = [parse_data_spec(b) for b in args.benchmark or ["builtin=builtin"]]
    models = candidates(args.searched, args.random, args.tolerance, config.run.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, to_dict(config))
    for name, genotype in models.items():
        save_genotype(genotype, out / "genotypes" / f"{name}.json")
    for name, genotype in models.items():
        train_one(name, genotype, config, out)
    rows = evaluate_all(models, out, benchmarks, config.data.scale, config.run.device)
    set_names = [name for name, _ in benchmarks]
    table = markdown_table(rows, set_names)
    meta = {"command": " ".join(sys.argv), "wall_time_s": round(time.time() - started, 1), "seed": config.run.seed}
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(out / "results.md", table + "\n")
    plot(rows, set_names[0], out / "psnr_vs_macs.png")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
