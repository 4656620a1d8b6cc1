"""Data at scale: synthesised LR cached on disk, DIV2K's official LR folders, progress, rank 0 first under torchrun."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darts_sr import data
from darts_sr.data import bicubic_downscale, load_dataset, load_training_pairs


def _save(path: Path, seed: int, h: int = 40, w: int = 36) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return img


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of its own, taking every image (test images are far below the real size threshold)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(folder))
    monkeypatch.setattr(data, "CACHE_MIN_PIXELS", 0)
    return folder


def _no_synthesis(monkeypatch):
    def refuse(*args):
        raise AssertionError("LR synthesised again instead of read from the cache")

    monkeypatch.setattr(data, "bicubic_downscale", refuse)


def test_synthesised_lr_is_cached_and_read_back_equal(tmp_path, cache, monkeypatch):
    hr = tmp_path / "hr"
    images = [_save(hr / f"{name}.png", i) for i, name in enumerate("ab")]
    first = load_dataset(str(hr), 4)
    assert len(list(cache.rglob("*.png"))) == 2
    for pair, img in zip(first, images):
        assert np.array_equal(pair.lq, bicubic_downscale(img, 4))
    with monkeypatch.context() as m:
        _no_synthesis(m)
        again = load_dataset(str(hr), 4)
    assert all(np.array_equal(a.lq, b.lq) and np.array_equal(a.gt, b.gt) for a, b in zip(first, again))
    # Another scale is another entry; an edited image is synthesised anew.
    load_dataset(str(hr), 2)
    assert len(list(cache.rglob("*.png"))) == 4
    changed = _save(hr / "a.png", 7)
    os.utime(hr / "a.png", ns=(1, 1))  # a different mtime even on coarse file systems
    assert np.array_equal(load_dataset(str(hr), 4)[0].lq, bicubic_downscale(changed, 4))


def test_a_corrupt_cache_entry_is_recomputed(tmp_path, cache):
    hr = tmp_path / "hr"
    img = _save(hr / "a.png", 0)
    load_dataset(str(hr), 4)
    (entry,) = cache.rglob("*.png")
    entry.write_bytes(b"garbage")
    assert np.array_equal(load_dataset(str(hr), 4)[0].lq, bicubic_downscale(img, 4))
    assert Image.open(entry).size == (9, 10)  # rewritten


def test_cache_off_and_small_images_write_nothing(tmp_path, monkeypatch):
    hr = tmp_path / "hr"
    _save(hr / "a.png", 0)
    monkeypatch.setenv(data.CACHE_ENV, "off")
    monkeypatch.setattr(data, "CACHE_MIN_PIXELS", 0)
    assert data.lq_cache_dir() is None
    load_dataset(str(hr), 4)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "CACHE_MIN_PIXELS", 10**6)
    load_dataset(str(hr), 4)
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_cache_is_said_once_and_changes_nothing(tmp_path, monkeypatch, caplog):
    hr = tmp_path / "hr"
    images = [_save(hr / f"{name}.png", i) for i, name in enumerate("abc")]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(data.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(data, "CACHE_MIN_PIXELS", 0)
    monkeypatch.setattr(data, "_cache_warned", False)
    with caplog.at_level(logging.WARNING, logger="darts_sr.data"):
        pairs = load_dataset(str(hr), 4)
    assert all(np.array_equal(p.lq, bicubic_downscale(img, 4)) for p, img in zip(pairs, images))
    warnings = [r.getMessage() for r in caplog.records if "cannot cache" in r.getMessage()]
    assert len(warnings) == 1 and data.CACHE_ENV in warnings[0]


def test_div2k_official_lr_folders_are_used(tmp_path):
    root = tmp_path / "DIV2K"
    hr = [_save(root / "DIV2K_train_HR" / f"000{i}.png", i) for i in (1, 2)]
    for i in (1, 2):  # recognisably not our bicubic: a flat image
        Image.fromarray(np.full((10, 9, 3), 10 * i, np.uint8)).save(_lr_path(root, i))
    pairs = load_dataset(str(root / "DIV2K_train_HR"), 4)
    assert [p.name for p in pairs] == ["0001", "0002"]
    assert [int(p.lq[0, 0, 0]) for p in pairs] == [10, 20] and np.array_equal(pairs[0].gt, hr[0])
    synthesised = load_dataset(str(root / "DIV2K_train_HR"), 4, synthesize_lr=True)
    assert np.array_equal(synthesised[1].lq, bicubic_downscale(hr[1], 4))
    # No X2 folder: x2 synthesises.
    assert load_dataset(str(root / "DIV2K_train_HR"), 2)[0].lq.shape == (20, 18, 3)


def _lr_path(root: Path, i: int) -> Path:
    path = root / "DIV2K_train_LR_bicubic" / "X4" / f"000{i}x4.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_large_folders_show_progress_and_a_summary(tmp_path, cache, monkeypatch, capsys, caplog):
    hr = tmp_path / "hr"
    for i in range(3):
        _save(hr / f"{i}.png", i)
    monkeypatch.setattr(data, "PROGRESS_MIN_IMAGES", 3)
    load_dataset(str(hr), 4)
    with caplog.at_level(logging.INFO, logger="darts_sr.data"):
        load_dataset(str(hr), 4)
    assert f"loading {hr}" in capsys.readouterr().err
    assert any("3 images loaded" in m and "3 LR images from the cache" in m for m in caplog.messages)


def test_under_torchrun_rank_0_prepares_and_the_others_read_the_cache(tmp_path, cache, monkeypatch):
    """The two ranks' views, one after the other: rank 0 loads inside ``on_main`` (the others wait at its
    broadcast), then rank 1 loads with synthesis forbidden."""
    from darts_sr import distributed

    hr = tmp_path / "hr"
    images = [_save(hr / f"{name}.png", i) for i, name in enumerate("abcd")]
    calls = []

    def on_main(fn, error):
        calls.append(rank)
        return fn() if rank == 0 else None

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "on_main", on_main)
    monkeypatch.setattr(distributed, "is_main", lambda: rank == 0)
    rank = 0
    rank0 = load_training_pairs((f"d={hr}",), 4)
    assert len(list(cache.rglob("*.png"))) == 4
    rank = 1
    with monkeypatch.context() as m:
        _no_synthesis(m)
        rank1 = load_training_pairs((f"d={hr}",), 4)
    assert calls == [0, 1]
    for a, b, img in zip(rank0, rank1, images):
        assert np.array_equal(a.lq, b.lq) and np.array_equal(a.lq, bicubic_downscale(img, 4))
