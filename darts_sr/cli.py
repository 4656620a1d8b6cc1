"""What the training entry points share: the mistakes a user can make, and how a run ends.

A user error (bad config, data, genotype, checkpoint, run folder, missing weights, a diverged run) is one line
``error: ...`` on stderr and exit status 2; SIGINT/SIGTERM is ``stopped: ...`` and 130, after a checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from darts_sr import distributed, engine
from darts_sr.config import ConfigError
from darts_sr.data import DataError
from darts_sr.genotype import GenotypeError
from darts_sr.io import CheckpointError
from darts_sr.networks import WeightsMismatch
from darts_sr.pretrained import PretrainedWeightsMissing
from darts_sr.sampling import SamplingError

USER_ERRORS = (
    ConfigError, DataError, GenotypeError, CheckpointError, WeightsMismatch, PretrainedWeightsMissing, SamplingError,
    engine.RunFolderError, engine.NonFiniteLoss,
)  # fmt: skip


def setup_logging() -> None:
    # Under torchrun every worker would print the same lines; the other ranks speak only of problems.
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def run(body: Callable[[], None], stopped_hint: str = "") -> int:
    """Runs ``body`` and turns the way it ends into an exit status."""
    try:
        body()
    except engine.StopRequested as e:
        print(f"stopped: {e}{stopped_hint}", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0
