"""rank_check's building blocks: the holdout split never overlaps training; search_report and the search's shape
diagnostics. (Its records are trial records: tests/test_trials.py.)"""

from pathlib import Path

import numpy as np
from PIL import Image

from darts_sr.data import holdout_split
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node
from darts_sr.search.generator_stage import search_diagnostics


def _images(folder, names):
    folder.mkdir(parents=True)
    for name in names:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)


def test_holdout_split_never_overlaps_training(tmp_path):
    _images(tmp_path / "A", ["a1.png", "a2.png"])
    _images(tmp_path / "B", ["b1.png", "b2.png", "b3.png"])
    train, val = holdout_split((f"A={tmp_path / 'A'}", str(tmp_path / "B")), ("b2.png", "a1.png"), tmp_path / "split")
    train_names = {p.name for d in train for p in Path(d).iterdir()}
    val_names = {p.name for p in Path(val).iterdir()}
    assert val_names == {"b2.png", "a1.png"} and train_names == {"a2.png", "b1.png", "b3.png"}
    assert all(p.is_symlink() for d in [*train, val] for p in Path(d).iterdir())  # no copies


def test_search_diagnostics_measure_depth_and_stem_readers():
    assert search_diagnostics(TPSR) == {"depth": 6, "nodes_on_stem": 2, "nodes": 10}
    wide = GeneratorGenotype(tuple(Node("conv_3x3", 0) for _ in range(4)), (1, 2, 3, 4))
    assert search_diagnostics(wide) == {"depth": 1, "nodes_on_stem": 4, "nodes": 4}


def test_standalone_seeds_are_averaged_reused_and_bound_the_tau(tmp_path, one_thread, capsys):
    """A tiny search, three sampled genotypes trained with two seeds each: tau is computed on the seed means, the
    result states their reliability and the tau it allows, and a second check copies the first one's trials."""
    import json

    import yaml

    from conftest import write_tiny_train_yaml
    from darts_sr.config import SearchConfig, load_config, to_dict
    from darts_sr.data import HOLDOUT
    from darts_sr.experiments import rank_check, stats
    from darts_sr.nets.networks import generator_macs
    from darts_sr.search.generator_stage import GeneratorSearch
    from darts_sr.training.runner import prepare_run_folder, save_config

    rng = np.random.default_rng(0)
    pool = tmp_path / "BSD200"
    pool.mkdir()
    for name in [*HOLDOUT[:20], *(f"t{i}.png" for i in range(4))]:
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(pool / name)
    # One image smaller than a patch: the search and the recipe leave it out (skip_small), and so must the patches
    # that recalibrate the supernet's batch norms.
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(pool / "small.png")
    chain = GeneratorGenotype((Node("conv_3x3", 0), Node("conv_3x3", 1)), (2,), channels=4, scale=4)
    search = {
        "data": {"train": [f"BSD200={pool}"], "patch_size": 8, "batch_size": 2, "val_crop": 12, "skip_small": True},
        "supernet": {"nodes": 3, "channels": 4},
        "cost": {"target_macs": generator_macs(chain)},
        "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.0},
        "optim": {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0},
        "run": {"log_every": 1, "samples": 1},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    config = load_config(SearchConfig, tmp_path / "search.yaml")
    run = tmp_path / "run"
    GeneratorSearch(config, prepare_run_folder(run, resume=False, overwrite=False), resume=False).run()
    save_config(run, to_dict(config))
    recipe = write_tiny_train_yaml(
        tmp_path / "recipe.yaml",
        data={"train": [f"BSD200={pool}"], "val": "holdout", "val_crop": 0, "skip_small": True},
        pixel_phase={"steps": 2},
        gan_phase={"steps": 0},
    )
    common = ["--samples", "3", "--tolerance", "0.6", "--recipe", str(recipe), "--standalone-seeds", "2"]
    common += ["--split-dir", str(tmp_path / "split"), "--benchmark", f"B={pool}", "--calibration-batches", "1"]
    first = tmp_path / "first"
    assert rank_check.main([str(run), *common, "--records", str(first)]) == 0
    result = json.loads((run / "rank_check.json").read_text())
    by_seed = [[json.loads((first / f"{k}.json").read_text()) for k in g["records"]] for g in result["genotypes"]]
    assert [sorted(r["seed"] for r in rs) for rs in by_seed] == [[0, 1]] * 3
    psnrs = [[r["scores"]["pixel"]["holdout"]["psnr_y"] for r in rs] for rs in by_seed]
    assert [g["standalone_psnr"] for g in result["genotypes"]] == [np.mean(p) for p in psnrs]
    _, floor, reliability = stats.reliability_of_means(psnrs)
    assert result["standalone_noise_floor"] == floor and result["standalone_reliability"] == reliability
    assert result["tau_ceiling"] == stats.tau_ceiling(reliability, 1.0)
    assert "allows at most" in capsys.readouterr().out

    second = tmp_path / "second"
    assert rank_check.main([str(run), *common, "--records", str(second), "--reuse", str(first)]) == 0
    copied = {p.name: json.loads(p.read_text()) for p in second.glob("*.json")}
    assert all(r["extra"].pop("reused_from").startswith(str(first)) for r in copied.values())
    assert copied == {p.name: json.loads(p.read_text()) for p in first.glob("*.json")}  # copied, not retrained
    assert json.loads((run / "rank_check.json").read_text())["genotypes"] == result["genotypes"]

    # The committed copy (search-report --save, search_sweep.sh's layout) reports the variant, patch, steps, minutes.
    from darts_sr.experiments import search_report

    assert search_report.main([str(run), "--save", str(tmp_path / "sweep" / "p8")]) == 0
    cells = search_report.row(tmp_path / "sweep" / "p8" / "run").split(" | ")
    assert cells[:3] == ["| run", "8", "2"] and cells[-1] == f"{result['tau']:.2f} ({result['p_value']:.2f}) |"
    (tmp_path / "sweep" / "p8" / "run").rename(tmp_path / "sweep" / "p8" / "seed0")
    assert search_report.row(tmp_path / "sweep" / "p8" / "seed0").startswith("| p8/seed0 | 8 | 2 | 0 |")
