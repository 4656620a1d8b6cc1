"""ONNX export: `darts-sr export`. This file keeps `python export.py ...` working from a checkout."""

import sys

from darts_sr.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
