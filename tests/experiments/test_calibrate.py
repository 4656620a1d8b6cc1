"""The yardstick's calibration on tiny sizes: ladders as trials, records that skip on rerun, and a report that orders
them (Kendall tau against MACs, width gaps in noise floors) from the records alone."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from conftest import write_tiny_train_yaml
from darts_sr.data import HOLDOUT
from darts_sr.experiments import calibrate, stats
from darts_sr.nets.genotype import GeneratorGenotype, Node, save_genotype
from darts_sr.nets.networks import generator_macs


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    pool = tmp_path / "data" / "BSD200"
    pool.mkdir(parents=True)
    for name in [*HOLDOUT[:20], *(f"t{i}.png" for i in range(4))]:
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(pool / name)
    ladders = tmp_path / "ladders"
    chain = [GeneratorGenotype(tuple(Node("conv_3x3", k) for k in range(n)), (n,), 4, 4) for n in (1, 2, 3)]
    for g in chain:
        save_genotype(g, ladders / "cost" / f"g{generator_macs(g) / 1e9:.2f}.json")
    for c in (2, 4):
        save_genotype(GeneratorGenotype(chain[0].nodes, (1,), c, 4), ladders / "width" / f"c{c:02d}.json")
    recipe = write_tiny_train_yaml(
        tmp_path / "tiny.yaml",
        data={"train": [f"BSD200={pool}"], "val": "holdout", "val_crop": 0},
        pixel_phase={"steps": 2},
        gan_phase={"steps": 0},
    )
    return tmp_path, ladders, recipe, pool


def test_ladders_train_as_trials_and_the_report_reads_the_records(setup, caplog, one_thread):
    tmp_path, ladders, recipe, pool = setup
    out = tmp_path / "results" / "tiny"
    argv = [
        "--config",
        str(recipe),
        "--ladder",
        "cost",
        "--ladder",
        "width",
        "--seeds",
        "2",
        "--ladders",
        str(ladders),
        "--out",
        str(out),
        "--work",
        str(tmp_path / "runs"),
        "--benchmark",
        f"B={pool}",
    ]
    assert calibrate.main(argv) == 0
    names = sorted(p.name for p in out.glob("*_seed*.json"))
    assert len(names) == 10 and "width_c04_seed1.json" in names
    record = json.loads((out / "width_c04_seed1.json").read_text())
    assert record["extra"] == {"ladder": "width", "rung": "c04"} and record["selection"] == "holdout"
    assert set(record["scores"]["pixel"]) == {"holdout", "B"} and record["seed"] == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="darts_sr.training.trials"):
        assert calibrate.main(argv) == 0
    assert sum("already recorded" in m for m in caplog.messages) == 10
    summary = calibrate.recipe_summary(out)
    assert set(summary["cost"]) == {p.stem for p in (ladders / "cost").glob("*.json")}
    assert -1 <= summary["cost_tau"] <= 1 and summary["noise_floor"] is not None
    assert len(summary["width_gaps"]) == 1 and "minutes_per_tpsr" not in summary  # no TPSR-sized model here
    text = calibrate.report([out], figure=tmp_path / "calibration.png")
    assert "| tiny |" in text and (tmp_path / "calibration.png").stat().st_size > 0
    assert (tmp_path / "results" / calibrate.REPORT).is_file()


def test_a_recipe_not_validated_on_the_holdout_is_refused(setup, capsys):
    tmp_path, ladders, recipe, _ = setup
    argv = [
        "--config",
        str(recipe),
        "--set",
        "data.val=builtin",
        "--ladder",
        "cost",
        "--ladders",
        str(ladders),
        "--out",
        str(tmp_path / "out"),
    ]
    assert calibrate.main(argv) == 2
    assert "data.val must be holdout" in capsys.readouterr().err


def test_the_committed_ladders_are_the_ones_the_code_makes():
    made = calibrate.ladder_genotypes()
    for ladder, rungs in made.items():
        files = {p.stem for p in (calibrate.LADDERS).joinpath(ladder).glob("*.json")}
        assert files == set(rungs), ladder
    widths = [g.channels for g in made["width"].values()]
    assert widths == list(calibrate.WIDTHS)
    for rung, genotype in made["cost"].items():
        assert abs(generator_macs(genotype) / (float(rung[1:]) * 1e9) - 1) <= 0.03, rung


def test_the_summary_numbers_from_hand_made_records(tmp_path):
    """Known scores in, known tau, gaps and noise floor out."""
    from darts_sr.training.trials import TrialRecord, write_record

    out = tmp_path / "r"
    calibrate.write_json(
        out / "experiment.json",
        {
            "recipe_hash": "x",
            "recipe": {
                "data": {"patch_size": 48, "batch_size": 4, "train": {"P": "h"}},
                "pixel_phase": {"steps": 10, "lr": 1e-3, "warmup_steps": 0, "ema": None},
            },
        },
    )
    scores = {
        ("cost", "g0.50"): [27.0],
        ("cost", "g1.00"): [27.2],
        ("cost", "g2.00"): [27.1],
        ("width", "c08"): [27.0, 27.2],
        ("width", "c16"): [27.5, 27.7],
        ("width", "c32"): [28.0, 28.2],
        ("matched", "random_0"): [27.0, 27.2],
        ("matched", "random_1"): [27.4, 27.6],
    }
    for (ladder, rung), values in scores.items():
        for seed, value in enumerate(values):
            write_record(
                out / f"{ladder}_{rung}_seed{seed}.json",
                TrialRecord(
                    key=f"{ladder}{rung}{seed}",
                    recipe_hash="x",
                    identity={},
                    seed=seed,
                    genotype={},
                    params=0,
                    macs_720p=1e9,
                    selection="holdout",
                    scores={"pixel": {"holdout": {"psnr_y": value}}},
                    wall_time_s=60,
                    extra={"ladder": ladder, "rung": rung},
                ),
            )
    s = calibrate.recipe_summary(out)
    assert s["cost_tau"] == pytest.approx(1 / 3)  # one discordant pair of three
    assert s["noise_floor"] == pytest.approx(np.sqrt(0.02))  # sd 0.1414 of each width rung
    assert s["width_gaps"] == pytest.approx([0.5, 0.5]) and s["width_ordered"]
    assert s["width_min_gap_floors"] == pytest.approx(0.5 / np.sqrt(0.02))
    # matched: means 27.1 and 27.5 (sd 0.2828), floor 0.1414 over 2 seeds: (0.08 - 0.02 / 2) / 0.08 of the spread
    assert s["matched_spread"] == pytest.approx(0.4 / np.sqrt(2))
    assert s["matched_noise_floor"] == pytest.approx(np.sqrt(0.02))
    assert s["matched_reliability"] == pytest.approx((0.08 - 0.01) / 0.08)
    # genotype variance 0.07 against seed variance 0.02: reliability sin(0.35π) = 0.891 needs k with
    # 0.07 / (0.07 + 0.02 / k) >= 0.891, k >= 2.33, so 3 seeds
    assert s["matched_seeds_for_tau"] == 3


def test_tau_ceiling_is_kendalls_tau_of_the_attenuated_correlation():
    assert stats.tau_ceiling(1.0, 1.0) == pytest.approx(1.0)
    assert stats.tau_ceiling(0.0, 0.9) == pytest.approx(0.0)
    # reliabilities 0.5 and 0.5: correlation at most 0.5, tau = (2/pi) asin(0.5) = 1/3
    assert stats.tau_ceiling(0.5, 0.5) == pytest.approx(1 / 3)
    assert stats.tau_ceiling(None, 0.9) is None
    # the reliability the report asks of both recipes gives exactly the target tau
    r = calibrate.TAU_RELIABILITY
    assert stats.tau_ceiling(r, r) == pytest.approx(calibrate.TAU_TARGET)
