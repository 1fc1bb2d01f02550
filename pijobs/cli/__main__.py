"""``python -m pijobs.cli``: the ``pijobs`` command."""

import sys

from pijobs.cli import main

sys.exit(main())
