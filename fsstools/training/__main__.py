"""``python -m fsstools.training ...`` (what torchrun runs): the ``fsstools train`` command."""

import sys

from fsstools.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
