"""Tests for darts_sr.data: image loading, MATLAB-compatible bicubic, dataset layouts, patch sampling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from darts_sr.data import (
    BUILTIN_SPLITS,
    HOLDOUT,
    HOLDOUT_VAL,
    IMAGE_EXTENSIONS,
    DataError,
    ImagePair,
    PatchSampler,
    bicubic_downscale,
    bicubic_upscale,
    crop_to_multiple,
    list_images,
    load_dataset,
    load_image,
    load_training_pairs,
    load_validation_pairs,
    parse_data_spec,
    to_tensor,
    to_uint8,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SET5 = SHARED / "anchors" / "tpsr" / "Set5"
SET14 = SHARED / "datasets" / "Set14"


@pytest.fixture(scope="module")
def set5() -> Path:
    # The shared anchors ship with CI; a silent skip would hide a broken checkout.
    if not (SET5 / "HR").is_dir() or not (SET5 / "LR_bicubic" / "X4").is_dir():
        pytest.fail(f"{SET5}: TPSR Set5 anchor (HR/, LR_bicubic/X4/) missing; shared/ should sit beside the repo")
    return SET5


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    # Smooth content so bicubic alignment errors show up as large differences rather than noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([np.sin(xx / 7.0) + np.cos(yy / 5.0), np.sin((xx + yy) / 9.0), np.cos(xx / 11.0) * np.sin(yy / 6.0)])
    return np.clip((img.transpose(1, 2, 0) + 2) * 60, 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


# ------------------------------------------------------------------------------------------------ bicubic vs MATLAB


def test_bicubic_downscale_matches_matlab_set5_lr(set5: Path) -> None:
    total, within, worst = 0, 0, 0
    for hr_path in list_images(set5 / "HR"):
        ours = bicubic_downscale(load_image(hr_path), 4).astype(np.int16)
        ref = load_image(set5 / "LR_bicubic" / "X4" / hr_path.name).astype(np.int16)
        assert ours.shape == ref.shape, hr_path.name
        err = np.abs(ours - ref)
        total, within, worst = total + err.size, within + int((err <= 1).sum()), max(worst, int(err.max()))
    logging.getLogger(__name__).info("Set5 x4 bicubic vs MATLAB: max err %d, within 1: %.5f", worst, within / total)
    assert within / total >= 0.999, (worst, within / total)
    assert worst <= 3


def test_bicubic_upscale_reproduces_published_set5_baseline(set5: Path) -> None:
    # docs/ARCHITECTURE.md: bicubic upscaling of Set5 x4 LR gives 28.43 dB Y-PSNR (4-pixel border crop, BT.601 Y).
    def y(img: np.ndarray) -> np.ndarray:
        return (img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) * 219 / 255 + 16

    psnrs = []
    for pair in load_dataset(str(set5), 4):
        assert pair.gt is not None
        diff = (y(bicubic_upscale(pair.lq, 4)) - y(pair.gt))[4:-4, 4:-4]
        psnrs.append(10 * np.log10(255.0**2 / np.mean(diff**2)))
    assert np.mean(psnrs) == pytest.approx(28.43, abs=0.01)


def test_bicubic_shapes_and_divisibility() -> None:
    img = _rgb(24, 36)
    assert bicubic_downscale(img, 3).shape == (8, 12, 3)
    assert bicubic_downscale(img, 3).dtype == np.uint8
    assert bicubic_upscale(img, 2).shape == (48, 72, 3)
    flat = np.full((16, 16, 3), 77, np.uint8)
    assert (bicubic_downscale(flat, 4) == 77).all() and (bicubic_upscale(flat, 4) == 77).all()
    with pytest.raises(ValueError, match="multiple"):
        bicubic_downscale(_rgb(25, 36), 4)


def test_crop_to_multiple_is_top_left() -> None:
    img = _rgb(27, 30)
    out = crop_to_multiple(img, 4)
    assert out.shape == (24, 28, 3)
    assert np.array_equal(out, img[:24, :28])


# ---------------------------------------------------------------------------------------------------- load_image


def test_load_image_modes(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    out = load_image(tmp_path / "grey.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], grey) for c in range(3))

    rgba = np.concatenate([_rgb(5, 6), np.full((5, 6, 1), 10, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])

    Image.new("LA", (4, 3), (90, 5)).save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png") == 90).all()

    sixteen = np.array([[0, 128, 257, 32896], [65535, 65000, 1000, 300]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    assert out.shape == (2, 4, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], np.round(sixteen / 257).astype(np.uint8))

    pal = Image.new("P", (3, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pal.png")
    out = load_image(tmp_path / "pal.png")
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 255, 0]

    Image.new("1", (4, 4), 1).save(tmp_path / "bw.bmp")
    assert (load_image(tmp_path / "bw.bmp") == 255).all()

    rgb = _rgb(8, 8)
    Image.fromarray(rgb).save(tmp_path / "q.jpg", quality=95)
    assert load_image(tmp_path / "q.jpg").shape == (8, 8, 3)


def test_load_image_broken_files(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.png", _rgb(64, 64))
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not an image\n" * 10)
    for name in ("truncated.png", "garbage.png", "missing.png"):
        with pytest.raises(DataError, match=name) as info:
            load_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_load_image_ignores_load_truncated_images_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    data = _save(tmp_path / "good.png", _rgb(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


# --------------------------------------------------------------------------------------------------- list_images


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "c.bmp"):
        _save(tmp_path / name, _rgb(4, 4))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._a.png").write_bytes(b"resource fork")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.bmp"]


def test_list_images_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(DataError, match="empty_dir: no images") as info:
        list_images(empty)
    assert all(ext in str(info.value) for ext in IMAGE_EXTENSIONS)
    with pytest.raises(DataError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(str(tmp_path / "nowhere"), 4)
    with pytest.raises(DataError, match="empty_dir"):
        load_dataset(str(empty), 4)


# -------------------------------------------------------------------------------------------------- load_dataset


def test_set5_given_and_synthesised_lr(set5: Path) -> None:
    given = load_dataset(str(set5), 4)
    synth = load_dataset(str(set5), 4, synthesize_lr=True)
    assert [p.name for p in given] == ["baby", "bird", "butterfly", "head", "woman"]
    assert [p.name for p in synth] == [p.name for p in given]
    for g, s in zip(given, synth):
        assert g.gt is not None and s.gt is not None
        assert g.gt.shape == (g.lq.shape[0] * 4, g.lq.shape[1] * 4, 3)
        assert s.lq.shape == g.lq.shape and np.array_equal(s.gt, g.gt)
        assert np.abs(s.lq.astype(int) - g.lq).max() <= 3


def test_set14_greyscale_bridge_loads_as_rgb() -> None:
    if not (SET14 / "HR").is_dir():
        pytest.fail(f"{SET14}: Set14 benchmark missing from the shared folder")
    pairs = {p.name: p for p in load_dataset(str(SET14), 4)}
    assert len(pairs) == 14
    bridge = pairs["bridge"]
    assert bridge.lq.shape[2] == 3 and bridge.gt is not None and bridge.gt.shape[2] == 3
    assert np.array_equal(bridge.lq[..., 0], bridge.lq[..., 2])


def _benchmark(root: Path, names: dict[str, tuple[int, int]], scale: int = 4, lr_suffix: str = "") -> Path:
    for i, (name, (h, w)) in enumerate(names.items()):
        hr = _rgb(h, w, seed=i)
        _save(root / "HR" / f"{name}.png", hr)
        lr = bicubic_downscale(crop_to_multiple(hr, scale), scale)
        _save(root / "LR_bicubic" / f"X{scale}" / f"{name}{lr_suffix}.png", lr)
    return root


def test_benchmark_edsr_naming_and_cropping(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _benchmark(tmp_path / "bench", {"baby": (34, 41), "bird": (32, 32), "zebra": (30, 21)}, lr_suffix="x4")
    with caplog.at_level(logging.INFO, logger="darts_sr.data"):
        pairs = load_dataset(str(root), 4)
    assert [p.name for p in pairs] == ["baby", "bird", "zebra"]
    shapes = [p.gt.shape for p in pairs if p.gt is not None]
    assert shapes == [(32, 40, 3), (32, 32, 3), (28, 20, 3)]
    crop_lines = [r.getMessage() for r in caplog.records if "cropped" in r.getMessage()]
    assert len(crop_lines) == 1 and "2 of 3" in crop_lines[0]


def test_hr_without_lr_names_both(tmp_path: Path) -> None:
    root = _benchmark(tmp_path / "bench", {"a": (16, 16), "b": (16, 16)})
    (root / "LR_bicubic" / "X4" / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png.*X4") as info:
        load_dataset(str(root), 4)
    assert str(root / "HR" / "b.png") in str(info.value)
    assert len(load_dataset(str(root), 4, synthesize_lr=True)) == 2  # synthesis does not need the LR files


def test_lr_hr_size_mismatch_names_both(tmp_path: Path) -> None:
    root = _benchmark(tmp_path / "bench", {"a": (16, 16)})
    _save(root / "LR_bicubic" / "X4" / "a.png", _rgb(5, 4))
    with pytest.raises(DataError) as info:
        load_dataset(str(root), 4)
    msg = str(info.value)
    assert str(root / "HR" / "a.png") in msg and str(root / "LR_bicubic" / "X4" / "a.png") in msg
    assert "4x5" in msg and "16x16" in msg and "\n" not in msg


def test_hr_only_folder_synthesises_lr(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "x.png", _rgb(18, 23))
    _save(tmp_path / "imgs" / "y.bmp", np.full((8, 8, 3), 9, np.uint8))
    pairs = load_dataset(str(tmp_path / "imgs"), 2)
    assert [p.name for p in pairs] == ["x", "y"]
    assert pairs[0].gt is not None and pairs[0].gt.shape == (18, 22, 3) and pairs[0].lq.shape == (9, 11, 3)
    assert (pairs[1].lq == 9).all()


def test_lr_only_specs_have_no_hr(tmp_path: Path) -> None:
    lr_dir = tmp_path / "lronly" / "LR_bicubic" / "X4"
    _save(lr_dir / "ax4.png", _rgb(4, 4))
    _save(lr_dir / "bx4.png", _rgb(4, 5))
    by_layout = load_dataset(str(tmp_path / "lronly"), 4)
    by_prefix = load_dataset(f"lr:{lr_dir}", 4)
    assert all(p.gt is None for p in by_layout + by_prefix)
    assert [p.name for p in by_layout] == ["a", "b"]  # the LR_bicubic layout drops EDSR's x4 suffix
    assert [p.name for p in by_prefix] == ["ax4", "bx4"]  # lr: takes file names as they are
    assert by_layout[1].lq.shape == (4, 5, 3)
    with pytest.raises(DataError, match="X2"):
        load_dataset(str(tmp_path / "lronly"), 2)
    with pytest.raises(DataError, match="lr:PATH"):
        load_dataset("lr:", 4)


def test_builtin_splits() -> None:
    seen: set[str] = set()
    for split, names in BUILTIN_SPLITS.items():
        pairs = load_dataset("builtin", 4, split=split)
        assert [p.name for p in pairs] == list(names)
        assert not seen & set(names)
        seen |= set(names)
        for p in pairs:
            assert p.gt is not None and p.gt.dtype == np.uint8 and p.lq.dtype == np.uint8
            assert p.gt.shape == (p.lq.shape[0] * 4, p.lq.shape[1] * 4, 3)
            assert p.gt.astype(int).std(axis=2).mean() > 1  # colour, not replicated grey
    assert load_dataset("builtin", 4, split="val")[0] is load_dataset("builtin", 4, split="val")[0]  # cached
    with pytest.raises(DataError, match="split"):
        load_dataset("builtin", 4, split="nope")


def test_parse_data_spec() -> None:
    assert parse_data_spec("set5=/data/Set5") == ("set5", "/data/Set5")
    assert parse_data_spec("x=lr:/a=b") == ("x", "lr:/a=b")
    for bad in ("/data/Set5", "=/data", "set5=", ""):
        with pytest.raises(DataError, match="expected NAME=PATH"):
            parse_data_spec(bad)


# ------------------------------------------------------------------------------------------------------- tensors


def test_tensor_round_trip() -> None:
    img = _rgb(5, 7)
    t = to_tensor(img)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0
    assert np.array_equal(to_uint8(t), img) and np.array_equal(to_uint8(t[0]), img)
    odd = torch.tensor([-0.5, 0.2, 1.7, 0.5 / 255, 1.49 / 255]).view(1, 1, 5).expand(3, 1, 5)
    assert to_uint8(odd)[0, :, 0].tolist() == [0, 51, 255, 0, 1]  # clamped and rounded (half to even at 0.5)


# ------------------------------------------------------------------------------------------------- PatchSampler


def _synth_pair(name: str, h: int, w: int, scale: int) -> ImagePair:
    hr = _smooth(h, w)
    return ImagePair(name, bicubic_downscale(hr, scale), hr)


def test_patch_sampler_shapes_and_reproducibility() -> None:
    pairs = [_synth_pair("a", 64, 80, 4), _synth_pair("b", 48, 48, 4)]
    sampler = PatchSampler(pairs, patch_size=8, scale=4)
    lr, hr = sampler.sample(6, torch.Generator().manual_seed(3))
    assert lr.shape == (6, 3, 8, 8) and hr.shape == (6, 3, 32, 32)
    assert lr.dtype == hr.dtype == torch.float32
    assert 0 <= lr.min() and lr.max() <= 1 and 0 <= hr.min() and hr.max() <= 1

    gen = torch.Generator().manual_seed(3)
    again = sampler.sample(6, gen)
    assert torch.equal(again[0], lr) and torch.equal(again[1], hr)
    state = gen.get_state()
    nxt = sampler.sample(6, gen)
    resumed = sampler.sample(6, torch.Generator().set_state(state))
    assert torch.equal(nxt[0], resumed[0]) and not torch.equal(nxt[0], lr)


def test_patch_sampler_alignment() -> None:
    scale, p = 4, 12
    pairs = [_synth_pair("a", 96, 128, scale)]
    for augment in (False, True):
        sampler = PatchSampler(pairs, patch_size=p, scale=scale, augment=augment)
        lr, hr = sampler.sample(8, torch.Generator().manual_seed(0))
        for i in range(8):
            down = bicubic_downscale(to_uint8(hr[i]), scale).astype(np.float64)
            ref = to_uint8(lr[i]).astype(np.float64)
            # Interior only: the patch edge lacks the neighbours the full-image resize saw.
            assert np.abs(down - ref)[2:-2, 2:-2].mean() < 3


def test_patch_sampler_errors() -> None:
    with pytest.raises(DataError, match="tiny"):
        PatchSampler([_synth_pair("tiny", 16, 40, 4)], patch_size=8, scale=4)
    with pytest.raises(DataError, match="nohr"):
        PatchSampler([ImagePair("nohr", _rgb(8, 8), None)], patch_size=4, scale=4)


def test_a_search_validates_on_the_holdout_that_its_training_pool_never_holds(tmp_path):
    rng = np.random.default_rng(0)
    pool = tmp_path / "BSD200"
    pool.mkdir()
    for name in [*HOLDOUT, "a.png", "b.png"]:
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(pool / name)
    specs = (f"BSD200={pool}", "builtin")
    val = load_validation_pairs(HOLDOUT_VAL, specs, 4, crop=8)
    assert sorted(p.name for p in val) == sorted(Path(n).stem for n in HOLDOUT)
    assert {p.lq.shape for p in val} == {(8, 8, 3)} and {p.gt.shape for p in val} == {(32, 32, 3)}
    assert not {p.name for p in val} & {p.name for p in load_training_pairs(specs, 4)}
    (pool / HOLDOUT[3]).unlink()
    with pytest.raises(DataError, match=f"19 of the {len(HOLDOUT)} holdout images"):
        load_validation_pairs(HOLDOUT_VAL, specs, 4, crop=8)
