"""Trials: one identity for "the same training", checked before any run folder is resumed or record reused; the
committed rank_check records converted without changing a number; shards of one experiment started at once."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, small_genotype, write_tiny_train_yaml
from darts_sr.config import TrainConfig, load_config
from darts_sr.data import HOLDOUT, NEAR_DUPLICATES, data_identity, training_exclusions
from darts_sr.experiments.rank_check import convert_legacy_record
from darts_sr.nets.discriminator import SRGAN_DISCRIMINATOR
from darts_sr.nets.genotype import TPSR
from darts_sr.training import trials
from darts_sr.training.trials import Trial, TrialError, read_record

SMALL = small_genotype()


def _images(folder: Path, names: list[str], side: int = 48) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / name)


def test_the_same_training_has_one_identity_wherever_it_runs(tmp_path, shared):
    # A recipe with a GAN phase, so the discriminator belongs to the identity.
    recipe = load_config(TrainConfig, "configs/compare_cpu_short.yaml")
    moved = tmp_path / "elsewhere" / "BSD200"
    moved.parent.mkdir()
    moved.symlink_to((shared / "datasets" / "BSD200" / "HR").resolve())
    elsewhere = replace(
        recipe,
        data=replace(recipe.data, train=(recipe.data.train[0], str(moved))),
        run=replace(recipe.run, device="cuda", log_every=7, samples=0),
    )
    assert Trial(TPSR, recipe, 0).key() == Trial(TPSR, elsewhere, 0).key()  # data elsewhere, another device
    assert Trial(TPSR, replace(recipe, run=replace(recipe.run, seed=5)), 0).key() == Trial(TPSR, recipe, 0).key()
    keys = {
        Trial(TPSR, recipe, 0).key(),
        Trial(TPSR, recipe, 1).key(),  # the seed
        Trial(SMALL, recipe, 0).key(),  # the genotype
        Trial(TPSR, replace(recipe, val_every=999), 0).key(),  # anything that changes what is trained
        Trial(TPSR, recipe, 0, discriminator=replace(SRGAN_DISCRIMINATOR, norm="spectral")).key(),
    }
    assert len(keys) == 5
    assert Trial(TPSR, recipe, 0).recipe_hash() == Trial(SMALL, recipe, 3).recipe_hash()


def test_start_weights_belong_to_the_identity(tmp_path):
    recipe = load_config(TrainConfig, write_tiny_train_yaml(tmp_path / "tiny.yaml"))
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    ids = [Trial(SMALL, recipe, 0, init=w).identity() for w in (a, b)]
    assert ids[0]["init_sha256"] != ids[1]["init_sha256"] and ids[0]["recipe"]["pixel_phase"]["steps"] == 0


def test_the_training_pool_leaves_out_the_holdout_and_duplicates(tmp_path):
    names = ["1.png", "2.png", HOLDOUT[0], f"{next(iter(NEAR_DUPLICATES))}.png"]
    _images(tmp_path / "pool", names)
    spec = (f"P={tmp_path / 'pool'}",)
    assert data_identity(spec) == data_identity((f"P={tmp_path / 'pool'}",), training_exclusions())
    _images(tmp_path / "clean", ["1.png", "2.png"])
    assert data_identity(spec)["P"] == data_identity((f"P={tmp_path / 'clean'}",))["P"]
    assert data_identity(spec, excluded={})["P"] != data_identity(spec)["P"]


def test_a_run_folder_of_another_trial_is_refused(tmp_path, one_thread):
    recipe = load_config(TrainConfig, write_tiny_train_yaml(tmp_path / "tiny.yaml", gan_phase={"steps": 0}))
    run_dir = tmp_path / "run"
    summary = Trial(SMALL, recipe, 0).run(run_dir, tmp_path / "split")
    assert summary["steps"] == 4 and json.loads((run_dir / trials.TRIAL_FILE).read_text())["seed"] == 0
    longer = replace(recipe, pixel_phase=replace(recipe.pixel_phase, steps=5))
    with pytest.raises(TrialError, match=r"made for another trial \(differs in recipe.pixel_phase.steps\)"):
        Trial(SMALL, longer, 0).run(run_dir, tmp_path / "split")
    with pytest.raises(TrialError, match="differs in seed"):
        Trial(SMALL, recipe, 1).run(run_dir, tmp_path / "split")
    (run_dir / trials.TRIAL_FILE).unlink()
    with pytest.raises(TrialError, match="without trial.json"):
        Trial(SMALL, recipe, 0).run(run_dir, tmp_path / "split")


LEGACY = {  # results/rank_check/09ff4b2fd3d12f84.json as committed before trials (its recipe abbreviated to the keys
    # that differ from configs/compare_cpu_short.yaml's pixel phase: the split folders and the whole run section)
    "macs_720p": 3621888000,
    "seed": 0,
    "val_psnr": 27.377556918526096,
    "benchmark_psnr": {"Set5": 29.139815228710397, "Set14": 26.591519592089565},
    "steps": 3000,
    "wall_time_s": 413.3,
}


def test_converted_rank_check_records_keep_their_numbers(shared):
    recipe = load_config(TrainConfig, "configs/compare_cpu_short.yaml", ["gan_phase.steps=0"])
    records = [read_record(p) for p in sorted((REPO / "results" / "rank_check").glob("*.json"))]
    converted = [r for r in records if "converted_from" in r.extra]  # later records there are trials of their own
    assert len(converted) == 21
    mine = next(
        r
        for r in converted
        if r.macs_720p == LEGACY["macs_720p"] and r.steps == 3000 and r.psnr("holdout") == LEGACY["val_psnr"]
    )
    old = dict(
        LEGACY,
        genotype=mine.genotype,
        recipe={
            **json.loads(json.dumps(mine.identity["recipe"])) | {"run": {"seed": 0, "device": "cpu", "log_every": 50}},
            "data": {
                **mine.identity["recipe"]["data"],
                "train": ["runs/rank_check_split/T91", "runs/rank_check_split/BSD200"],
                "val": "runs/rank_check_split/val",
            },
            "discriminator": {"genotype": "reference", **mine.identity["recipe"]["discriminator"]},
        },
    )
    again = convert_legacy_record(old, recipe.data.train)
    assert again.key == mine.key and again.to_json() == mine.to_json()
    assert mine.psnr("holdout") == LEGACY["val_psnr"] and mine.psnr("Set5") == LEGACY["benchmark_psnr"]["Set5"]
    # Trained on the pool that still held Set5's duplicate: no trial of today's clean pool matches it.
    assert mine.key != Trial(TPSR.__class__.from_dict(mine.genotype), recipe, 0).key()


def test_two_shards_of_one_experiment_start_at_once(tmp_path):
    """README's workflow: both shards started together in a fresh work folder prepare the same split."""
    _images(tmp_path / "data" / "BSD200", [*HOLDOUT, *(f"t{i}.png" for i in range(4))])
    recipe = write_tiny_train_yaml(
        tmp_path / "tiny.yaml",
        data={"train": [f"BSD200={tmp_path / 'data' / 'BSD200'}"], "val": "holdout", "val_crop": 0},
        pixel_phase={"steps": 1},
        gan_phase={"steps": 0},
    )
    common = [
        "-m",
        "darts_sr.experiments.compare",
        "--random",
        "3",
        "--config",
        str(recipe),
        "--benchmark",
        f"B={tmp_path / 'data' / 'BSD200'}",
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
    ]
    shards = [
        subprocess.Popen(
            [sys.executable, *common, "--shard", f"{i}/2"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outputs
    records = sorted(p.name for p in (tmp_path / "out").glob("*_seed0.json"))
    assert records == ["random_0_seed0.json", "random_1_seed0.json", "random_2_seed0.json", "tpsr_seed0.json"]
    assert len(list((tmp_path / "work" / "split" / "val").iterdir())) == len(HOLDOUT)


def test_keys_added_later_leave_old_records_matching():
    """A committed calibration record, made before ``loss.feature_matching`` existed, is still its trial's record."""
    record = read_record(REPO / "results" / "calibration" / "short" / "cost_g0.50_seed0.json")
    recipe = load_config(TrainConfig, "configs/compare_cpu_short.yaml", ["gan_phase.steps=0", "data.skip_small=true"])
    trial = Trial(TPSR.__class__.from_dict(record.genotype), recipe, record.seed)
    assert "feature_matching" not in trial.identity()["recipe"]["pixel_phase"]["loss"]
    assert trial.key() == record.key
    weighted = replace(
        recipe, pixel_phase=replace(recipe.pixel_phase, loss=replace(recipe.pixel_phase.loss, feature_matching=0.1))
    )
    assert Trial(trial.genotype, weighted, record.seed).key() != record.key
