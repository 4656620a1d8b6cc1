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
