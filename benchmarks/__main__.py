"""``python -m benchmarks``: xpcnn against PyTorch, from a checkout (see benchmarks/harness.py)."""
import sys

from benchmarks.harness import main

sys.exit(main())
