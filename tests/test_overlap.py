"""Tests for darts_sr.overlap: rescaled and cropped copies are found with their scale and offset, unrelated images
are not, identical files and self-pairs are handled, the CLI's exit status, and the known Set5 / BSD200 overlap."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from darts_sr.overlap import Match, compare_pools, find_near_duplicates, main


def _save(folder: Path, name: str, rgb: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(rgb).save(path)
    return path


def _rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict[str, list[Path]]:
    """Training images: astronaut (512 x 512) and coffee (400 x 600)."""
    folder = tmp_path_factory.mktemp("train")
    return {"train": [_save(folder, "astronaut", skdata.astronaut()), _save(folder, "coffee", skdata.coffee())]}


def _only(matches: list[Match]) -> Match:
    assert len(matches) == 1, [m.row() for m in matches]
    return matches[0]


@pytest.mark.parametrize("scale", [0.45, 0.72, 1.3, 2.2])
def test_a_rescaled_crop_is_found_with_its_scale_and_offset(pool, tmp_path, scale):
    # Like Set5's woman: a training image resized, then cropped (at most 300 x 260 and 80% of each side).
    big = _rescale(skdata.astronaut(), scale)
    h, w = min(300, int(big.shape[0] * 0.8)), min(260, int(big.shape[1] * 0.8))
    top, left = (big.shape[0] - h) // 3, (big.shape[1] - w) // 2
    crop = big[top : top + h, left : left + w]
    reported = {"bench": [_save(tmp_path, "crop", crop)]}
    m = _only(find_near_duplicates(pool, reported))
    assert (m.train_image, m.reported_image) == ("astronaut", "crop")
    assert m.scale == pytest.approx(scale, rel=0.03)
    assert m.offset == pytest.approx((top / scale, left / scale), abs=1.5)
    assert m.psnr > 35 and m.overlap > 0.95


def test_an_offset_crop_at_scale_one_is_found(pool, tmp_path):
    crop = skdata.coffee()[30:330, 170:470]  # 300 x 300, shifted right of the centre
    m = _only(find_near_duplicates(pool, {"bench": [_save(tmp_path, "shifted", crop)]}))
    assert (m.train_image, m.scale) == ("coffee", pytest.approx(1.0, rel=0.01))
    assert m.offset == pytest.approx((30, 170), abs=0.5)
    assert m.psnr > 40


def test_a_training_image_cut_from_a_reported_one_is_found(tmp_path):
    # The other direction: the training image is a shrunk crop of the reported image (reported = training x 1/0.6).
    train = {"train": [_save(tmp_path / "t", "piece", _rescale(skdata.coffee()[100:350, 150:450], 0.6))]}
    m = _only(find_near_duplicates(train, {"bench": [_save(tmp_path / "r", "coffee", skdata.coffee())]}))
    assert m.scale == pytest.approx(1 / 0.6, rel=0.03)
    assert m.offset == pytest.approx((-100 * 0.6, -150 * 0.6), abs=1.5)  # reported's corner in training pixels
    assert m.psnr > 35


def test_unrelated_images_are_not_duplicates(pool, tmp_path):
    cat = skdata.chelsea()
    part = _rescale(cat, 0.72)[20:220, 40:300]
    reported = {"bench": [_save(tmp_path, "chelsea", cat), _save(tmp_path, "part", part)]}
    assert find_near_duplicates(pool, reported) == []
    # Candidates that were checked all failed confirmation well under the threshold.
    assert all(m.psnr < 25 for m in compare_pools(pool, reported))


def test_identical_files_are_duplicates_and_the_same_file_is_never_compared(pool, tmp_path):
    copy = _save(tmp_path, "copy", skdata.coffee())  # the same bytes as the pool's coffee.png
    m = _only(find_near_duplicates(pool, {"bench": [copy]}))
    assert (m.train_image, m.psnr, m.duplicate) == ("coffee", math.inf, True)
    # A reported file that is in the training folder too (a holdout slice) is left out of the pool, not matched.
    assert find_near_duplicates(pool, {"holdout": [pool["train"][1]]}) == []


def test_cli_exit_status_table_and_json(pool, tmp_path, capsys):
    train = f"T={pool['train'][0].parent}"
    _save(tmp_path / "clean" / "HR", "chelsea", skdata.chelsea())  # an HR/ subfolder is used when there is one
    assert main(["--train", train, "--reported", f"B={tmp_path / 'clean'}", "--no-holdout"]) == 0
    assert "duplicates: 0" in capsys.readouterr().out

    _save(tmp_path / "dirty", "crop", _rescale(skdata.astronaut(), 0.72)[10:300, 20:280])
    out_json = tmp_path / "out.json"
    assert main(["--train", train, "--reported", f"B={tmp_path / 'dirty'}", "--json", str(out_json)]) == 1
    assert "B/crop" in capsys.readouterr().out
    found = [m for m in json.loads(out_json.read_text()) if m["duplicate"]]
    assert [(m["train_image"], m["reported_image"]) for m in found] == [("astronaut", "crop")]

    assert main(["--train", train, "--reported", f"B={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and err.count("\n") == 1


def test_the_known_set5_bsd200_overlap_is_the_only_one(shared):
    """Pins the finding: Set5's woman is BSD200's 302003 resized by ~0.72 and cropped; nothing else in Set5 or Set14
    overlaps T91 or BSD200 (about 20 s on one core)."""
    from darts_sr.data import list_images
    from darts_sr.overlap import image_folder

    datasets = shared / "datasets"
    assert datasets.is_dir(), f"{datasets} is missing: tests need ../shared beside the repository"
    train = {name: list_images(image_folder(datasets / name)) for name in ("T91", "BSD200")}
    reported = {"Set5": list_images(image_folder(shared / "anchors" / "tpsr" / "Set5"))}
    reported["Set14"] = list_images(image_folder(datasets / "Set14"))
    m = _only(find_near_duplicates(train, reported))
    assert (m.reported_set, m.reported_image, m.train_set, m.train_image) == ("Set5", "woman", "BSD200", "302003")
    assert m.psnr > 33 and 0.70 <= m.scale <= 0.74 and m.overlap > 0.9
