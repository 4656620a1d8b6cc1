"""Evaluation: `darts-sr evaluate`. This file keeps `python evaluate.py ...` working from a checkout."""

import sys

from darts_sr.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
