"""The names of the files in a run folder, in one place.

A run folder (``runs/<name>/``) holds the resolved config, the log, TensorBoard events, the checkpoint to resume
from, derived genotypes and a summary. Stage 1 (the generator search) and retraining use the plain names; stage 2
shares stage 1's folder under ``--stage all``, so its files carry ``discriminator`` in their names.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG = "config.yaml"
LOG = "run.log"
GENERATOR_GENOTYPE = "genotype_generator.json"
DISCRIMINATOR_GENOTYPE = "genotype_discriminator.json"
MODEL_PIXEL = "model_pixel.pt"  # retraining: best validation Y-PSNR of the pixel phase
MODEL_GAN = "model_gan.pt"  # retraining: end of the perceptual-adversarial phase
DISCRIMINATOR_RACE = "race_discriminator.json"  # stage 2 by race: candidates, the floor, every rung's scores
DISCRIMINATOR_RACE_DIR = "race"  # stage 2 by race: the fine-tunes' run folders (pixel/, rung<r>/<candidate>/)


@dataclass(frozen=True)
class StageFiles:
    """Where one stage of a run keeps its checkpoint, summary, TensorBoard events and per-epoch genotypes."""

    checkpoint: str
    summary: str
    tensorboard: str
    history: str  # a format string taking the epoch

    def history_file(self, epoch: int) -> str:
        return self.history.format(epoch=epoch)


GENERATOR_SEARCH = StageFiles(
    checkpoint="checkpoints/last.pt",
    summary="summary.json",
    tensorboard="tb",
    history="history/genotype_epoch_{epoch:03d}.json",
)
DISCRIMINATOR_SEARCH = StageFiles(
    checkpoint="checkpoints/discriminator_last.pt",
    summary="summary_discriminator.json",
    tensorboard="tb/discriminator",
    history="history/genotype_discriminator_epoch_{epoch:03d}.json",
)
RETRAIN = GENERATOR_SEARCH  # a retraining has a folder of its own: the plain names
