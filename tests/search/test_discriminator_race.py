"""Stage 2 by race: successive halving's rungs, budgets and PSNR floor with an injected scorer; a whole race on the
built-in images through `darts-sr search --method race`, continued without retraining; one-line errors."""

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TPSR_DIR, small_genotype
from darts_sr import run_files
from darts_sr.commands import search as search_command
from darts_sr.config import SearchConfig, load_config
from darts_sr.experiments import discriminator_compare
from darts_sr.nets.discriminator import DiscriminatorGenotype, load_discriminator_genotype
from darts_sr.nets.genotype import save_genotype
from darts_sr.search.race import RaceError, check_race_config, finetune, race_recipe, rank_key, successive_halving
from darts_sr.training.retrain import Retrainer
from darts_sr.training.trials import TrialError


def scripted(table: dict, calls: list):
    """A scorer that returns ``table[(name, rung)]`` (psnr, niqe) and records every call."""

    def score(name: str, rung: int, steps: int) -> dict:
        calls.append((name, rung, steps))
        psnr, niqe = table[(name, rung)]
        return {"psnr_y": psnr, "ssim_y": None, "lpips": None, "niqe": niqe}

    return score


def test_successive_halving_keeps_the_best_1_over_eta_and_drops_candidates_under_the_floor():
    names = [f"c{i}" for i in range(8)]
    # Rung 0: c1 and c5 have the best NIQE but lost fidelity (under the 25 dB floor); of the rest the three lowest
    # NIQE are c6, c3, c0. Rung 1: c6 stays best by NIQE but now falls under the floor, so c0 beats c3.
    niqe0 = {"c0": 5.0, "c1": 1.0, "c2": 7.0, "c3": 4.0, "c4": 6.0, "c5": 2.0, "c6": 3.0, "c7": 8.0}
    table = {(n, 0): (24.0 if n in ("c1", "c5") else 26.0, v) for n, v in niqe0.items()}
    table |= {("c6", 1): (24.9, 1.0), ("c3", 1): (26.0, 4.5), ("c0", 1): (25.0, 4.2)}
    calls, seen = [], []
    out = successive_halving(
        names,
        scripted(table, calls),
        eta=2,
        min_steps=10,
        floor=25.0,
        metric="niqe",
        on_score=lambda rungs: seen.append(len(rungs)),
    )
    assert calls == [(n, 0, 10) for n in names] + [("c6", 1, 20), ("c3", 1, 20), ("c0", 1, 20)]
    first, second = out["rungs"]
    assert set(first["dropped"]) == {"c1", "c5"} and "under the floor 25.00" in first["dropped"]["c1"]
    assert first["ranking"] == ["c6", "c3", "c0", "c4", "c2", "c7"] and first["kept"] == ["c6", "c3", "c0"]
    assert set(second["dropped"]) == {"c6"} and second["kept"] == ["c0"] and out["winner"] == "c0"
    assert [r["steps"] for r in out["rungs"]] == [10, 20] and len(seen) == 8 + 1 + 3 + 1  # after every score


def test_successive_halving_budgets_grow_by_eta_and_an_all_failing_rung_has_no_winner():
    names = [f"c{i}" for i in range(9)]
    table = {(n, r): (30.0, float(i) + r) for i, n in enumerate(names) for r in range(3)}
    calls = []
    out = successive_halving(names, scripted(table, calls), eta=3, min_steps=4, floor=0.0, metric="niqe")
    assert [(r["steps"], len(r["candidates"]), r["kept"]) for r in out["rungs"]] == [
        (4, 9, ["c0", "c1", "c2"]),
        (12, 3, ["c0"]),
    ]
    assert out["winner"] == "c0" and len(calls) == 12
    failed = successive_halving(names, scripted(table, []), eta=3, min_steps=4, floor=99.0, metric="niqe")
    assert failed["winner"] is None and failed["rungs"][0]["kept"] == [] and len(failed["rungs"]) == 1
    with pytest.raises(RaceError, match="race_eta"):
        successive_halving(names, scripted(table, []), eta=1, min_steps=4, floor=0.0, metric="niqe")


def test_successive_halving_growing_seeds_keeps_every_rung_at_the_full_length():
    names = [f"c{i}" for i in range(4)]
    table = {(n, r): (30.0, float(i) - r) for i, n in enumerate(names) for r in range(2)}
    calls = []
    out = successive_halving(names, scripted(table, calls), eta=2, min_steps=5, floor=0.0, metric="niqe", grow="seeds")
    assert calls == [(n, 0, 5) for n in names] + [("c0", 1, 5), ("c1", 1, 5)] and out["winner"] == "c0"


def test_rank_key_primary_metric_then_the_other_then_psnr():
    a = {"psnr_y": 25.0, "niqe": 5.0, "lpips": 0.20}
    b = {"psnr_y": 26.0, "niqe": 6.0, "lpips": 0.20}
    c = {"psnr_y": 27.0, "niqe": None, "lpips": 0.10}
    assert sorted(["a", "b", "c"], key=lambda n: rank_key({"a": a, "b": b, "c": c}[n], "lpips")) == ["c", "a", "b"]
    assert sorted(["a", "b", "c"], key=lambda n: rank_key({"a": a, "b": b, "c": c}[n], "niqe")) == ["a", "b", "c"]
    sharper, blurrier = {"psnr_y": 25.0, "niqe": 5.0, "lpips": None}, {"psnr_y": 24.0, "niqe": 5.0, "lpips": None}
    assert rank_key(sharper, "niqe") < rank_key(blurrier, "niqe")  # an exact tie goes to the higher Y-PSNR
    assert rank_key({"psnr_y": math.nan, "niqe": math.nan, "lpips": None}, "niqe") == (math.inf, math.inf, math.inf)


# --- a whole race ---------------------------------------------------------------------------------------------------

TINY_RACE = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 52},  # 208 px HR: NIQE has its two 96 px blocks
    "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005},
    "run": {"log_every": 1},
    "stage2": {
        "pretrain_steps": 3,
        "pretrain_lr": 1e-3,
        "blocks": 4,
        "base_widths": [4],
        "norms": ["batch"],
        "method": "race",
        "race_random": 3,
        "race_min_steps": 2,
        "race_eta": 2,
    },
}


@pytest.fixture
def race_inputs(tmp_path):
    config, generator = tmp_path / "race.yaml", tmp_path / "generator.json"
    config.write_text(yaml.safe_dump(TINY_RACE))
    save_genotype(small_genotype(), generator)
    return config, generator


def test_a_race_on_builtin_images_writes_the_winner_and_its_log_and_continues_without_retraining(
    tmp_path, race_inputs, monkeypatch, one_thread
):
    config, generator = race_inputs
    out = tmp_path / "race"
    argv = ["--stage", "discriminator", "--config", str(config), "--generator", str(generator), "--out", str(out)]
    assert search_command.main(argv) == 0
    race = json.loads((out / run_files.DISCRIMINATOR_RACE).read_text())
    assert list(race["candidates"]) == ["reference", "random_0", "random_1", "random_2"]
    assert race["metric"] == "niqe"  # no AlexNet weights in the tests
    assert race["psnr_floor"] == pytest.approx(race["pixel"]["scores"]["psnr_y"] - 1.0)
    first, second = race["rungs"]
    assert (first["steps"], second["steps"]) == (2, 4) and len(first["kept"]) == 2 and len(second["kept"]) == 1
    assert second["candidates"] == first["kept"] and race["winner"] == second["kept"][0]
    for rung in race["rungs"]:
        for name in rung["candidates"]:
            scores = rung["scores"][name]
            assert scores["psnr_y"] > 0 and scores["niqe"] > 0
            assert (out / "race" / f"rung{rung['rung']}" / name / run_files.MODEL_GAN).is_file()
    assert second["ranking"][0] == min(second["candidates"], key=lambda n: second["scores"][n]["niqe"])
    winner = load_discriminator_genotype(out / run_files.DISCRIMINATOR_GENOTYPE)
    assert winner.to_dict() == race["candidates"][race["winner"]]["genotype"]

    # Continued in its folder: every fine-tune is read back, nothing trains, the same winner.
    def no_training(self):
        raise AssertionError("a finished fine-tune was trained again")

    monkeypatch.setattr(Retrainer, "run", no_training)
    (out / run_files.DISCRIMINATOR_GENOTYPE).unlink()
    assert search_command.main(["--stage", "discriminator", "--out", str(out), "--resume"]) == 0
    assert load_discriminator_genotype(out / run_files.DISCRIMINATOR_GENOTYPE) == winner
    # A fine-tune folder holds one discriminator: another one there is refused, not mixed in.
    other = DiscriminatorGenotype(("conv_5x5",) * 4, base_width=4)
    with pytest.raises(TrialError, match=r"made for another trial \(differs in discriminator"):
        recipe = race_recipe(load_config(SearchConfig, config))
        finetune(
            small_genotype(),
            out / "race" / "pixel" / "model_pixel.pt",
            other,
            recipe,
            0,
            2,
            out / "race" / "rung0" / "reference",
            out / "race" / "split",
        )


def test_race_seeds_rank_the_mean_of_each_candidates_fine_tunes(tmp_path, race_inputs, one_thread):
    config, generator = race_inputs
    out = tmp_path / "race"
    argv = [
        "--stage",
        "discriminator",
        "--config",
        str(config),
        "--generator",
        str(generator),
        "--out",
        str(out),
        "--set",
        "stage2.race_seeds=2",
        "--set",
        "stage2.race_random=1",
    ]
    assert search_command.main(argv) == 0
    race = json.loads((out / run_files.DISCRIMINATOR_RACE).read_text())
    assert race["seeds_per_rung"] == 2
    (rung,) = race["rungs"]  # two candidates: one rung keeps one
    for name in rung["candidates"]:
        scores, per_seed = rung["scores"][name], rung["scores"][name]["per_seed"]
        assert len(per_seed) == 2 and per_seed[0]["niqe"] != per_seed[1]["niqe"]  # two fine-tunes, two seeds
        for metric in ("psnr_y", "niqe"):
            assert scores[metric] == pytest.approx((per_seed[0][metric] + per_seed[1][metric]) / 2)
        for folder in (name, f"{name}_seed1"):
            assert (out / "race" / "rung0" / folder / run_files.MODEL_GAN).is_file()
    assert rung["ranking"][0] == min(rung["candidates"], key=lambda n: rung["scores"][n]["niqe"])


def test_a_race_growing_seeds_ranks_each_survivor_by_all_its_full_length_fine_tunes(tmp_path, race_inputs, one_thread):
    config, generator = race_inputs
    out = tmp_path / "race"
    argv = ["--stage", "discriminator", "--config", str(config), "--generator", str(generator), "--out", str(out)]
    assert search_command.main([*argv, "--set", "stage2.race_grow=seeds"]) == 0
    race = json.loads((out / run_files.DISCRIMINATOR_RACE).read_text())
    first, second = race["rungs"]  # four candidates, eta 2: four fine-tunes, then two, one kept
    assert race["grow"] == "seeds" and (first["steps"], second["steps"]) == (2, 2)
    for name in second["candidates"]:
        assert "per_seed" not in first["scores"][name]  # one fine-tune in the first rung
        earlier, later = second["scores"][name]["per_seed"]
        assert earlier == first["scores"][name] and later["niqe"] != earlier["niqe"]
        assert second["scores"][name]["niqe"] == pytest.approx((earlier["niqe"] + later["niqe"]) / 2)
        assert (out / "race" / "rung1" / f"{name}_seed1" / run_files.MODEL_GAN).is_file()  # a new seed, full length
    assert race["winner"] == min(second["candidates"], key=lambda n: second["scores"][n]["niqe"])


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--stage", "generator", "--method", "race"], "--method are for --stage discriminator"),
        (["--set", "stage2.race_candidates=[missing_d.json]"], "missing_d.json: cannot read genotype"),
        (["--set", "stage2.race_eta=1"], "stage2.race_eta: must be at least 2"),
        (["--set", "stage2.race_seeds=0"], "stage2.race_seeds: must be at least 1"),
        (["--set", "data.val=../shared/datasets/Set14"], "is the reported benchmark Set14"),
        (["--set", "stage2.race_random=0"], "a race needs at least 2"),
    ],
)
def test_bad_race_input_is_a_one_line_error(tmp_path, race_inputs, capsys, extra, fragment):
    config, generator = race_inputs
    stage = [] if "--stage" in extra else ["--stage", "discriminator", "--generator", str(generator)]
    argv = [*stage, "--config", str(config), "--out", str(tmp_path / "race"), *extra]
    assert search_command.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "race").exists()  # refused before any run folder


def test_a_race_on_a_fine_tune_recipe_scores_each_candidate_by_the_model_its_keep_rule_kept(
    tmp_path, race_inputs, monkeypatch, one_thread
):
    config, generator = race_inputs
    recipe = tmp_path / "finetune.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "data": {"patch_size": 8, "batch_size": 2, "val_crop": 52},
                "pixel_phase": {"steps": 3, "lr": 1e-3},
                "gan_phase": {"steps": 3, "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005}, "ema": 0.5},
                "discriminator": {"base_width": 8},
                "val_every": 1,
            }
        )
    )
    out = tmp_path / "race"
    argv = [
        *("--stage", "discriminator", "--config", str(config), "--generator", str(generator), "--out", str(out)),
        *("--set", f"stage2.race_recipe={recipe}", "--set", "stage2.race_random=1", "--set", "stage2.race_grow=seeds"),
        *("--set", "stage2.race_min_steps=3"),
        *("--set", "stage2.race_recipe_set=[gan_phase.keep=lowest_niqe, gan_phase.psnr_floor=0.0]"),
    ]
    assert search_command.main(argv) == 0
    race = json.loads((out / run_files.DISCRIMINATOR_RACE).read_text())
    assert {c["genotype"]["base_width"] for c in race["candidates"].values()} == {8}  # the recipe's width
    (rung,) = race["rungs"]
    for name in rung["candidates"]:
        summary = json.loads((out / "race" / "rung0" / name / run_files.RETRAIN.summary).read_text())
        history = [h for h in summary["val_history"] if h["phase"] == "gan"]
        assert [h["step"] for h in history] == [1, 2, 3]  # the recipe's val_every
        kept = min(history, key=lambda h: h["niqe"])
        assert rung["scores"][name] == {k: kept.get(k) for k in rung["scores"][name]}
        record = json.loads((out / "race" / "rung0" / f"{name}.json").read_text())
        assert record["identity"]["recipe"]["gan_phase"]["ema"] == 0.5

    # The comparison on the same recipe from the race's start weights: the race's fine-tunes are its seed-0 trials,
    # scored in the race's folders (--reuse), on the reported sets too, not trained again.
    def no_training(self):
        raise AssertionError("a fine-tune the race finished was trained again")

    monkeypatch.setattr(Retrainer, "run", no_training)
    results = tmp_path / "compare"
    compare_argv = [
        *("--config", str(recipe), "--generator", str(generator)),
        *("--init", str(out / "race" / "pixel" / "model_pixel.pt")),
        *("--set", "gan_phase.keep=lowest_niqe", "--set", "gan_phase.psnr_floor=0.0", "--search-runs", str(out)),
        *("--random", "1", "--train-seeds", "1", "--benchmark", f"Set5={TPSR_DIR / 'Set5'}"),
        *("--out", str(results), "--work", str(tmp_path / "work"), "--reuse", str(out / "race" / "rung0")),
    ]
    assert discriminator_compare.main(compare_argv) == 0
    finetunes = [json.loads(f.read_text()) for f in results.glob("*_seed0.json") if not f.name.startswith("pixel")]
    race_folders = {str(out / "race" / "rung0" / name) for name in rung["candidates"]}
    assert {r["extra"]["reused_from"] for r in finetunes} == race_folders
    for r in finetunes:
        race_record = json.loads(Path(f"{r['extra']['reused_from']}.json").read_text())
        assert r["key"] == race_record["key"] and set(race_record["scores"]["gan"]) == {"val"}
        assert set(r["scores"]["gan"]) == {"val", "Set5"} and r["scores"]["gan"]["Set5"]["niqe"] > 0


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "stage2.race_recipe_set=[gan_phase.ema=0.9]"], "race_recipe_set: overrides of a race_recipe"),
        (
            ["--set", "stage2.race_recipe=gan_finetune_cpu", "--set", "stage2.race_grow=seeds"]
            + ["--set", "stage2.generator_weights=pixel.pt"],
            "stage2.race_min_steps 2: with race_grow seeds every rung is the whole fine-tune; set it to "
            "gan_finetune_cpu's gan_phase.steps (1000)",
        ),
        (["--set", "stage2.race_recipe=gan_finetune_cpu"], "gan_finetune_cpu: pixel_phase.steps: the race needs"),
        (["--set", "stage2.race_recipe=missing.yaml"], "missing.yaml: no such config file or preset"),
    ],
)
def test_bad_race_recipe_is_a_one_line_error(tmp_path, race_inputs, capsys, extra, fragment):
    config, generator = race_inputs
    argv = ["--stage", "discriminator", "--generator", str(generator), "--config", str(config)]
    assert search_command.main([*argv, "--out", str(tmp_path / "race"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "race").exists()


def test_the_race_finetune_preset_races_on_gan_finetune_cpus_500_step_recipe():
    config = load_config(SearchConfig, REPO / "configs" / "race_finetune_cpu.yaml")
    recipe = race_recipe(config)
    assert recipe.gan_phase.steps == config.stage2.race_min_steps == 500 and recipe.gan_phase.ema == 0.99
    assert recipe.gan_phase.keep == "lowest_niqe" and recipe.discriminator.base_width is None
    assert recipe.data.patch_size == 32 and recipe.data.val == "holdout"
    assert [c.name for c in check_race_config(config, "discriminator")] == [
        "reference",
        *(f"random_{i}" for i in range(5)),
    ]
