"""Retraining: `darts-sr train`. This file keeps `python train.py ...` working from a checkout."""

import sys

from darts_sr.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
