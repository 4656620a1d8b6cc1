"""TensorBoard from the runs: one writer per stage on rank 0, scalars grouped by prefix, SR samples beside HR.

Tags: ``loss/<term>`` (GAN-step and architecture-step terms), ``penalty/…``, ``cost/…``, ``grad/…`` as they are,
``lr/<optimizer>``, ``val/<metric>``, ``prob/<choice>/<option>``, pictures under ``arch/`` and ``samples/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from darts_sr import distributed


class NullWriter:
    """SummaryWriter's interface, writing nothing (the writer of every torchrun rank but 0)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


Writer = SummaryWriter | NullWriter


def summary_writer(log_dir: Path, purge_step: int | None) -> Writer:
    """TensorBoard events from rank 0 only; the other ranks log into a writer that drops everything."""
    return SummaryWriter(str(log_dir), purge_step=purge_step) if distributed.is_main() else NullWriter()


def log_scalars(
    writer: Writer, step: int, losses: dict[str, float], logs: dict[str, float], lrs: dict[str, float]
) -> None:
    """A step's scalars: GAN-step losses and architecture-step terms under ``loss/``, other namespaced keys
    (``grad/``, ``cost/``) as they are, learning rates under ``lr/``."""
    for k, v in losses.items():
        writer.add_scalar(f"loss/{k}", v, step)
    for k, v in logs.items():
        writer.add_scalar(k if "/" in k and not k.startswith("arch/") else f"loss/{k}", v, step)
    for k, v in lrs.items():
        writer.add_scalar(f"lr/{k}", v, step)


def log_epoch(writer: Writer, step: int, genotype_text: str, scalars: dict[str, float | None]) -> None:
    """An epoch's derived genotype as text and its scalars by tag (None: not measured, not logged)."""
    writer.add_text("genotype", as_markdown(genotype_text), step)
    for tag, value in scalars.items():
        if value is not None:
            writer.add_scalar(tag, value, step)


def log_samples(writer: Writer, net: nn.Module, pairs: list, step: int, device: torch.device) -> None:
    """SR beside HR for each validation pair, as TensorBoard images."""
    from darts_sr.data import to_tensor, to_uint8

    for pair in pairs:
        with torch.no_grad():
            sr = to_uint8(net.eval()(to_tensor(pair.lq).to(device)).cpu())
        net.train()
        writer.add_image(f"samples/{pair.name}", np.concatenate([sr, pair.gt], axis=1), step, dataformats="HWC")


def as_markdown(text: str) -> str:
    """TensorBoard's text plugin renders markdown: keep line breaks."""
    return text.replace("\n", "  \n")
