"""``python -m darts_sr``: the ``darts-sr`` command."""

import sys

from darts_sr.commands import main

if __name__ == "__main__":
    sys.exit(main())
