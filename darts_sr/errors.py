"""The two ways a command ends early, as base classes the whole package shares (so ``cli`` needs no layer above it).

``UserError``: a mistake the user can fix (bad config, data, genotype, checkpoint, run folder, missing weights, a
diverged run); the message is one line naming the file or key, and the command exits with status 2.
``StopRequested``: SIGINT/SIGTERM after a checkpoint was written; status 130.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message is one line naming the file or key."""


class StopRequested(Exception):
    """SIGINT/SIGTERM: the run wrote a checkpoint and stopped; --resume continues it."""
