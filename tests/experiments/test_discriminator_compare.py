"""The discriminator evidence: one generator fine-tuned against a given, the reference and a random discriminator
with two seeds on a tiny recipe; records that skip on rerun and rebuild the report alone; one-line errors."""

import json
import logging
import shutil

import pytest

from conftest import TPSR_DIR, small_genotype, write_tiny_train_yaml
from darts_sr.experiments import discriminator_compare, records
from darts_sr.nets.discriminator import DiscriminatorGenotype
from darts_sr.nets.genotype import save_genotype
from darts_sr.training.retrain import Retrainer

GIVEN = DiscriminatorGenotype(("sep_3x3", "conv_3x3", "dil_3x3", "conv_5x5"), base_width=8, norm="batch")


@pytest.fixture
def inputs(tmp_path):
    recipe = write_tiny_train_yaml(
        tmp_path / "tiny.yaml", pixel_phase={"steps": 2}, gan_phase={"steps": 2}, data={"val_crop": 52}
    )
    generator, given = tmp_path / "generator.json", tmp_path / "given_d.json"
    save_genotype(small_genotype(), generator)
    save_genotype(GIVEN, given)
    return recipe, generator, given


def test_records_per_discriminator_and_seed_skip_on_rerun_and_rebuild_the_report(
    tmp_path, inputs, monkeypatch, caplog, one_thread
):
    recipe, generator, given = inputs
    out, work = tmp_path / "results" / "d", tmp_path / "runs"
    argv = [
        "--config",
        str(recipe),
        "--generator",
        str(generator),
        "--discriminator",
        str(given),
        "--random",
        "1",
        "--train-seeds",
        "2",
        "--benchmark",
        f"Set5={TPSR_DIR / 'Set5'}",
        "--out",
        str(out),
        "--work",
        str(work),
    ]
    assert discriminator_compare.main(argv) == 0
    names = sorted(p.name for p in out.glob("*_seed*.json"))
    assert names == [f"{m}_seed{k}.json" for m in ("pixel", "random_0", "reference", "searched_0") for k in (0, 1)]
    record = json.loads((out / "searched_0_seed1.json").read_text())
    # The recipe's discriminator.base_width (4) is what trained, and what the record holds.
    assert record["extra"]["discriminator"] == {**GIVEN.to_dict(), "base_width": 4} and record["group"] == "searched"
    assert record["identity"]["discriminator"] == record["extra"]["discriminator"] and record["identity"]["init_sha256"]
    assert record["seed"] == 1 and set(record["scores"]) == {"gan"} and set(record["scores"]["gan"]) == {"val", "Set5"}
    assert record["scores"]["gan"]["Set5"]["psnr_y"] > 0 and record["scores"]["gan"]["Set5"]["niqe"] > 0
    assert record["recipe_hash"] == json.loads((out / records.EXPERIMENT).read_text())["recipe_hash"]
    pixel = json.loads((out / "pixel_seed1.json").read_text())
    assert set(pixel["scores"]["pixel"]) == {"val", "Set5"} and pixel["steps"] == 2
    # Both seeds' fine-tunes started from their own seed's pixel model.
    for k in (0, 1):
        summary = json.loads((work / f"reference_seed{k}" / "summary.json").read_text())
        assert summary["generator_weights"] == str(work / f"pixel_seed{k}" / "model_pixel.pt")
    report = (out / records.REPORT).read_text()
    assert "| reference | reference |" in report and " ± " in report and "## Set5" in report
    assert "better on" in report or "worse or equal on" in report  # the paired verdict per metric
    diffs = json.loads((out / records.SUMMARY).read_text())["differences"]
    assert {(d["dataset"], d["metric"]) for d in diffs} == {(d, m) for d in ("val", "Set5") for m in ("psnr_y", "niqe")}
    assert all(
        set(d["versus"]) == {"reference", "random mean"} and d["versus"]["reference"]["seeds"] == [0, 1] for d in diffs
    )

    # A second run trains nothing: every model is recorded.
    def no_training(self):
        raise AssertionError("a recorded model was trained again")

    monkeypatch.setattr(Retrainer, "run", no_training)
    with caplog.at_level(logging.INFO, logger="discriminator_compare"):
        assert discriminator_compare.main(argv) == 0
    assert sum("every model already recorded" in m for m in caplog.messages) == 2

    # Published weights are scored beside the fine-tunes on the same sets (nothing trained), shown in the tables and
    # the front, and left out of the seed spread and the comparisons.
    published = ["--published", f"mine={work / 'pixel_seed1' / 'model_pixel.pt'}"]
    assert discriminator_compare.main([*argv, *published]) == 0
    record = json.loads((out / "mine_seed0.json").read_text())
    assert (record["model"], record["group"]) == ("mine", "published")
    assert set(record["scores"]["gan"]) == {"val", "Set5"}
    assert record["scores"]["gan"]["Set5"] == pixel["scores"]["pixel"]["Set5"]  # the same weights, the same scores
    report = (out / records.REPORT).read_text()
    assert "| mine | published |" in report and (out / discriminator_compare.FRONT_PLOT).stat().st_size > 10_000
    assert json.loads((out / records.SUMMARY).read_text())["differences"] == diffs

    # The report needs the records alone.
    shutil.rmtree(work)
    (out / records.REPORT).unlink()
    assert discriminator_compare.main(["--report", str(out)]) == 0
    assert (out / records.REPORT).read_text() == report


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--discriminator", "nowhere_d.json"], "nowhere_d.json: cannot read genotype"),
        (["--pixel-weights", "nowhere_pixel.pt"], "nowhere_pixel.pt: no such checkpoint file"),
        (["--set", "gan_phase.steps=0"], "gan_phase.steps and gan_phase.loss.adversarial must be > 0"),
        (["--set", "data.val=../shared/datasets/Set14"], "is the reported benchmark Set14"),
        (["--shard", "2/2"], "--shard '2/2'"),
        (["--published", "reference=x.pt"], "--published 'reference=x.pt': the label 'reference' is taken"),
        (["--published", "TPSR_D2"], "--published 'TPSR_D2': expected LABEL=WEIGHTS"),
        (["--published", "a=nowhere.pt"], "nowhere.pt: no such checkpoint file"),
    ],
)
def test_bad_evidence_input_is_a_one_line_error(tmp_path, inputs, capsys, extra, fragment):
    recipe, generator, _ = inputs
    argv = [
        "--config",
        str(recipe),
        "--generator",
        str(generator),
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "runs"),
        *extra,
    ]
    assert discriminator_compare.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_a_built_in_discriminator_is_compared_like_a_searched_one():
    """esrgan_body (its own group) gets paired gaps against the reference and the random mean; those two do not."""
    values = lambda *v: {("holdout", "niqe"): dict(enumerate(v))}  # noqa: E731
    models = {
        "pixel": {"group": "pixel", "values": values(7.0, 7.0)},
        "esrgan_body": {"group": "esrgan_body", "values": values(5.0, 5.2)},
        "reference": {"group": "reference", "values": values(5.5, 5.5)},
        "random_0": {"group": "random", "values": values(6.0, 6.2)},
    }
    rows = discriminator_compare.differences(models, "holdout", "niqe")
    assert [r["model"] for r in rows] == ["esrgan_body"]
    assert rows[0]["versus"]["reference"]["gaps"] == pytest.approx([-0.5, -0.3])
    assert rows[0]["versus"]["random mean"]["better_seeds"] == 2


RANDOM_NIQE = (5.2, 5.4, 5.6, 5.8)


def test_a_pick_beats_random_discriminators_only_when_the_whole_interval_is_on_the_better_side():
    """The interval's spread is how much the random discriminators differ among themselves: a pick better than all
    four by more than that spread is better beyond the noise; one inside their range is not; published and pixel
    models are never compared."""
    values = lambda *v: {("holdout", "niqe"): dict(enumerate(v))}  # noqa: E731
    models = {
        "pixel": {"group": "pixel", "values": values(7.0, 7.0)},
        "TPSR_D2": {"group": "published", "values": values(1.0)},
        "searched_0": {"group": "searched", "values": values(4.0, 4.1)},
        "searched_1": {"group": "searched", "values": values(5.4, 5.5)},
        "reference": {"group": "reference", "values": values(5.5, 5.6)},
        **{f"random_{i}": {"group": "random", "values": values(v, v + 0.1)} for i, v in enumerate(RANDOM_NIQE)},
    }
    rows = {r["model"]: r for r in discriminator_compare.versus_random(models, "holdout", "niqe")}
    assert set(rows) == {"searched_0", "searched_1"}
    clear, inside = rows["searched_0"], rows["searched_1"]
    assert clear["gap"] == pytest.approx(4.05 - 5.55) and clear["high"] < 0 and clear["beats_random"] == 4
    assert clear["better_beyond_noise"] and not clear["worse_beyond_noise"]
    assert inside["low"] < 0 < inside["high"] and inside["beats_random"] == 2
    assert not inside["better_beyond_noise"] and not inside["worse_beyond_noise"]
    # Y-PSNR is higher-better: the same numbers read as PSNR make the pick worse beyond the noise.
    as_psnr = {n: {**m, "values": {("holdout", "psnr_y"): m["values"][("holdout", "niqe")]}} for n, m in models.items()}
    assert discriminator_compare.versus_random(as_psnr, "holdout", "psnr_y")[0]["worse_beyond_noise"]


def test_the_fronts_labels_join_names_at_one_spot():
    spots = discriminator_compare._nearby_labels({"a": (7.0, 28.1), "b": (7.001, 28.1005), "c": (5.0, 27.0)})
    assert sorted(spots.values()) == [["a", "b"], ["c"]]
