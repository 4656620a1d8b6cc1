"""Tests for darts_sr.pretrained: finding, downloading (hash-checked, failing fast) and loading ImageNet weights.

No test touches the real network: every test runs with DARTS_SR_OFFLINE=1 unless it deletes it, and those that
download do so from a ``file://`` URL of a small state dict made here, or from local sockets that refuse or never
answer. The downloads go through the real torch.hub code (``download_url_to_file``), hash check included.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from darts_sr import pretrained
from darts_sr.pretrained import (
    PretrainedWeightsMissing,
    WeightsDownloadFailed,
    ensure_weights,
    find_weights,
    is_offline,
    load_backbone,
    weights_filename,
)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline by default, no proxies (local URLs must stay local), no failures remembered from other tests."""
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's opener reads proxies when first built
    monkeypatch.setattr(pretrained, "_FAILED_DOWNLOADS", {})


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pretrained.OFFLINE_ENV)


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME / hub dir; returns its checkpoints dir (not created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _served(state: dict[str, torch.Tensor], folder: Path, stem: str = "tiny", hash_prefix: str | None = None) -> str:
    """Save ``state`` as ``<stem>-<sha256 prefix>.pth`` in ``folder`` (torchvision's naming); its file:// URL.

    ``hash_prefix`` overrides the true prefix (to make a file whose name lies about its content).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "staging.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{stem}-{hash_prefix or digest[:8]}.pth"
    tmp.rename(path)
    return path.as_uri()


@pytest.fixture
def tiny_url(tmp_path: Path) -> str:
    return _served({"w": torch.arange(6.0)}, tmp_path / "server")


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on a local port nobody listens on: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ALEXNET_FILE}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An http URL on a local port that accepts connections (kernel backlog) and never answers: a hung server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/{ALEXNET_FILE}"


def _assert_one_line_naming(err: BaseException, *parts: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)


# --- names, places, the offline switch ---------------------------------------------------------------------------


def test_backbone_file_names() -> None:
    assert weights_filename("alexnet") == ALEXNET_FILE
    assert weights_filename("vgg19") == "vgg19-dcbb9e9d.pth"
    assert pretrained.BACKBONES["alexnet"] is torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    assert pretrained.BACKBONES["vgg19"] is torchvision.models.VGG19_Weights.IMAGENET1K_V1
    with pytest.raises(ValueError, match="unknown backbone"):
        weights_filename("resnet50")


def test_default_dir_follows_torch_hub(empty_hub: Path) -> None:
    assert pretrained.checkpoint_dir() == empty_hub


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), (" yes ", True), ("0", False), ("", False), ("no", False)],
)
def test_offline_env_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(pretrained.OFFLINE_ENV, value)
    assert is_offline() is expected
    assert is_offline(True) is True and is_offline(False) is False  # the argument wins over the environment


def test_offline_env_unset_means_online(online: None) -> None:
    assert is_offline() is False


# --- offline: never download ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["alexnet", "vgg19"])
def test_offline_env_refuses_naming_file_dir_and_url(empty_hub: Path, backbone: str) -> None:
    with pytest.raises(PretrainedWeightsMissing) as info:
        load_backbone(backbone)
    assert not isinstance(info.value, WeightsDownloadFailed)
    _assert_one_line_naming(
        info.value, weights_filename(backbone), str(empty_hub), pretrained.BACKBONES[backbone].url, "downloads are off"
    )
    assert not empty_hub.exists()  # nothing was attempted


def test_offline_argument_refuses_without_env(online: None, empty_hub: Path, tiny_url: str) -> None:
    with pytest.raises(PretrainedWeightsMissing, match="downloads are off"):
        ensure_weights("alexnet", offline=True, url=tiny_url)
    assert not empty_hub.exists()


def test_offline_uses_weights_on_disk(tmp_path: Path) -> None:
    (tmp_path / ALEXNET_FILE).write_bytes(b"")
    assert ensure_weights("alexnet", tmp_path) == tmp_path / ALEXNET_FILE


def test_missing_weights_with_explicit_directory(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsMissing, match=str(tmp_path)):
        load_backbone("vgg19", directory=tmp_path)


def test_find_weights_vgg19_in_directory(tmp_path: Path) -> None:
    """vgg19's real-size round trip (550 MB) is too slow for a unit test; only the lookup is checked."""
    assert find_weights("vgg19", tmp_path) is None
    (tmp_path / weights_filename("vgg19")).write_bytes(b"")
    assert find_weights("vgg19", str(tmp_path)) == tmp_path / "vgg19-dcbb9e9d.pth"


def test_not_required_returns_none_with_warning(empty_hub: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="darts_sr.pretrained"):
        assert ensure_weights("vgg19", required=False) is None
    assert any("vgg19-dcbb9e9d.pth" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_allow_random_warns(empty_hub: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Random backbone only because the weights are absent (offline); the warning must say so."""
    with caplog.at_level(logging.WARNING, logger="darts_sr.pretrained"):
        model, is_pretrained = load_backbone("alexnet", allow_random=True)
    assert is_pretrained is False
    assert isinstance(model, torchvision.models.AlexNet)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    text = warnings[0].getMessage()
    assert "RANDOMLY INITIALISED" in text and "not the real" in text.lower()
    assert ALEXNET_FILE in text


# --- online: the real torch.hub download, from local URLs --------------------------------------------------------


def test_default_downloads_into_hub_cache_with_hash_check(online: None, empty_hub: Path, tiny_url: str) -> None:
    path = ensure_weights("alexnet", url=tiny_url, progress=False)  # offline=None and no env: downloads
    assert path == empty_hub / ALEXNET_FILE  # the canonical name, where find_weights looks
    source = Path(urllib.request.url2pathname(tiny_url.removeprefix("file://")))
    assert path.read_bytes() == source.read_bytes()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(6.0))
    assert [p.name for p in empty_hub.iterdir()] == [ALEXNET_FILE]  # no .partial left behind
    source.unlink()  # now cached: found, not downloaded again
    assert ensure_weights("alexnet", url=tiny_url, progress=False) == path


def test_wrong_hash_is_rejected(online: None, tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0)}
    true_prefix = _served(state, tmp_path / "probe").rsplit("-", 1)[1][:8]
    wrong = "0" * 8 if true_prefix != "0" * 8 else "1" * 8
    url = _served(state, tmp_path / "server", hash_prefix=wrong)
    target = tmp_path / "weights"
    with pytest.raises(WeightsDownloadFailed) as info:
        ensure_weights("alexnet", target, url=url, progress=False)
    _assert_one_line_naming(info.value, ALEXNET_FILE, url, "--pretrained-dir", "invalid hash value", wrong)
    assert list(target.iterdir()) == []  # neither the file nor a .partial


def test_url_without_hash_is_checked_against_the_canonical_name(online: None, tmp_path: Path) -> None:
    """A mirror URL whose name carries no hash still gets torchvision's hash (7be5be79) checked."""
    path = tmp_path / "server" / "weights.pth"
    path.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(WeightsDownloadFailed, match='expected "7be5be79"'):
        ensure_weights("alexnet", tmp_path / "weights", url=path.as_uri(), progress=False)


def test_load_backbone_downloads_then_loads(online: None, tmp_path: Path) -> None:
    """Fake-but-real-format weights: a random AlexNet served under a correct hash name downloads and loads exactly."""
    torch.manual_seed(0)
    source = torchvision.models.alexnet(weights=None)
    url = _served(source.state_dict(), tmp_path / "server", stem="alexnet-owt")
    model, is_pretrained = load_backbone("alexnet", tmp_path / "weights", url=url, progress=False)
    assert is_pretrained is True
    loaded = model.state_dict()
    for key, tensor in source.state_dict().items():
        assert torch.equal(loaded[key], tensor), key
    # Offline from now on: the downloaded file is found where it was put.
    _, again = load_backbone("alexnet", tmp_path / "weights", offline=True)
    assert again is True


def test_load_rejects_wrong_keys(tmp_path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / ALEXNET_FILE)
    with pytest.raises(RuntimeError):
        load_backbone("alexnet", directory=tmp_path)


# --- no network: fail fast, once, like offline --------------------------------------------------------------------


def test_refused_connection_fails_fast(online: None, tmp_path: Path, closed_port_url: str) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsDownloadFailed) as info:
        ensure_weights("alexnet", tmp_path, url=closed_port_url, progress=False)
    assert time.monotonic() - start < 3.0
    assert isinstance(info.value, PretrainedWeightsMissing)  # callers treat it as missing weights
    _assert_one_line_naming(info.value, ALEXNET_FILE, closed_port_url, "--pretrained-dir", str(tmp_path))


def test_silent_server_times_out_and_is_remembered(online: None, tmp_path: Path, silent_url: str) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsDownloadFailed) as info:
        ensure_weights("alexnet", tmp_path, url=silent_url, progress=False, timeout=0.5)
    assert time.monotonic() - start < 3.0
    assert "timed out" in str(info.value) or "no answer" in str(info.value)
    # A second caller in the same process (e.g. load_backbone after the early ensure_weights) does not wait again.
    start = time.monotonic()
    with pytest.raises(WeightsDownloadFailed, match="earlier"):
        ensure_weights("alexnet", tmp_path, url=silent_url, progress=False, timeout=30.0)
    assert time.monotonic() - start < 1.0


def test_default_timeout_is_short() -> None:
    assert pretrained.CONNECT_TIMEOUT_S <= 10


def test_failed_download_with_allow_random_behaves_like_offline(
    online: None, tmp_path: Path, closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(PretrainedWeightsMissing):
        load_backbone("alexnet", tmp_path, url=closed_port_url, progress=False)
    with caplog.at_level(logging.WARNING, logger="darts_sr.pretrained"):
        model, is_pretrained = load_backbone("alexnet", tmp_path, allow_random=True, url=closed_port_url)
    assert is_pretrained is False and isinstance(model, torchvision.models.AlexNet)
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "RANDOMLY INITIALISED" in text and ALEXNET_FILE in text and "--pretrained-dir" in text
