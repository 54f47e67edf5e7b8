"""``python -m simulations.cli``: the same as the ``solvable-attention`` command."""

import sys

from .main import main

sys.exit(main())
