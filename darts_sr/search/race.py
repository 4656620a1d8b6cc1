"""Stage 2 as a race: successive halving over a handful of discrete discriminators, the discrete alternative to the
discriminator supernet for the same question (which discriminator makes the best perceptual generator?).

    darts-sr search --stage discriminator --method race --generator tpsr --config race_cpu --out runs/race_cpu

Candidates: ``stage2.race_candidates`` (built-in names, e.g. ``reference``, SRGAN's discriminator at the widest of
``stage2.base_widths``; or genotype JSON files such as a supernet search's pick, named ``searched_<i>``), then
``stage2.race_random`` genotypes drawn uniformly from stage 2's space (``blocks``, ``ops``, ``base_widths``,
``norms``) with seed ``run.seed``, named ``random_<i>``.

The generator: ``stage2.generator_weights``, else pixel-pretrained here for ``stage2.pretrain_steps`` at the
constant ``stage2.pretrain_lr``, as the supernet search pretrains (``race/pixel``, the best validation Y-PSNR kept).
Its validation Y-PSNR minus ``stage2.race_psnr_margin`` is the PSNR floor.

Rung r fine-tunes every surviving candidate from the pixel weights for ``race_min_steps * race_eta ** r`` steps with
``train.Retrainer``'s GAN phase (loss ``loss``, learning rates ``stage2.generator_lr`` -> ``generator_lr_min`` and
``stage2.d_lr``, the same seed ``run.seed`` for every candidate, so all draw the same patches), and scores the
generator once, at the end, on the validation slice; with ``stage2.race_seeds`` k > 1 each candidate is fine-tuned
with seeds ``run.seed`` .. ``run.seed + k - 1`` (``rung<r>/<candidate>_seed<s>`` beyond the first) and the rung ranks
the mean scores (the per-seed ones are logged under ``per_seed``). Each rung's fine-tune starts afresh from the
pixel weights with its cosine schedule over the rung's budget: a rung's scores are all of complete fine-tunes of one
length, at the price of not reusing the previous rung's steps. With ``stage2.race_grow: seeds`` every rung is instead
as long as ``race_min_steps`` (the fine-tune the race chooses for) and rung r adds ``race_seeds`` new seeds
(``run.seed + r * race_seeds`` ..), ranking each survivor by the mean over all its seeds so far: short rungs can
reverse by the full length, and at matched length a leader's margin is judged against more seeds as the field
narrows. With ``stage2.race_recipe`` (a retraining recipe such as ``gan_finetune_cpu``, with the ``key=value``
overrides ``race_recipe_set``) every fine-tune is that recipe's GAN phase instead (data, loss, learning rates, EMA,
discriminator section, validations every ``val_every`` steps), and a candidate is scored by the validation of the
model the phase's keep rule keeps: the fine-tune ``compare-discriminators`` judges the pick on
(``configs/race_finetune_cpu.yaml``). Then:

1. a candidate whose Y-PSNR is under the floor is dropped (the adversarial term wrecked fidelity);
2. the rest are ranked, lower better, by the primary metric: LPIPS where its AlexNet weights exist
   (``race_metric: auto``; a full-reference perceptual distance, which a noise-like texture cannot game as it can
   NIQE), else NIQE; ties go to the other metric where it exists, then to the higher Y-PSNR, then to the earlier
   candidate;
3. the best ``len // race_eta`` (at least one) go on; the race ends at the rung that keeps one, the winner.

Honest split: with ``data.val: holdout`` the race scores on the 20 ``data.HOLDOUT`` images alone, which no training
pool holds (``data.training_exclusions``); a reported benchmark (Set5, Set14) as ``data.val`` is refused. Every
fine-tune is a ``trials.Trial`` with its record beside its run folder.

Files (``run_files``): ``race_discriminator.json``, the race's log (candidates, the pixel model's scores and the
floor, each rung's budget, every candidate's scores and fate), rewritten atomically after every fine-tune;
``genotype_discriminator.json``, the winner; ``race/pixel`` and ``race/rung<r>/<candidate>``, the fine-tunes' run
folders. Running the race again in its folder (``--resume``) reuses finished fine-tunes and resumes a cut one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from darts_sr import run_files
from darts_sr.cli import resolve_config
from darts_sr.config import (
    ConfigError,
    DiscriminatorConfig,
    PhaseConfig,
    SearchConfig,
    TrainConfig,
    load_config,
)
from darts_sr.data import DEFAULT_BENCHMARKS, centre_crop, load_dataset, parse_data_spec
from darts_sr.evaluation.metrics import METRICS, MetricSettings, create_scorers
from darts_sr.evaluation.scoring import evaluate_pairs, format_value
from darts_sr.io import atomic_write_text
from darts_sr.nets.discriminator import (
    BUILTIN_DISCRIMINATORS,
    DiscriminatorGenotype,
    discriminator_params,
    load_discriminator_genotype,
    random_discriminator_genotypes,
)
from darts_sr.nets.genotype import GeneratorGenotype
from darts_sr.nets.networks import load_generator
from darts_sr.search.discriminator_stage import resolve_generator_genotype
from darts_sr.training.retrain import chosen_validation, keep_rule
from darts_sr.training.trials import (
    HOLDOUT_VAL,
    Trial,
    refuse_reported_validation,
    resolve_validation,
    selection_name,
    write_record,
)

log = logging.getLogger(__name__)

Scores = dict[str, float | None]  # one validation record: a value (or None) per metric of metrics.METRICS


class RaceError(ConfigError):
    """A race that cannot run or ends without a winner; the message names the setting to change."""


# --- candidates ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A discriminator in a race or a comparison: ``name`` (``reference``, ``searched_<i>``, ``random_<i>``), its
    ``group`` (the name without the index), where it came from, and its genotype."""

    name: str
    group: str
    source: str
    genotype: DiscriminatorGenotype


def named_candidates(specs: tuple[str, ...] | list[str], reference_width: int | None = None) -> list[Candidate]:
    """Built-in names (``reference`` at ``reference_width`` when given) and genotype JSON files (``searched_<i>``)."""
    out, files = [], 0
    for spec in specs:
        if spec in BUILTIN_DISCRIMINATORS:
            genotype = BUILTIN_DISCRIMINATORS[spec]
            if reference_width is not None:
                genotype = replace(genotype, base_width=reference_width)
            out.append(Candidate(spec, spec, spec, genotype))
        else:
            out.append(Candidate(f"searched_{files}", "searched", str(spec), load_discriminator_genotype(spec)))
            files += 1
    return out


def sampled_candidates(count: int, seed: int, space: dict[str, Any]) -> list[Candidate]:
    try:
        genotypes = random_discriminator_genotypes(count, seed, **space)
    except ValueError as e:
        raise RaceError(f"random discriminators: {e}") from None
    return [Candidate(f"random_{i}", "random", f"sample {i} (seed {seed})", g) for i, g in enumerate(genotypes)]


def distinct(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates less later copies of an earlier one's genotype (training a genotype twice decides nothing)."""
    out: list[Candidate] = []
    for c in candidates:
        twin = next((o for o in out if o.genotype == c.genotype), None)
        if twin is None:
            out.append(c)
        else:
            log.info("%s (%s) is the same discriminator as %s; left out", c.name, c.source, twin.name)
    return out


def search_space(config: SearchConfig) -> dict[str, Any]:
    """Stage 2's discrete space, as the random sampler takes it."""
    s = config.stage2
    return {
        "blocks": s.blocks,
        "ops": tuple(s.ops),
        "base_widths": tuple(s.base_widths),
        "norms": tuple(s.norms),
        "heads": tuple(s.heads),
    }


def race_candidates(config: SearchConfig) -> list[Candidate]:
    s = config.stage2
    named = named_candidates(s.race_candidates, reference_width=max(s.base_widths))
    return distinct(named + sampled_candidates(s.race_random, config.run.seed, search_space(config)))


def effective_genotype(genotype: DiscriminatorGenotype, recipe: TrainConfig) -> DiscriminatorGenotype:
    """The discriminator a recipe trains: its ``discriminator.base_width``, when set, replaces the genotype's
    (as ``train.Retrainer`` does)."""
    width = recipe.discriminator.base_width
    return genotype if width is None else replace(genotype, base_width=width)


# --- one fine-tune ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FineTune:
    """A finished fine-tune: the validation scores of its generator at the end, the run's summary and folder."""

    scores: Scores
    summary: dict
    run_dir: Path

    @property
    def model(self) -> Path:
        return self.run_dir / run_files.MODEL_GAN


def finetune(
    genotype: GeneratorGenotype,
    pixel_weights: Path,
    d_genotype: DiscriminatorGenotype,
    recipe: TrainConfig,
    seed: int,
    steps: int,
    run_dir: Path,
    split_dir: Path,
    val_every: int | None = None,
) -> FineTune:
    """``genotype`` started from ``pixel_weights`` (a ``model_pixel.pt`` or a TPSR state dict) and fine-tuned for
    ``steps`` steps of the recipe's GAN phase (its loss, learning rates, EMA and ``discriminator`` section) against
    ``Discriminator(d_genotype)`` with seed ``seed``, in ``run_dir``: a ``trials.Trial``, so a finished fine-tune is
    read back, a cut one resumed, and a folder of any other fine-tune refused. Validated on the recipe's
    ``data.val`` every ``val_every`` steps (None: once, at the end) and scored by the validation of the model the
    GAN phase's keep rule kept (all None when the rule kept none: no validation reached its ``psnr_floor``); the
    trial's record is written beside the run folder (``<run_dir>.json``)."""
    if steps < 1:
        raise ConfigError(f"a fine-tune needs at least one step, got {steps}")
    recipe = replace(recipe, gan_phase=replace(recipe.gan_phase, steps=steps), val_every=val_every or steps)
    trial = Trial(genotype, recipe, seed, init=Path(pixel_weights), discriminator=d_genotype)
    record = trial.record(run_dir, split_dir, None, {"model": Path(run_dir).name, "group": "race"})
    write_record(Path(f"{run_dir}.json"), record)
    summary = json.loads((Path(run_dir) / run_files.RETRAIN.summary).read_text())
    history = [h for h in summary["val_history"] if h["phase"] == "gan"]
    kept = chosen_validation(history, keep_rule("gan", recipe.gan_phase), recipe.gan_phase.psnr_floor)
    scores = {k: (None if kept is None else history[kept].get(k)) for k in METRICS}
    return FineTune(scores, summary, Path(run_dir))


# --- successive halving -------------------------------------------------------------------------------------------


def rank_key(scores: Scores, metric: str) -> tuple[float, float, float]:
    """Sort key, smaller first: the primary metric (``niqe`` or ``lpips``, lower better), the other one, then
    Y-PSNR (higher better). A missing value (a metric that could not run) sorts last."""

    def low(value: float | None) -> float:
        return math.inf if value is None or not math.isfinite(value) else value

    other = "niqe" if metric == "lpips" else "lpips"
    psnr = scores.get("psnr_y")
    higher = -psnr if psnr is not None and not math.isnan(psnr) else math.inf
    return low(scores.get(metric)), low(scores.get(other)), higher


def successive_halving(
    names: list[str],
    score: Callable[[str, int, int], Scores],
    *,
    eta: int,
    min_steps: int,
    floor: float,
    metric: str,
    on_score: Callable[[list[dict]], None] | None = None,
    grow: str = "steps",
) -> dict[str, Any]:
    """Races ``names``: rung r calls ``score(name, r, min_steps * eta ** r)`` (``grow="seeds"``: ``min_steps`` at every
    rung; the scorer adds seeds) for each survivor, drops those whose
    ``psnr_y`` is under ``floor``, ranks the rest by ``rank_key(scores, metric)`` and keeps the best
    ``len // eta`` (at least one); the race ends at the rung that keeps one (or none: every candidate under the
    floor). Returns ``{"rungs": [...], "winner": name or None}``; ``on_score(rungs)`` sees every step of it."""
    if eta < 2:
        raise RaceError(f"stage2.race_eta must be at least 2, got {eta}")
    if not names:
        raise RaceError("a race needs candidates")
    rungs: list[dict] = []
    alive = list(names)
    for r in range(len(names)):  # each rung keeps at most half: this bound is never reached
        steps = min_steps * eta**r if grow == "steps" else min_steps
        rung: dict[str, Any] = {
            "rung": r,
            "steps": steps,
            "candidates": list(alive),
            "scores": {},
            "dropped": {},
            "ranking": [],
            "kept": [],
        }
        rungs.append(rung)
        for name in alive:
            scores = score(name, r, steps)
            rung["scores"][name] = scores
            psnr = scores.get("psnr_y")
            if psnr is None or not psnr >= floor:  # `not >=`: a NaN is under every floor
                shown = "n/a" if psnr is None else f"{psnr:.2f}"
                rung["dropped"][name] = f"Y-PSNR {shown} dB under the floor {floor:.2f} dB"
            if on_score is not None:
                on_score(rungs)
        order = {n: i for i, n in enumerate(alive)}
        ranking = sorted(
            (n for n in alive if n not in rung["dropped"]),
            key=lambda n: (*rank_key(rung["scores"][n], metric), order[n]),
        )
        keep = max(1, len(ranking) // eta) if ranking else 0
        rung["ranking"], rung["kept"] = ranking, ranking[:keep]
        if on_score is not None:
            on_score(rungs)
        if keep <= 1:
            return {"rungs": rungs, "winner": ranking[0] if ranking else None}
        alive = rung["kept"]
    raise AssertionError("unreachable: every rung keeps at most half of at least two candidates")


# --- the race in a run folder -------------------------------------------------------------------------------------


def race_recipe(config: SearchConfig) -> TrainConfig:
    """The fine-tuning recipe of a race: ``stage2.race_recipe`` (with ``race_recipe_set``) where given, with this
    config's seed and device; else read off stage 2's settings: the search's data and run sections; the pixel
    phase is stage 2's pretraining (constant learning rate), the GAN phase stage 2's generator training (``loss``
    with ``stage2.adversarial`` as its adversarial weight where set, the generator's learning-rate schedule; its
    steps are each rung's budget), the discriminator's learning rate ``d_lr`` (candidates keep their widths)."""
    s = config.stage2
    if s.race_recipe is not None:
        recipe = load_config(TrainConfig, resolve_config(s.race_recipe), list(s.race_recipe_set))
        return replace(recipe, run=replace(recipe.run, seed=config.run.seed, device=config.run.device))
    if s.race_recipe_set:
        raise RaceError("stage2.race_recipe_set: overrides of a race_recipe, and none is given")
    loss = config.loss if s.adversarial is None else replace(config.loss, adversarial=s.adversarial)
    return TrainConfig(
        data=config.data,
        pixel_phase=PhaseConfig(steps=s.pretrain_steps, lr=s.pretrain_lr, lr_min=s.pretrain_lr),
        gan_phase=PhaseConfig(steps=s.race_min_steps, lr=s.generator_lr, lr_min=s.generator_lr_min, loss=loss),
        discriminator=DiscriminatorConfig(lr=s.d_lr),
        # Checkpoints (and validations) every 500 pretraining steps: an interrupted pretraining loses little.
        val_every=max(1, min(s.pretrain_steps, 500)),
        grad_clip=s.grad_clip,
        run=config.run,
    )


def reported_benchmarks() -> list[tuple[str, str]]:
    return [parse_data_spec(b) for b in DEFAULT_BENCHMARKS]


def check_race_config(config: SearchConfig, stage: str) -> list[Candidate]:
    """Everything a race can refuse before any work: the keys, the candidates (files named in errors) and the
    validation slice. Returns the candidates."""
    s = config.stage2
    for key, value, least in (
        ("race_eta", s.race_eta, 2),
        ("race_min_steps", s.race_min_steps, 1),
        ("race_random", s.race_random, 0),
        ("race_seeds", s.race_seeds, 1),
    ):
        if value < least:
            raise RaceError(f"stage2.{key}: must be at least {least}, got {value}")
    if not s.race_psnr_margin >= 0:
        raise RaceError(f"stage2.race_psnr_margin: must be >= 0 dB, got {s.race_psnr_margin}")
    recipe = race_recipe(config)
    if recipe.gan_phase.loss.adversarial <= 0:
        where = (
            f"{s.race_recipe}: gan_phase.loss.adversarial"
            if s.race_recipe
            else "stage2.adversarial (or loss.adversarial)"
        )
        raise RaceError(f"{where}: the race needs it > 0, or no discriminator can change the generator")
    if s.generator_weights is None and recipe.pixel_phase.steps < 1:
        where = f"{s.race_recipe}: pixel_phase.steps" if s.race_recipe else "stage2.pretrain_steps"
        raise RaceError(f"{where}: the race needs a pixel-pretrained generator (or stage2.generator_weights)")
    if s.race_recipe and s.race_grow == "seeds" and s.race_min_steps != recipe.gan_phase.steps:
        raise RaceError(
            f"stage2.race_min_steps {s.race_min_steps}: with race_grow seeds every rung is the whole fine-tune; "
            f"set it to {s.race_recipe}'s gan_phase.steps ({recipe.gan_phase.steps})"
        )
    if config.data.val == HOLDOUT_VAL and stage == "all":
        raise RaceError(
            f"data.val {HOLDOUT_VAL}: stage 1 cannot validate on it; run the race on its own "
            "(--stage discriminator --generator RUN/genotype_generator.json)"
        )
    refuse_reported_validation(recipe, reported_benchmarks())
    # What trains is a candidate at the recipe's discriminator.base_width, where one is set (as compare-discriminators
    # trains it): two candidates that differ only in width would be the same network.
    candidates = distinct(
        [replace(c, genotype=effective_genotype(c.genotype, recipe)) for c in race_candidates(config)]
    )
    if len(candidates) < 2:
        raise RaceError(
            f"stage2.race_candidates and race_random give {len(candidates)} distinct discriminator(s); "
            "a race needs at least 2"
        )
    return candidates


def resolve_metric(asked: str, lpips_available: bool) -> str:
    if asked == "lpips" and not lpips_available:
        raise RaceError("stage2.race_metric lpips: LPIPS cannot run here (no ImageNet AlexNet); use auto or niqe")
    if asked == "auto":
        return "lpips" if lpips_available else "niqe"
    return asked


def race(config: SearchConfig, run_dir: Path, stage: str = "discriminator") -> dict[str, Any]:
    """Runs (or continues) the race in ``run_dir``; writes the log and the winner, returns the log."""
    started = time.time()
    s, run_dir = config.stage2, Path(run_dir)
    candidates = check_race_config(config, stage)
    by_name = {c.name: c for c in candidates}
    genotype = resolve_generator_genotype(config, run_dir)
    work = run_dir / run_files.DISCRIMINATOR_RACE_DIR
    split_dir = work / "split"
    recipe = race_recipe(config)
    selection = selection_name(recipe)
    settings = MetricSettings(recipe.gan_phase.loss.pretrained_dir, config.run.device)
    scorers = create_scorers(settings=settings)
    metric = resolve_metric(s.race_metric, scorers["lpips"] is not None)
    log_file = run_dir / run_files.DISCRIMINATOR_RACE
    head: dict[str, Any] = {
        "method": "race",
        "generator_genotype": genotype.to_dict(),
        "selection": selection,
        "metric": metric,
        "tie_breaks": ["lpips" if metric == "niqe" else "niqe", "psnr_y (higher)", "candidate order"],
        "eta": s.race_eta,
        "min_steps": s.race_min_steps,
        "psnr_margin": s.race_psnr_margin,
        "seed": config.run.seed,
        "seeds_per_rung": s.race_seeds,
        "grow": s.race_grow,
        "candidates": {
            c.name: {
                "group": c.group,
                "source": c.source,
                "genotype": c.genotype.to_dict(),
                "params": discriminator_params(c.genotype),
            }
            for c in candidates
        },
        "pixel": None,
        "psnr_floor": None,
        "rungs": [],
        "winner": None,
    }
    write_race_log(log_file, head)

    if s.generator_weights is not None:
        pixel_weights = Path(s.generator_weights)
    else:
        pixel_recipe = replace(recipe, gan_phase=replace(recipe.gan_phase, steps=0))
        Trial(genotype, pixel_recipe, config.run.seed).run(work / "pixel", split_dir)
        pixel_weights = work / "pixel" / run_files.MODEL_PIXEL
    scale = genotype.scale
    val = resolve_validation(recipe, split_dir).data.val
    val_pairs = centre_crop(load_dataset(val, scale, split="val"), recipe.data.val_crop, scale)
    generator = load_generator(pixel_weights, genotype).to(config.run.device)
    pixel = evaluate_pairs(generator, val_pairs, selection, scale, scorers, config.run.device).values
    floor = pixel["psnr_y"] - s.race_psnr_margin
    head |= {"pixel": {"weights": str(pixel_weights), "scores": pixel}, "psnr_floor": floor}
    write_race_log(log_file, head)
    log.info(
        "race: %d candidates (%s), ranked by %s at a Y-PSNR floor of %.2f dB (pixel model %.2f dB - %.2f)",
        len(candidates),
        ", ".join(by_name),
        metric,
        floor,
        pixel["psnr_y"],
        s.race_psnr_margin,
    )

    finetune_seconds = []  # of every fine-tune, finished now or earlier: the race's cost, resumed or not

    earlier: dict[str, list[Scores]] = {}  # with race_grow seeds: each candidate's fine-tunes of the earlier rungs

    def score(name: str, rung: int, steps: int) -> Scores:
        first = config.run.seed + (rung * s.race_seeds if s.race_grow == "seeds" else 0)
        per_seed = earlier.setdefault(name, []) if s.race_grow == "seeds" else []
        for seed in range(first, first + s.race_seeds):
            folder = name if seed == config.run.seed else f"{name}_seed{seed}"
            done = finetune(
                genotype,
                pixel_weights,
                by_name[name].genotype,
                recipe,
                seed,
                steps,
                work / f"rung{rung}" / folder,
                split_dir,
                recipe.val_every if s.race_recipe else None,
            )
            finetune_seconds.append(done.summary["wall_time_s"])
            per_seed.append(done.scores)
        scores = mean_scores(per_seed)
        shown = ", ".join(f"{METRICS[k].label} {format_value(v, METRICS[k].digits)}" for k, v in scores.items())
        seeds = f" (mean of {len(per_seed)} seeds)" if len(per_seed) > 1 else ""
        log.info("race rung %d, %s, %d steps: %s%s", rung, name, steps, shown, seeds)
        return scores | ({"per_seed": list(per_seed)} if len(per_seed) > 1 else {})

    outcome = successive_halving(
        list(by_name),
        score,
        eta=s.race_eta,
        min_steps=s.race_min_steps,
        floor=floor,
        metric=metric,
        on_score=lambda rungs: write_race_log(log_file, head | {"rungs": rungs}),
        grow=s.race_grow,
    )
    result = (
        head
        | outcome
        | {"wall_time_s": round(time.time() - started, 1), "finetune_time_s": round(sum(finetune_seconds), 1)}
    )
    write_race_log(log_file, result)
    if outcome["winner"] is None:
        last = len(outcome["rungs"]) - 1
        raise RaceError(
            f"every candidate fell under the Y-PSNR floor {floor:.2f} dB at rung {last} ({log_file}); "
            "raise stage2.race_psnr_margin"
        )
    winner = by_name[outcome["winner"]].genotype
    atomic_write_text(run_dir / run_files.DISCRIMINATOR_GENOTYPE, winner.to_json() + "\n")
    return result


def mean_scores(per_seed: list[Scores]) -> Scores:
    """Each metric's mean over the fine-tunes that gave a finite value; None where none did."""
    means: Scores = {}
    for key in per_seed[0]:
        values = [v for scores in per_seed if (v := scores.get(key)) is not None and math.isfinite(v)]
        means[key] = sum(values) / len(values) if values else None
    return means


def write_race_log(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
