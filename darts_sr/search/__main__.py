"""``python -m darts_sr.search RUN OUT``: a search run's last-epoch pictures (op probabilities, the derived genotype,
their evolution) as PNG files in OUT."""

import sys
from pathlib import Path

from darts_sr.search.generator_stage import save_run_figures

if __name__ == "__main__":
    for written in save_run_figures(Path(sys.argv[1]), Path(sys.argv[2])):
        print(written)
