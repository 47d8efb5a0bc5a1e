"""xpcnn's benchmark suite: ``python -m benchmarks --help``. The code lives in ``xpcnn.bench``."""
