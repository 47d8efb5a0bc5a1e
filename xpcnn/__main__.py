"""``python -m xpcnn``: the same as the ``xpcnn`` command."""
import sys

from .cli import main

sys.exit(main())
