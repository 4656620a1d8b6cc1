"""The comparison's records: one small JSON file per trained model, and the report rebuilt from them alone.

A results folder (``results/<experiment>/``, small enough to commit) holds::

    experiment.json        what was asked: recipe and its hash, the validation slice, the random genotypes' window
                           (target MACs, or target ms with the latency table and each model's predicted ms), models
    <model>_seed<k>.json   one finished model: genotype, recipe hash, seed, metrics per phase and dataset
    bicubic.json           bicubic upscaling on each benchmark (the floor line of the plot)
    report.md, summary.json, psnr_vs_macs.png (psnr_vs_ms.png at matched latency)   written by ``report()`` from the
                           files above, no training: per-genotype tables, searched vs random (gap with a bootstrap
                           CI, Mann–Whitney, percentiles, the smallest gain the comparison could detect), each
                           baseline's gap with a t interval, and each method's cost where compare recorded it

A record holds ``model``, ``group`` (searched, random, tpsr), ``seed``, ``source``, ``genotype``, ``params``,
``macs_720p``, ``recipe_hash`` (the recipe less its run section: equal recipes hash equal on any machine),
``selection``, ``scores``, ``steps``, ``wall_time_s``, ``load_average`` (before and after, as ``uptime`` shows it),
``device``, ``torch`` and ``finished``. ``scores[phase][dataset]`` is ``evaluate.py --json``'s record (``dataset``,
``images``, one key per metric); the dataset checkpoints were selected on (``selection``, e.g. ``holdout``) is among
them, labelled as such in the report and never plotted as a benchmark.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from darts_sr.config import ConfigError
from darts_sr.evaluation.metrics import METRICS
from darts_sr.evaluation.scoring import format_value
from darts_sr.experiments import stats
from darts_sr.io import atomic_write_bytes, atomic_write_text
from darts_sr.nets.genotype import GeneratorGenotype
from darts_sr.search.generator_stage import search_diagnostics

EXPERIMENT, BICUBIC = "experiment.json", "bicubic.json"
REPORT, SUMMARY, PLOT, PLOT_MS = "report.md", "summary.json", "psnr_vs_macs.png", "psnr_vs_ms.png"
GROUPS = ("searched", "baseline", "random", "tpsr")
RESAMPLES, BOOTSTRAP_SEED = 10_000, 0


class RecordError(ConfigError):
    """A record that contradicts the experiment (another genotype or recipe under the same name)."""


def recipe_hash(recipe: dict) -> str:
    """Twelve hex digits naming a training recipe: equal recipes, equal hashes, on any machine."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def record_path(folder: Path, model: str, seed: int) -> Path:
    return folder / f"{model}_seed{seed}.json"


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: cannot read ({e})") from None


def existing_record(path: Path, genotype: dict, recipe: str) -> dict | None:
    """The record at ``path`` if there is one for this genotype and recipe; a record for anything else there is an
    error (the experiment's inputs changed under the same names: use another results folder)."""
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("genotype") != genotype:
        raise RecordError(f"{path}: recorded for another genotype; use a new results folder (--out)")
    if record.get("recipe_hash") != recipe:
        raise RecordError(f"{path}: recorded under recipe {record.get('recipe_hash')}, not {recipe}; use a new --out")
    return record


def matching_record(folders: list[Path], genotype: dict, recipe: str, seed: int) -> tuple[Path, dict] | None:
    """A record of the same genotype, recipe and seed in another experiment's folder (``compare --reuse``): the same
    training gives the same model, so experiments that share genotypes (the random population, ``tpsr``) need not
    retrain them."""
    for folder in folders:
        for path in sorted(Path(folder).glob(f"*_seed{seed}.json")):
            record = read_json(path)
            if record.get("genotype") == genotype and record.get("recipe_hash") == recipe and record["seed"] == seed:
                return path, record
    return None


def load_records(folder: Path) -> list[dict]:
    return [read_json(p) for p in sorted(folder.glob("*_seed*.json"))]


# --- per genotype ---------------------------------------------------------------------------------------------


@dataclass
class Genotype:
    """One genotype's records: its scores over seeds, ``values[(phase, dataset, metric)]``."""

    model: str
    group: str
    genotype: dict
    params: int
    macs: float
    predicted_ms: float | None = None  # at matched latency: the experiment's prediction (and timing) of this model
    measured_ms: float | None = None
    seeds: list[int] = field(default_factory=list)
    values: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def mean(self, key: tuple[str, str, str]) -> float | None:
        return stats.mean_sd(self.values[key])[0] if self.values.get(key) else None

    @property
    def depth(self) -> int:
        return search_diagnostics(GeneratorGenotype.from_dict(self.genotype))["depth"]


def by_genotype(records: list[dict]) -> list[Genotype]:
    """Records grouped by model name, in group order (searched, random, tpsr) then name."""
    found: dict[str, Genotype] = {}
    for r in records:
        g = found.setdefault(r["model"], Genotype(r["model"], r["group"], r["genotype"], r["params"], r["macs_720p"]))
        if r["genotype"] != g.genotype:
            raise RecordError(f"{r['model']}_seed{r['seed']}: another genotype than the model's other seeds")
        g.seeds.append(r["seed"])
        for phase, datasets in r["scores"].items():
            for dataset, scores in datasets.items():
                for metric, value in scores.items():
                    if metric in METRICS and value is not None:
                        g.values[(phase, dataset, metric)].append(value)
    order = {group: i for i, group in enumerate(GROUPS)}
    return sorted(found.values(), key=lambda g: (order.get(g.group, len(GROUPS)), _natural(g.model)))


def _natural(name: str) -> tuple:
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def latency_window(experiment: dict) -> tuple[float, float] | None:
    """``(target_ms, tolerance)`` when the experiment matched latency (``compare --target-ms``), else None."""
    return (experiment["target_ms"], experiment["tolerance"]) if experiment.get("target_ms") else None


def attach_latency(genotypes: list[Genotype], experiment: dict) -> None:
    """Each genotype's predicted (and measured) ms from ``experiment.json``, where it names the same genotype."""
    models = experiment.get("models", {})
    for g in genotypes:
        m = models.get(g.model)
        if m is not None and m.get("genotype") == g.genotype:
            g.predicted_ms, g.measured_ms = m.get("predicted_ms"), m.get("measured_ms")


def phases_and_datasets(genotypes: list[Genotype], experiment: dict) -> tuple[list[str], list[str]]:
    """The phases present (pixel before gan) and the datasets: the selection slice first, then the benchmarks in
    the order the experiment named them."""
    keys = {k for g in genotypes for k in g.values}
    phases = sorted({k[0] for k in keys}, key=lambda p: (p != "pixel", p))
    named = [experiment.get("selection"), *experiment.get("benchmarks", {})]
    datasets = sorted({k[1] for k in keys}, key=lambda d: (named.index(d) if d in named else len(named), d))
    return phases, datasets


# --- statistics ------------------------------------------------------------------------------------------------


def group_statistics(genotypes: list[Genotype], phase: str, dataset: str, metric: str = "psnr_y") -> dict | None:
    """Searched against random on one phase, dataset and metric (genotype means), with TPSR's position and the
    noise floor; None when there is no random genotype to compare with."""
    key = (phase, dataset, metric)
    means = {g.model: g.mean(key) for g in genotypes if g.values.get(key)}
    groups = {group: [means[g.model] for g in genotypes if g.group == group and g.model in means] for group in GROUPS}
    if not groups["random"]:
        return None
    out: dict = {"phase": phase, "dataset": dataset, "metric": metric, "groups": {}}
    for group, values in groups.items():
        if values:
            mean, sd = stats.mean_sd(values)
            out["groups"][group] = {"n": len(values), "mean": mean, "sd": sd}
    out["noise_floor"] = stats.pooled_sd([g.values[key] for g in genotypes if g.values.get(key)])
    out["noise_floor_from"] = [g.model for g in genotypes if len(g.values.get(key, ())) > 1]
    searched = {g.model: means[g.model] for g in genotypes if g.group == "searched" and g.model in means}
    if searched:
        gap = stats.bootstrap_mean_gap(list(searched.values()), groups["random"], RESAMPLES, seed=BOOTSTRAP_SEED)
        u, p = stats.mann_whitney_greater(list(searched.values()), groups["random"])
        out["gap"] = {
            "estimate": gap.estimate,
            "low": gap.low,
            "high": gap.high,
            "confidence": gap.confidence,
            "resamples": RESAMPLES,
            "seed": BOOTSTRAP_SEED,
        }
        out["mann_whitney"] = {"u": u, "p": p, "alternative": "searched > random (one-sided)"}
        out["searched_percentile"] = {m: stats.percentile_within(v, groups["random"]) for m, v in searched.items()}
        random_sd = out["groups"]["random"]["sd"]
        if random_sd:  # what a null result rules out: the random genotypes' spread stands for both groups'
            out["detectable_gap"] = {
                "gap": stats.smallest_detectable_gap(random_sd, len(searched), len(groups["random"])),
                "alpha": 0.05,
                "power": 0.8,
                "sd": random_sd,
            }
    baselines = {g.model: g for g in genotypes if g.group == "baseline" and g.model in means}
    if baselines:  # each against the random population, and the searched genotypes' mean against each
        searched_mean = stats.mean_sd(list(searched.values()))[0] if searched else None
        out["baselines"] = {}
        for m, g in baselines.items():
            entry = {
                "mean": means[m],
                "percentile": stats.percentile_within(means[m], groups["random"]),
                "searched_minus": None if searched_mean is None else searched_mean - means[m],
            }
            if len(searched) > 1 and out["noise_floor"] is not None:
                ci = stats.gap_to_fixed(list(searched.values()), g.values[key], out["noise_floor"])
                entry["searched_minus_ci"] = [ci.low, ci.high]
            out["baselines"][m] = entry
    if "tpsr" in means:
        ranked = sorted(means.values(), reverse=True)
        out["tpsr"] = {
            "percentile": stats.percentile_within(means["tpsr"], groups["random"]),
            "rank": ranked.index(means["tpsr"]) + 1,
            "of": len(ranked),
        }
    return out


def proxy_validity(genotypes: list[Genotype], other: list[Genotype], phase: str, dataset: str) -> dict | None:
    """Kendall's tau between two experiments' rankings of the genotypes both trained (matched by genotype, not
    name), on Y-PSNR; None with fewer than two in common."""
    key = (phase, dataset, "psnr_y")
    mine = {json.dumps(g.genotype, sort_keys=True): g for g in genotypes if g.values.get(key)}
    theirs = {json.dumps(g.genotype, sort_keys=True): g for g in other if g.values.get(key)}
    common = sorted(set(mine) & set(theirs), key=lambda k: _natural(mine[k].model))
    if len(common) < 2:
        return None
    a, b = [mine[k].mean(key) for k in common], [theirs[k].mean(key) for k in common]
    tau, p = stats.kendall_tau(a, b)
    return {
        "phase": phase,
        "dataset": dataset,
        "tau": tau,
        "p": p,
        "models": [mine[k].model for k in common],
        "this": a,
        "other": b,
    }


# --- the report ------------------------------------------------------------------------------------------------


def report(folder: Path, versus: Path | None = None) -> str:
    """Writes ``report.md``, ``summary.json`` and ``psnr_vs_macs.png`` in ``folder`` from its records alone (and,
    with ``versus``, Kendall's tau against that experiment's records); returns the markdown."""
    folder = Path(folder)
    experiment = read_json(folder / EXPERIMENT) if (folder / EXPERIMENT).is_file() else {}
    records = load_records(folder)
    if not records:
        raise RecordError(f"{folder}: no records (<model>_seed<k>.json) to report")
    bicubic = read_json(folder / BICUBIC) if (folder / BICUBIC).is_file() else {}
    genotypes = by_genotype(records)
    latency = latency_window(experiment)
    if latency:
        attach_latency(genotypes, experiment)
    selection = experiment.get("selection")
    phases, datasets = phases_and_datasets(genotypes, experiment)
    summary: dict = {
        "experiment": folder.name,
        "records": len(records),
        "genotypes": len(genotypes),
        "recipe_hash": sorted({r["recipe_hash"] for r in records}),
        "statistics": [],
        "proxy": [],
    }
    if latency:
        summary["latency_window"] = {"target_ms": latency[0], "tolerance": latency[1]}
    for phase in phases:
        for dataset in datasets:
            found = group_statistics(genotypes, phase, dataset)
            if found:
                summary["statistics"].append(found)
    summary["cost"] = costs(experiment, records)
    if versus is not None:
        other = by_genotype(load_records(Path(versus)))
        summary["versus"] = str(versus)
        for phase in phases:
            for dataset in datasets:
                found = proxy_validity(genotypes, other, phase, dataset)
                if found:
                    summary["proxy"].append(found)
    text = markdown_report(folder.name, experiment, records, genotypes, phases, datasets, summary, bicubic)
    write_json(folder / SUMMARY, summary)
    atomic_write_text(folder / REPORT, text)
    benchmarks = [d for d in datasets if d != selection]
    if benchmarks:
        plot(genotypes, phases, benchmarks, bicubic, experiment, folder / (PLOT_MS if latency else PLOT))
    return text


def costs(experiment: dict, records: list[dict]) -> list[dict]:
    """Per method (the searched genotypes together, each baseline, the random genotypes, TPSR): the mean minutes
    to choose a genotype (``experiment.json``'s ``choice_s``, where compare recorded it) and to retrain it once
    (records' ``wall_time_s``), with the range of load averages the records saw. Empty for an experiment that
    recorded no choice cost."""
    models = experiment.get("models", {})
    if not any("choice_s" in m for m in models.values()):
        return []
    methods: dict[str, list[str]] = {}
    for name, m in models.items():
        methods.setdefault(name if m["group"] == "baseline" else m["group"], []).append(name)
    out = []
    for method, names in methods.items():
        choice = [models[n]["choice_s"] for n in names if models[n].get("choice_s") is not None]
        done = [r for r in records if r["model"] in names and r.get("wall_time_s") is not None]
        loads = [v for r in done for v in _loads(r)]
        out.append(
            {
                "method": method,
                "genotypes": len(names),
                "choice_minutes": sum(choice) / len(choice) / 60 if len(choice) == len(names) else None,
                "train_minutes": sum(r["wall_time_s"] for r in done) / len(done) / 60 if done else None,
                "trainings": len(done),
                "load": [min(loads), max(loads)] if loads else None,
            }
        )
    return out


def _loads(record: dict) -> list[float]:
    """The 1-minute load averages a record saw, before and after (trial records keep them under provenance)."""
    load = record.get("load_average") or record.get("provenance", {}).get("load_average") or {}
    return [v[0] for v in (load.get("before"), load.get("after")) if v]


def _cell(values: list[float], metric: str) -> str:
    if not values:
        return "n/a"
    mean, sd = stats.mean_sd(values)
    if metric != "psnr_y":
        return format_value(mean, METRICS[metric].digits)
    return f"{mean:.3f}" + ("" if sd is None else f" ± {sd:.3f}")  # 3 decimals: seed noise is ~0.01 dB


# Per genotype and phase, the metrics worth a column: fidelity for both models, perception for the GAN one.
# Every metric of every record is in the "Every record" table below them.
PHASE_METRICS = {"pixel": ("psnr_y", "ssim_y"), "gan": ("psnr_y", "ssim_y", "niqe", "lpips")}


def genotype_table(genotypes: list[Genotype], phase: str, datasets: list[str], selection: str | None) -> str:
    """One row per genotype: Y-PSNR mean ± sd over its seeds per dataset, and the phase's other metrics (means)
    on the benchmarks, where they have values."""
    wanted = PHASE_METRICS.get(phase, tuple(METRICS))
    columns = [
        (d, m)
        for d in datasets
        for m in wanted
        if (d != selection or m == "psnr_y") and any(g.values.get((phase, d, m)) for g in genotypes)
    ]
    names = [f"{d}{' (selection)' if d == selection else ''} {METRICS[m].label}" for d, m in columns]
    latency = [
        (label, attr)
        for label, attr in (("predicted ms", "predicted_ms"), ("measured ms", "measured_ms"))
        if any(getattr(g, attr) is not None for g in genotypes)
    ]  # at matched latency only: a MACs experiment's table is as it always was
    lines = [
        "| model | group | params | GMACs@720p | "
        + "".join(f"{label} | " for label, _ in latency)
        + "depth | seeds | "
        + " | ".join(names)
        + " |",
        "|" + "---|" * (6 + len(latency) + len(columns)),
    ]
    for g in genotypes:
        cells = [g.model, g.group, f"{g.params:,}", f"{g.macs / 1e9:.3f}"]
        cells += ["n/a" if getattr(g, attr) is None else f"{getattr(g, attr):.3f}" for _, attr in latency]
        cells += [str(g.depth), str(len(g.seeds))]
        cells += [_cell(g.values.get((phase, d, m), []), m) for d, m in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def statistics_table(rows: list[dict]) -> str:
    lines = [
        "| phase | dataset | searched (n) | random (n) | gap searched − random [95% CI] | Mann–Whitney U, p "
        "(one-sided) | searched percentile in random | tpsr | noise floor (sd over seeds) |",
        "|" + "---|" * 9,
    ]

    def group(s: dict, name: str) -> str:
        g = s["groups"].get(name)
        if g is None:
            return "-"
        return f"{g['mean']:.3f}" + ("" if g["sd"] is None else f" ± {g['sd']:.3f}") + f" ({g['n']})"

    for s in rows:
        gap = s.get("gap")
        gap_text = "-" if gap is None else f"{gap['estimate']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"
        mw = s.get("mann_whitney")
        mw_text = "-" if mw is None else f"{mw['u']:.1f}, p = {mw['p']:.3g}"
        percentiles = ", ".join(f"{m} {v:.0f}" for m, v in s.get("searched_percentile", {}).items()) or "-"
        tpsr = s.get("tpsr")
        tpsr_text = "-" if tpsr is None else f"{tpsr['percentile']:.0f}th pct, rank {tpsr['rank']} of {tpsr['of']}"
        floor = s["noise_floor"]
        floor_text = "-" if floor is None else f"{floor:.3f} ({', '.join(s['noise_floor_from'])})"
        lines.append(
            f"| {s['phase']} | {s['dataset']} | {group(s, 'searched')} | {group(s, 'random')} | {gap_text} | "
            f"{mw_text} | {percentiles} | {tpsr_text} | {floor_text} |"
        )
    return "\n".join(lines)


def _gap_text(gap: float | None, ci: list[float] | None) -> str:
    if gap is None:
        return "-"
    return f"{gap:+.3f}" + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]")


def verdict(s: dict, matched: str = "MACs") -> str | None:
    """One sentence: did the searched genotypes beat the random ones here (of matched ``matched``: MACs or latency),
    by how much, and how sure is that."""
    gap, mw = s.get("gap"), s.get("mann_whitney")
    if gap is None:
        return None
    counts = f"{s['groups']['searched']['n']} searched vs {s['groups']['random']['n']} random genotypes"
    where = f"{s['dataset']}, {s['phase']} phase ({counts})"
    if s["groups"]["random"]["n"] < 2:
        return f"{where}: too few random genotypes to say anything."
    ci = f"{gap['estimate']:+.3f} dB (95% CI [{gap['low']:+.3f}, {gap['high']:+.3f}])"
    floor = "" if s["noise_floor"] is None else f"; noise floor {s['noise_floor']:.3f} dB"
    tail = f"one-sided Mann–Whitney p = {mw['p']:.3g}{floor}"
    if gap["low"] > 0:
        return f"{where}: the searched genotypes beat random ones of matched {matched} by {ci}, {tail}."
    detectable = s.get("detectable_gap")
    power = (
        ""
        if detectable is None
        else f" A gain of {detectable['gap']:.3f} dB or more would have been detected with {detectable['power']:.0%} "
        f"power (one-sided α {detectable['alpha']}, the random genotypes' sd {detectable['sd']:.3f} dB)."
    )
    if gap["high"] < 0:
        return (
            f"{where}: the searched genotypes are worse than random ones of matched {matched} by {ci}, {tail}.{power}"
        )
    return f"{where}: no difference shown between searched and random genotypes: {ci} contains 0, {tail}.{power}"


def markdown_report(
    name: str,
    experiment: dict,
    records: list[dict],
    genotypes: list[Genotype],
    phases: list[str],
    datasets: list[str],
    summary: dict,
    bicubic: dict,
) -> str:
    selection = experiment.get("selection")
    window, matched = "", "MACs"
    if experiment.get("target_macs_720p"):
        window = (
            f" Random genotypes: uniform over the search space within {experiment['target_macs_720p'] / 1e9:.3f}"
            f" GMACs ± {experiment['tolerance']:.0%}, under the same skip cap."
        )
    elif latency_window(experiment):
        window, matched = latency_text(experiment), "latency"
    out = [
        f"# Comparison `{name}`",
        "",
        f"{len(records)} records, {len(genotypes)} genotypes, recipe {', '.join(summary['recipe_hash'])}"
        + (f" (`{experiment['recipe_file']}`)" if experiment.get("recipe_file") else "")
        + "."
        + window,
    ]
    if selection:
        out.append(
            f"Checkpoints were chosen on `{selection}`, a slice held out of the training images; every other "
            "dataset is reported only."
        )
    out += ["", "Y-PSNR in dB; mean ± sd over training seeds where a genotype has several."]
    for phase in phases:
        out += ["", f"## Per genotype: {phase} phase", "", genotype_table(genotypes, phase, datasets, selection)]
    if summary["statistics"]:
        out += [
            "",
            f"## Searched vs random at matched {matched} (Y-PSNR)",
            "",
            "Each genotype counts once, by its mean over seeds. Gap: mean of the searched genotypes minus mean of the "
            f"random ones, 95% percentile bootstrap over genotypes ({RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}). "
            "Mann–Whitney U: one-sided, alternative searched > random. Percentiles: share of random genotypes below "
            "(ties count half). Noise floor: pooled sd of one genotype over training seeds.",
            "",
            statistics_table(summary["statistics"]),
            "",
        ]
        out += [f"- {v}" for v in (verdict(s, matched) for s in summary["statistics"]) if v]
        rows = [(st, m, b) for st in summary["statistics"] for m, b in st.get("baselines", {}).items()]
        if rows:
            out += [
                "",
                f"## Baselines at matched {matched} (Y-PSNR)",
                "",
                "Each baseline genotype by its mean over seeds: its percentile among the random genotypes, and the "
                "searched genotypes' mean minus it (compare with the noise floor above); the 95% CI is a t interval "
                "with the searched genotypes' spread (df = their number − 1) and the baseline's seed noise.",
                "",
                "| phase | dataset | baseline | mean | percentile in random | searched − baseline [95% CI] |",
                "|---|---|---|---|---|---|",
            ]
            out += [
                f"| {st['phase']} | {st['dataset']} | {m} | {b['mean']:.3f} | {b['percentile']:.0f} | "
                + _gap_text(b["searched_minus"], b.get("searched_minus_ci"))
                + " |"
                for st, m, b in rows
            ]
    if summary.get("cost"):
        out += [
            "",
            "## Cost",
            "",
            "Minutes of one process's wall time (one thread unless the records say otherwise), as run: choosing a "
            "genotype (a search run; a best-of-k baseline's proxy trainings; nothing for a draw or a rule) and "
            "retraining it once with this recipe, with the load average the retrainings' records carry.",
            "",
            "| method | genotypes | minutes to choose one | retraining minutes per training (trainings) "
            "| load average |",
            "|---|---|---|---|---|",
        ]
        for c in summary["cost"]:
            choose = "-" if c["choice_minutes"] is None else f"{c['choice_minutes']:.1f}"
            train = "-" if c["train_minutes"] is None else f"{c['train_minutes']:.1f} ({c['trainings']})"
            load = "-" if c["load"] is None else f"{c['load'][0]:.1f}–{c['load'][1]:.1f}"
            out.append(f"| {c['method']} | {c['genotypes']} | {choose} | {train} | {load} |")
    if summary["proxy"]:
        out += [
            "",
            f"## Proxy validity: Kendall τ against `{summary['versus']}`",
            "",
            "| phase | dataset | genotypes | τ | p (two-sided) |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {p['phase']} | {p['dataset']} | {len(p['models'])} | {p['tau']:+.3f} | {p['p']:.3g} |"
            for p in summary["proxy"]
        ]
    rows = [{"model": "bicubic", "phase": "-", "params": 0, "macs_720p": 0, "scores": bicubic}] if bicubic else []
    order = {g.model: i for i, g in enumerate(genotypes)}
    for r in sorted(records, key=lambda r: (order[r["model"]], r["seed"])):
        for phase, scores in r["scores"].items():
            rows.append(
                {
                    "model": f"{r['model']} seed {r['seed']}",
                    "phase": phase,
                    "params": r["params"],
                    "macs_720p": r["macs_720p"],
                    "scores": scores,
                }
            )
    benchmarks = [d for d in datasets if d != selection and all(d in row["scores"] for row in rows)]
    if benchmarks:
        out += ["", "## Every record", "", markdown_table(rows, benchmarks)]
    return "\n".join(out) + "\n"


def latency_text(experiment: dict) -> str:
    """The report's sentences on a latency window: where the random genotypes lie in ms, by which table, and whether
    the models were timed here or the latency is predicted only."""
    target, tolerance = latency_window(experiment)
    latency = experiment.get("latency", {})
    p = latency.get("provenance", {})
    made = f"{p.get('backend', '?')}, {p.get('threads', '?')} thread(s), {p.get('gpu') or p.get('cpu_model', '?')}"
    lr = "x".join(map(str, latency.get("lr_size", []))) or "?"
    text = (
        f" Random genotypes: uniform over the search space within {target:.3f} ms ± {tolerance:.0%} as the latency"
        f" table `{latency.get('table', '?')}` predicts them ({made}; LR {lr}), under the same skip cap."
    )
    timing = latency.get("timing", {})
    if timing.get("confirmed"):
        load = f"load average {timing['load_before'][0]:.2f} -> {timing['load_after'][0]:.2f}"
        return text + (
            f" Every model was timed end to end here ({timing['backend']}, {timing['threads']} thread(s), {load});"
            f" {timing['redrawn']} random genotype(s) measured outside the window were redrawn."
        )
    return text + " Latency is predicted only: no model was timed on this machine (`--confirm-timing`)."


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


# --- the plot --------------------------------------------------------------------------------------------------

STYLE = {
    "random": {"marker": "o", "color": "0.55", "markersize": 5},
    "searched": {"marker": "^", "color": "tab:red", "markersize": 8},
    "baseline": {"marker": "s", "color": "tab:green", "markersize": 6},
    "tpsr": {"marker": "*", "color": "tab:blue", "markersize": 12},
}


def plot(
    genotypes: list[Genotype], phases: list[str], benchmarks: list[str], bicubic: dict, experiment: dict, path: Path
) -> None:
    """Y-PSNR against MACs, one panel per phase (rows) and benchmark (columns): a point per genotype at its mean
    over seeds, error bars one sd over seeds, bicubic as a dashed line, the random genotypes' MACs window shaded. At
    matched latency the x axis is each genotype's predicted ms and the latency window is shaded."""
    from darts_sr.search.plots import plt  # the Agg backend, set before pyplot loads

    fig, axes = plt.subplots(
        len(phases),
        len(benchmarks),
        figsize=(0.8 + 4.6 * len(benchmarks), 1.0 + 3.6 * len(phases)),
        squeeze=False,
        layout="constrained",
    )
    target, tolerance = experiment.get("target_macs_720p"), experiment.get("tolerance")
    unit, x_label = 1e9, "GMACs for a 1280x720 output"

    def x_of(g: Genotype) -> float | None:
        return g.macs / 1e9

    if latency_window(experiment):  # x: each genotype's predicted ms, the window in ms
        (target, tolerance), unit = latency_window(experiment), 1.0
        p = experiment.get("latency", {}).get("provenance", {})
        x_label = f"predicted ms for a 1280x720 output ({p.get('backend', '?')}, {p.get('threads', '?')} thread(s))"

        def x_of(g: Genotype) -> float | None:
            return g.predicted_ms

    for (i, phase), (j, bench) in ((a, b) for a in enumerate(phases) for b in enumerate(benchmarks)):
        ax, key = axes[i, j], (phase, bench, "psnr_y")
        if target and tolerance:
            low, high = target * (1 - tolerance) / unit, target * (1 + tolerance) / unit
            ax.axvspan(low, high, color="0.92", zorder=0, label=f"random window ±{tolerance:.0%}")
        for group in ("random", "baseline", "searched", "tpsr"):
            members = [g for g in genotypes if g.group == group and g.values.get(key) and x_of(g) is not None]
            if not members:
                continue
            spread = [stats.mean_sd(g.values[key]) for g in members]
            x = [x_of(g) for g in members]
            y = [m for m, _ in spread]
            ax.errorbar(
                x,
                y,
                yerr=[sd or 0.0 for _, sd in spread],
                linestyle="none",
                capsize=2.5,
                elinewidth=1,
                label=f"{group} ({len(members)})",
                zorder=3,
                **STYLE[group],
            )
            if group != "random":  # short labels (S0 = searched_0); points on the same spot share one label
                at: dict[tuple[float, float], list[str]] = {}
                for g, xi, yi in zip(members, x, y):
                    name = {"tpsr": "TPSR", "baseline": g.model.removeprefix("baseline_")}.get(
                        g.group, "S" + g.model.rpartition("_")[2]
                    )
                    at.setdefault((xi, yi), []).append(name)
                for (xi, yi), names in at.items():
                    ax.annotate(",".join(names), (xi, yi), fontsize=7, xytext=(5, 3), textcoords="offset points")
        line = bicubic.get(bench, {}).get("psnr_y")
        low_y, high_y = ax.get_ylim()
        if line is not None and line >= low_y - 0.5 * (high_y - low_y):
            ax.axhline(line, color="0.3", linestyle="--", linewidth=1, label="bicubic")
            ax.annotate(
                f"bicubic {line:.2f} dB",
                (0.01, line),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                xytext=(0, 3),
                textcoords="offset points",
                color="0.3",
            )
        elif line is not None:  # far below the models: a line would squash their differences into a strip
            ax.annotate(
                f"bicubic {line:.2f} dB (below the axis)",
                (0.01, 0.01),
                xycoords="axes fraction",
                fontsize=7,
                color="0.3",
            )
        ax.set_title(f"{bench}, {phase} phase", fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel("Y-PSNR (dB), mean ± sd over seeds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, linewidth=0.4, alpha=0.5)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=7, frameon=False)
    buffer = io.BytesIO()  # written whole: shards of one comparison may rebuild the report at the same time
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
