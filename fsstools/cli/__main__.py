"""``python -m fsstools.cli <command> ...`` (what torchrun starts): the ``fsstools`` command."""

import sys

from fsstools.cli import main

sys.exit(main())
