"""Trials: the one unit every experiment is made of.

A ``Trial`` is (generator genotype, recipe, seed, optional start weights, optional discriminator) → a trained
generator, scored into one ``TrialRecord``. compare, rank_check, calibrate, the race and discriminator_compare all
train through it, so "is this the same training?" has one answer, ``Trial.identity()``:

- the recipe less its machine-local parts (the ``run`` section: device, logging, TensorBoard samples; the seed is
  kept separately), with the data paths replaced by what they hold (``data.data_identity``: each pool's name and a
  hash of the image names that train after ``data.training_exclusions()``; the validation slice likewise);
- the seed, the genotype, the discriminator actually trained (the recipe's, its ``base_width`` applied), and the
  SHA-256 of the start weights' file.

The same training on another machine, in another folder, or with the data elsewhere has the same identity; a change
of anything that alters what is trained gives another. A run folder carries its trial's identity (``trial.json``)
and is only ever resumed or reused by that trial: any other is a ``TrialError`` naming what differs.

Records (``TrialRecord``): the scores per phase and dataset (``evaluate.py --json``'s records), the validation
history, and the provenance (code version, torch, threads, device, load average before and after, wall time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from darts_sr import __version__, run_files
from darts_sr.config import ConfigError, TrainConfig, to_dict
from darts_sr.data import BUILTIN_SPLITS, HOLDOUT, HOLDOUT_VAL, data_identity, holdout_split, image_stems, names_digest
from darts_sr.io import atomic_write_text, file_sha256
from darts_sr.nets.discriminator import DiscriminatorGenotype, load_discriminator_genotype
from darts_sr.nets.genotype import GeneratorGenotype, save_genotype
from darts_sr.nets.networks import generator_macs, generator_params
from darts_sr.training.retrain import DEFAULT_KEEP, Retrainer, chosen_validation, keep_rule
from darts_sr.training.runner import prepare_run_folder, save_config

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"  # in a run folder: the identity of the trial it belongs to
MODEL_FILES = {"pixel": run_files.MODEL_PIXEL, "gan": run_files.MODEL_GAN}


# Recipe keys added after trials were first recorded, with the value that trains exactly as before they existed: at
# that value a key stays out of the identity, so the records made before it still match their trials. A new key of
# TrainConfig belongs here (tests/training/test_trials.py recomputes the key of a committed record).
NEUTRAL_KEYS: dict[str, Any] = {
    "pixel_phase.loss.feature_matching": 0.0,
    "gan_phase.loss.feature_matching": 0.0,
    "pixel_phase.keep": "default",
    "gan_phase.keep": "default",
    "pixel_phase.psnr_floor": None,
    "gan_phase.psnr_floor": None,
}


class TrialError(ConfigError):
    """A run folder or record that belongs to another trial; the message names the folder and what differs."""


def short_hash(data: Any, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def code_version() -> str:
    """The package version and, in a git checkout, the commit (``+dirty`` with uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+{commit}" + ("-dirty" if dirty else "")


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """The dotted keys at which two plain-data trees differ (for error messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
        return out
    return [] if a == b else [where or "(value)"]


@dataclass(frozen=True)
class Trial:
    """One training: ``genotype`` retrained with ``recipe`` (pixel phase, then GAN phase) at ``seed``; with ``init``
    (a pixel-trained model or a TPSR-format state dict) the pixel phase is skipped and the GAN phase starts from it.
    ``discriminator`` replaces the recipe's ``discriminator.genotype``. ``recipe.data.val`` may be ``holdout``."""

    genotype: GeneratorGenotype
    recipe: TrainConfig
    seed: int = 0
    init: Path | None = None
    discriminator: DiscriminatorGenotype | None = None

    def trained_recipe(self) -> TrainConfig:
        """The recipe as trained: the seed set, and no pixel phase when starting from weights."""
        recipe = replace(self.recipe, run=replace(self.recipe.run, seed=self.seed))
        if self.init is not None:
            recipe = replace(recipe, pixel_phase=replace(recipe.pixel_phase, steps=0))
        return recipe

    def trained_discriminator(self) -> DiscriminatorGenotype:
        genotype = self.discriminator or load_discriminator_genotype(self.recipe.discriminator.genotype)
        width = self.recipe.discriminator.base_width
        return genotype if width is None else replace(genotype, base_width=width)

    def identity(self, excluded: dict[str, str] | None = None, with_init: bool = True) -> dict:
        """Plain data naming this training on any machine (see the module docstring). ``excluded`` overrides the
        training exclusions, for describing records made before an exclusion existed."""
        recipe = self.trained_recipe()
        data = to_dict(recipe)
        data.pop("run")
        val = recipe.data.val
        data["data"]["train"] = data_identity(recipe.data.train, excluded)
        if val == HOLDOUT_VAL:
            data["data"]["val"] = f"{HOLDOUT_VAL}:{names_digest([Path(n).stem for n in HOLDOUT])}"
        elif val == "builtin":
            data["data"]["val"] = f"builtin:{names_digest(list(BUILTIN_SPLITS['val']))}"
        else:
            name, stems = image_stems(val)
            data["data"]["val"] = f"{name}:{names_digest(stems)}"
        data["discriminator"].pop("genotype")  # replaced by the genotype trained, below
        for dotted, neutral in NEUTRAL_KEYS.items():
            *path, key = dotted.split(".")
            section = data
            for part in path:
                section = section[part]
            if key in section and section[key] == neutral:
                del section[key]
        return {
            "genotype": self.genotype.to_dict(),
            "seed": self.seed,
            "recipe": data,
            "discriminator": self.trained_discriminator().to_dict() if recipe.gan_phase.steps else None,
            "init_sha256": None if self.init is None or not with_init else file_sha256(Path(self.init)),
        }

    def key(self) -> str:
        """Sixteen hex digits of the identity: equal trainings, equal keys, on any machine."""
        return short_hash(self.identity())

    def recipe_hash(self) -> str:
        """Twelve hex digits of the identity less genotype, seed, discriminator and start weights: the models an
        experiment compares under one recipe share it (the start weights' file need not exist yet)."""
        return recipe_hash_of(self.identity(with_init=False))

    # --- training ------------------------------------------------------------------------------------------------

    def run(self, run_dir: Path, split_dir: Path) -> dict:
        """Trains, resumes, or finds finished this trial in ``run_dir`` (the holdout's links go under
        ``split_dir``); returns the run's summary. A folder made for another trial is a ``TrialError``."""
        run_dir = Path(run_dir)
        identity = self.identity()
        check_run_folder(run_dir, identity)
        summary_file = run_dir / run_files.RETRAIN.summary
        if summary_file.is_file():
            log.info("%s: already trained", run_dir)
            return json.loads(summary_file.read_text())
        resume = (run_dir / run_files.RETRAIN.checkpoint).is_file()
        run_dir = prepare_run_folder(run_dir, resume=resume, overwrite=not resume)
        recipe = resolve_validation(self.trained_recipe(), split_dir)
        if not resume:
            atomic_write_text(run_dir / TRIAL_FILE, json.dumps(identity, indent=2, sort_keys=True) + "\n")
            save_config(run_dir, to_dict(recipe))
            save_genotype(self.genotype, run_dir / run_files.GENERATOR_GENOTYPE)
        log.info(
            "%s: %s (%d params, %.3f GMACs@720p, seed %d)",
            run_dir,
            "resuming" if resume else "training",
            generator_params(self.genotype),
            generator_macs(self.genotype) / 1e9,
            self.seed,
        )
        trainer = Retrainer(
            recipe, self.genotype, self.trained_discriminator(), run_dir, resume=resume, generator_weights=self.init
        )
        return trainer.run()

    def record(self, run_dir: Path, split_dir: Path, evaluator, labels: dict | None = None) -> TrialRecord:
        """Runs the trial and scores its models with ``evaluator`` (``evaluation.Evaluator``; None: only the
        validation slice's scores, from the run's history): the record."""
        load_before = os.getloadavg()
        summary = self.run(run_dir, split_dir)
        identity = self.identity()  # once: it lists the data folders and hashes the start weights
        scores = {
            phase: evaluator.model(Path(run_dir) / file)
            for phase, file in MODEL_FILES.items()
            if evaluator is not None and (Path(run_dir) / file).is_file()
        }
        selection = selection_name(self.recipe)
        for phase, score in selection_scores(summary, selection, self.trained_recipe()).items():
            scores.setdefault(phase, {})[selection] = score
        return TrialRecord(
            key=short_hash(identity),
            recipe_hash=recipe_hash_of(identity),
            identity=identity,
            seed=self.seed,
            genotype=self.genotype.to_dict(),
            params=generator_params(self.genotype),
            macs_720p=generator_macs(self.genotype),
            selection=selection,
            scores=scores,
            val_history=summary["val_history"],
            steps=summary["steps"],
            wall_time_s=summary["wall_time_s"],
            provenance=provenance(load_before, str(self.recipe.run.device)),
            **(labels or {}),
        )


def recipe_hash_of(identity: dict) -> str:
    """``Trial.recipe_hash`` from an identity already computed (the start weights' hash left out)."""
    less = {k: v for k, v in identity.items() if k not in ("genotype", "seed", "discriminator")}
    return short_hash(less | {"init_sha256": None}, 12)


def check_run_folder(run_dir: Path, identity: dict) -> None:
    """Refuses a non-empty ``run_dir`` that is not this trial's: the only safe resume is of the same training."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    saved = run_dir / TRIAL_FILE
    if not saved.is_file():
        raise TrialError(f"{run_dir}: a run folder without {TRIAL_FILE} (not made by a trial); use a new work folder")
    try:
        theirs = json.loads(saved.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrialError(f"{saved}: cannot read ({e})") from None
    if theirs != identity:
        found = differences(theirs, identity)
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise TrialError(
            f"{run_dir}: made for another trial (differs in {', '.join(found[:3])}{more}); use a new work folder"
        )


def resolve_validation(recipe: TrainConfig, split_dir: Path) -> TrainConfig:
    """``data.val: holdout`` made concrete: a folder of links to the ``data.HOLDOUT`` images under ``split_dir``
    (safe when several processes make it at once). The training pool never holds them (``load_training_pairs``)."""
    if recipe.data.val != HOLDOUT_VAL:
        return recipe
    _, val_dir = holdout_split(recipe.data.train, HOLDOUT, split_dir)
    return replace(recipe, data=replace(recipe.data, val=val_dir))


def selection_name(recipe: TrainConfig) -> str:
    """The name the validation slice is recorded under: ``holdout``, or ``val`` for any other folder."""
    return HOLDOUT_VAL if recipe.data.val == HOLDOUT_VAL else "val"


def refuse_reported_validation(recipe: TrainConfig, benchmarks: list[tuple[str, str]]) -> None:
    """A reported benchmark as ``data.val`` is refused: the checkpoint chosen on it would be reported on it."""
    if recipe.data.val in (HOLDOUT_VAL, "builtin"):
        return
    val = Path(recipe.data.val).expanduser().resolve()
    for name, path in benchmarks:
        root = Path(path).expanduser().resolve()
        if path != "builtin" and val in (root, root / "HR"):
            raise ConfigError(
                f"data.val {recipe.data.val}: is the reported benchmark {name}; choose checkpoints "
                f"on a held-out slice (data.val: {HOLDOUT_VAL})"
            )


def selection_scores(summary: dict, selection: str, recipe: TrainConfig | None = None) -> dict[str, dict]:
    """Per phase, the validation record of the model kept, by the phase's ``keep`` rule (default: the pixel phase's
    best Y-PSNR, the GAN phase's last)."""
    out = {}
    for phase in ("pixel", "gan"):
        config = None if recipe is None else getattr(recipe, f"{phase}_phase")
        rule = DEFAULT_KEEP[phase] if config is None else keep_rule(phase, config)
        history = [h for h in summary["val_history"] if h["phase"] == phase]
        index = chosen_validation(history, rule, None if config is None else config.psnr_floor)
        if index is not None:
            out[phase] = {"dataset": selection, **{k: v for k, v in history[index].items() if k != "phase"}}
    return out


def provenance(load_before: tuple[float, float, float], device: str) -> dict:
    return {
        "code_version": code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


@dataclass
class TrialRecord:
    """One finished trial, as committed: ``<model>_seed<k>.json``. ``scores[phase][dataset]`` is ``evaluate.py
    --json``'s record; ``selection`` names the held-out slice checkpoints were chosen on (reported as such, never
    as a benchmark). ``model``, ``group`` and ``source`` are the experiment's labels for it."""

    key: str
    recipe_hash: str
    identity: dict
    seed: int
    genotype: dict
    params: int
    macs_720p: float
    selection: str
    scores: dict[str, dict[str, dict]]
    val_history: list[dict] = field(default_factory=list)
    steps: int = 0
    wall_time_s: float | None = None
    provenance: dict = field(default_factory=dict)
    model: str = ""
    group: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)  # experiment-specific: a discriminator, a ladder rung, ...

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str = "record") -> TrialRecord:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"key", "identity", "seed", "genotype", "scores"} - set(data)
        if missing:
            raise TrialError(f"{where}: not a trial record (missing {', '.join(sorted(missing))})")
        return cls(**{k: v for k, v in data.items() if k in known})

    def psnr(self, dataset: str, phase: str = "pixel") -> float | None:
        return self.scores.get(phase, {}).get(dataset, {}).get("psnr_y")


def read_record(path: Path) -> TrialRecord:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrialError(f"{path}: cannot read ({e})") from None
    return TrialRecord.from_json(data, str(path))


def write_record(path: Path, record: TrialRecord) -> None:
    atomic_write_text(Path(path), json.dumps(record.to_json(), indent=2) + "\n")


def genotype_from_record(record: TrialRecord) -> GeneratorGenotype:
    return GeneratorGenotype.from_dict(record.genotype)


# --- an experiment's trials ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One trial of an experiment: its record's file stem (``<model>_seed<k>``), the labels the record carries
    (``model``, ``group``, ``source``) and experiment-specific ``extra`` data."""

    name: str
    trial: Trial
    labels: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def add_reuse_argument(parser) -> None:
    """``--reuse RESULTS`` (repeatable), as every experiment that trains trials takes it: ``run_trials``'s ``reuse``."""
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        type=Path,
        metavar="RESULTS",
        help="another experiment's records: a trial recorded there (same genotype, recipe, seed) is copied, not "
        "retrained",
    )


def parse_shard(spec: str) -> tuple[int, int]:
    index, _, count = spec.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ConfigError(f"--shard {spec!r}: expected I/N with 0 <= I < N")
    return int(index), int(count)


def find_record(folders: list[Path], key: str) -> tuple[Path, TrialRecord] | None:
    """A record of the trial ``key`` in other experiments' folders: the same training gives the same model."""
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")):
            try:
                record = read_record(path)
            except TrialError:
                continue  # experiment.json, reports, records older than trials
            if record.key == key:
                return path, record
    return None


def unscored(record: TrialRecord, evaluator) -> bool:
    """Whether ``record`` lacks a dataset ``evaluator`` scores, for any phase it holds."""
    wanted = set(getattr(evaluator, "sets", ()))
    return any(wanted - set(by_set) for by_set in record.scores.values())


def run_trials(
    planned: list[Planned], out: Path, work: Path, evaluator, shard: str = "0/1", reuse: list[Path] = ()
) -> list[TrialRecord]:
    """Every planned trial of this shard recorded in ``out`` (``<name>.json``, written as each lands): a recorded
    one is skipped (a record there for another trial is an error), one recorded in a ``reuse`` folder is copied (or,
    when that record lacks some of ``evaluator``'s datasets, its finished run folder beside it is scored; without
    the folder the trial trains), the rest are trained in ``work/<name>`` (resumed when cut). Returns this shard's
    records."""
    index, count = parse_shard(shard)
    done = []
    for p in planned[index::count]:
        path = Path(out) / f"{p.name}.json"
        key = p.trial.key()
        if path.is_file():
            record = read_record(path)
            if record.key != key:
                raise TrialError(f"{path}: recorded for another trial (key {record.key}, not {key}); use a new --out")
            log.info("%s: already recorded, skipped", p.name)
            done.append(record)
            continue
        found = find_record(list(reuse), key)
        source, folder = (found[0], found[0].with_suffix("")) if found else (None, None)
        if found and not unscored(found[1], evaluator):
            record = replace(found[1], **p.labels, extra=p.extra | {"reused_from": str(source)})
            log.info("%s: the same trial is recorded in %s, copied", p.name, source)
        elif found and (folder / run_files.RETRAIN.summary).is_file():
            # Recorded without the evaluator's sets (a race's fine-tune, scored on the validation slice alone): its
            # finished run folder beside the record is read back and scored here, nothing trained.
            log.info("%s: the same trial finished in %s, scored there", p.name, folder)
            record = p.trial.record(folder, Path(work) / "split", evaluator, p.labels)
            record.extra = p.extra | {"reused_from": str(folder)}
        else:
            record = p.trial.record(Path(work) / p.name, Path(work) / "split", evaluator, p.labels)
            record.extra = dict(p.extra)
        write_record(path, record)
        log.info("%s: recorded in %s", p.name, path)
        done.append(record)
    return done
