"""``python -m simulations.cli``: the same as the ``solvable-attention`` command."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
