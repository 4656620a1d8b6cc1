"""Architecture search: `darts-sr search`. This file keeps `python train_search.py ...` working from a checkout."""

import sys

from darts_sr.commands.search import main

if __name__ == "__main__":
    sys.exit(main())
