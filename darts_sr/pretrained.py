"""ImageNet-pretrained backbones (AlexNet for LPIPS, VGG19 for the perceptual loss): find, download, load.

Where the weights live: the file torchvision would cache (same name, e.g. ``vgg19-dcbb9e9d.pth``) in
``torch.hub.get_dir()/checkpoints`` (honours TORCH_HOME), or in a directory the caller names (``--pretrained-dir``,
``loss.pretrained_dir``). Files are loaded with ``weights_only=True``.

Online (the default), a missing file is downloaded there the way torchvision does it on first use: from
torchvision's URL, with a progress bar, through ``torch.hub.download_url_to_file`` into a temporary file that is
moved into place only when complete and its SHA-256 starts with the hash prefix in the file name. Call
:func:`ensure_weights` before creating a run folder, so that a download (or its failure) happens first.
A machine without network does not wait: the server must answer within :data:`CONNECT_TIMEOUT_S` seconds
(name lookup included), and a download that stalls for :data:`STALL_TIMEOUT_S` fails. A failed download raises
:class:`WeightsDownloadFailed`, one line naming the file, the URL and ``--pretrained-dir``; it is a
:class:`PretrainedWeightsMissing`, so callers treat it exactly like missing weights offline, and it is remembered
for the rest of the process so that later callers fail at once instead of waiting again.

Offline (``offline=True``, or ``offline=None`` with the environment variable ``DARTS_SR_OFFLINE`` set to 1, true
or yes): never download. A missing file raises :class:`PretrainedWeightsMissing`, which says which file to put
where. Either way, a caller that explicitly allows a randomly initialised backbone (``allow_random``) gets one
instead, with a WARNING saying plainly that numbers computed with it are not the real metric or loss.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from darts_sr.errors import UserError

logger = logging.getLogger(__name__)

# Backbone name (a torchvision model builder name) -> the ImageNet weights torchvision would download for it.
BACKBONES: dict[str, WeightsEnum] = {
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1,
}

OFFLINE_ENV = "DARTS_SR_OFFLINE"  # "1", "true" or "yes" (any case): never download
CONNECT_TIMEOUT_S = 5.0  # the server must answer this fast, or the machine counts as offline
STALL_TIMEOUT_S = 60.0  # a running download that receives nothing for this long fails

# (url, destination) -> why downloading it failed: later callers in this process fail at once, without waiting.
_FAILED_DOWNLOADS: dict[tuple[str, str], str] = {}


class PretrainedWeightsMissing(UserError, RuntimeError):
    """The ImageNet weights of a backbone are not on disk (and were not downloaded); the message says what to put
    where, on one line."""

    def __init__(self, backbone: str, filename: str, directory: Path, url: str, *, message: str | None = None) -> None:
        self.backbone = backbone
        self.filename = filename
        self.directory = directory
        self.url = url
        super().__init__(
            message
            or f"{backbone} ImageNet weights not found: put {filename} in {directory} (normally downloaded from {url})"
        )


class WeightsDownloadFailed(PretrainedWeightsMissing):
    """Downloading the weights failed (no network, timeout, HTTP error, wrong hash); ``reason`` says which."""

    def __init__(self, backbone: str, filename: str, directory: Path, url: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            backbone,
            filename,
            directory,
            url,
            message=f"could not download {backbone} ImageNet weights {filename} from {url} ({reason}); "
            f"download it into {directory}, or into a folder given as --pretrained-dir",
        )


def _weights(backbone: str) -> WeightsEnum:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}") from None


def weights_filename(backbone: str) -> str:
    """File name torchvision caches the backbone's ImageNet weights under (basename of the download URL)."""
    return os.path.basename(_weights(backbone).url)


def weights_url(backbone: str) -> str:
    """URL torchvision normally downloads the backbone's ImageNet weights from."""
    return _weights(backbone).url


def checkpoint_dir(directory: str | Path | None = None) -> Path:
    """``directory`` if given, else ``torch.hub.get_dir()/checkpoints`` (honours TORCH_HOME and hub.set_dir)."""
    if directory is not None:
        return Path(directory)
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(backbone: str, directory: str | Path | None = None) -> Path | None:
    """Path of the cached ImageNet weights of ``backbone`` in ``directory`` (default: hub checkpoints), or None."""
    path = checkpoint_dir(directory) / weights_filename(backbone)
    return path if path.is_file() else None


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given; else whether the environment variable DARTS_SR_OFFLINE is 1, true or yes."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _one_line(err: BaseException) -> str:
    """Why a download failed, on one line: "[Errno 111] Connection refused", "HTTP Error 404: Not Found", ..."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else OSError(err.reason)
    text = " ".join(str(err).split())
    return text if isinstance(err, OSError | RuntimeError) and text else f"{type(err).__name__}: {text}"


def _probe(url: str, timeout: float) -> None:
    """Raise OSError unless the server of ``url`` answers a HEAD request within ``timeout`` seconds.

    Run in a daemon thread and bounded by ``join``: a socket timeout does not cover the name lookup, which can hang
    for long on a machine without network. Any HTTP status counts as an answer: the download reports real errors.
    """
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "torch.hub"})
            with urllib.request.urlopen(request, timeout=timeout):
                pass
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the server answered
        except BaseException as err:  # handed to the calling thread
            outcome.append(err)

    thread = threading.Thread(target=ask, name="darts_sr-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torch.hub's urlopen takes no timeout, so it uses the process-wide default: set it for the download only.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _hash_prefix(source: str, filename: str) -> str | None:
    """torch.hub's rule (the hex run between '-' and '.' in the URL's file name), else the canonical name's."""
    for name in (os.path.basename(urlparse(source).path), filename):
        match = torch.hub.HASH_REGEX.search(name)
        if match and match.group(1):
            return match.group(1)
    return None


def download_weights(
    backbone: str,
    directory: str | Path | None = None,
    *,
    url: str | None = None,
    progress: bool = True,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Path:
    """Download the ImageNet weights of ``backbone`` to ``checkpoint_dir(directory)/weights_filename(backbone)``.

    ``url`` replaces torchvision's URL (a mirror, or a ``file://`` URL in tests); the file still lands under its
    canonical name. The SHA-256 must start with the hash prefix in the URL's file name (torch.hub's
    ``check_hash`` rule), or in the canonical name when the URL's has none. ``timeout``: seconds the server has to
    answer. Returns the path; raises :class:`WeightsDownloadFailed` (and remembers the failure for this process).
    """
    filename = weights_filename(backbone)
    source = url or weights_url(backbone)
    target_dir = checkpoint_dir(directory)
    dst = target_dir / filename
    key = (source, str(dst))
    if key in _FAILED_DOWNLOADS:
        raise WeightsDownloadFailed(backbone, filename, target_dir, source, f"{_FAILED_DOWNLOADS[key]}, earlier")
    logger.info("downloading %s ImageNet weights from %s to %s", backbone, source, dst)
    try:
        _probe(source, timeout)
        target_dir.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(STALL_TIMEOUT_S):
            # Writes a .partial file beside dst and moves it into place only when complete and hash-checked.
            prefix = _hash_prefix(source, filename)
            torch.hub.download_url_to_file(source, str(dst), hash_prefix=prefix, progress=progress)
    except (OSError, RuntimeError, ValueError) as err:  # URLError, timeouts, HTTP errors: OSError; bad hash: Runtime
        _FAILED_DOWNLOADS[key] = _one_line(err)
        raise WeightsDownloadFailed(backbone, filename, target_dir, source, _FAILED_DOWNLOADS[key]) from err
    logger.info("downloaded %s", dst)
    return dst


def ensure_weights(
    backbone: str,
    directory: str | Path | None = None,
    offline: bool | None = None,
    *,
    required: bool = True,
    url: str | None = None,
    progress: bool = True,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Path | None:
    """Path of the backbone's ImageNet weights, downloading them first unless offline; call before a run folder.

    ``offline``: True never downloads, False always may, None reads DARTS_SR_OFFLINE (see :func:`is_offline`).
    When the weights are neither on disk nor downloadable, raises :class:`PretrainedWeightsMissing` (offline) or
    :class:`WeightsDownloadFailed`; with ``required=False`` logs that as a WARNING and returns None instead (for
    callers that may go on without them, e.g. a config that allows a random backbone). ``url``, ``progress`` and
    ``timeout`` go to :func:`download_weights`.
    """
    path = find_weights(backbone, directory)
    if path is not None:
        return path
    try:
        if is_offline(offline):
            where, filename = checkpoint_dir(directory), weights_filename(backbone)
            source = url or weights_url(backbone)
            raise PretrainedWeightsMissing(
                backbone,
                filename,
                where,
                source,
                message=f"{backbone} ImageNet weights not found and downloads are off ({OFFLINE_ENV} or offline=True): "
                f"put {filename} in {where} (normally downloaded from {source})",
            )
        return download_weights(backbone, directory, url=url, progress=progress, timeout=timeout)
    except PretrainedWeightsMissing as missing:
        if required:
            raise
        logger.warning("%s", missing)
        return None


def load_backbone(
    backbone: str,
    directory: str | Path | None = None,
    allow_random: bool = False,
    *,
    offline: bool | None = None,
    url: str | None = None,
    progress: bool = True,
) -> tuple[nn.Module, bool]:
    """Build the torchvision ``backbone`` and load its ImageNet weights, downloading them first unless offline.

    Returns ``(model, pretrained)``. The model is returned as built (train mode, gradients on); freezing it is the
    caller's business. ``offline``, ``url``, ``progress``: as :func:`ensure_weights`. If the weights can be neither
    found nor downloaded, raises :class:`PretrainedWeightsMissing` (or its :class:`WeightsDownloadFailed`), unless
    ``allow_random`` is true: then a WARNING is logged and the randomly initialised model is returned with
    ``pretrained=False``. Anything computed with such a model is not the real metric or loss.
    """
    try:
        path = ensure_weights(backbone, directory, offline, url=url, progress=progress)
    except PretrainedWeightsMissing as missing:
        if not allow_random:
            raise  # before building the model: vgg19's random init alone takes seconds
        logger.warning(
            "%s backbone is RANDOMLY INITIALISED (%s); any number computed with it is NOT the real metric/loss",
            backbone,
            missing,
        )
        return torchvision.models.get_model(backbone, weights=None), False
    assert path is not None  # required=True: ensure_weights raises instead of returning None
    model = torchvision.models.get_model(backbone, weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    logger.info("loaded %s ImageNet weights from %s", backbone, path)
    return model, True
