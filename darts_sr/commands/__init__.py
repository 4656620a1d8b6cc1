"""``darts-sr``: one command for the whole pipeline (also ``python -m darts_sr``).

Each subcommand is a module (``compare`` is ``darts_sr.experiments.compare``) with ``main(argv=None, prog=None)``;
the module is imported only when its subcommand runs, so ``darts-sr --help`` answers at once. The repository's root
scripts (``train_search.py``, ``train.py``, ``evaluate.py``, ``export.py``) call the same ``main``s.
"""

from __future__ import annotations

import importlib
import sys

from darts_sr import __version__

PROG = "darts-sr"

# name -> (module with main(argv, prog), one line for the command list)
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("darts_sr.commands.search", "architecture search (stage 1 generator, stage 2 discriminator)"),
    "train": ("darts_sr.commands.train", "retrain a genotype from scratch: pixel phase, then perceptual-adversarial"),
    "evaluate": ("darts_sr.commands.evaluate", "score a generator on benchmarks: Y-PSNR/SSIM, LPIPS, NIQE, MACs"),
    "compare": ("darts_sr.experiments.compare", "searched genotype vs TPSR vs random genotypes of matched MACs or ms"),
    "compare-discriminators": (
        "darts_sr.experiments.discriminator_compare",
        "one generator fine-tuned against stage 2's pick vs reference vs random Ds",
    ),
    "calibrate": ("darts_sr.experiments.calibrate", "can a retraining recipe order models of known order? (ladders)"),
    "rank-check": ("darts_sr.experiments.rank_check", "Kendall tau: supernet ranking vs standalone training"),
    "baselines": ("darts_sr.search.baselines", "genotypes a practitioner would try first, in the same MACs window"),
    "derive": ("darts_sr.search.derive", "derive a finished search again by another rule or at another target"),
    "search-report": ("darts_sr.experiments.search_report", "a table of search runs' diagnostics"),
    "check-overlap": ("darts_sr.overlap", "near-duplicates between training pools and reported images"),
    "export": ("darts_sr.commands.export", "export a generator to ONNX"),
    "crops": ("darts_sr.evaluation.crops", "side-by-side crops of several generators' outputs (HR, bicubic, models)"),
    "upscale": ("darts_sr.commands.upscale", "super-resolve image files or folders with a trained generator"),
    "latency-table": ("darts_sr.commands.latency_table", "build and validate a latency table for this machine"),
    "latency-check": ("darts_sr.commands.latency_check", "time genotypes end to end against a table's prediction"),
    "frontier": ("darts_sr.experiments.frontier", "trained genotypes: holdout PSNR against measured ms, the front"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        f"usage: {PROG} [-h] [--version] COMMAND [ARGS ...]\n\n"
        "Differentiable architecture search for tiny perceptual super-resolution.\n\n"
        "commands:\n" + "\n".join(lines) + f"\n\n`{PROG} COMMAND --help` describes a command's options."
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nerror: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"{PROG} {name}")
