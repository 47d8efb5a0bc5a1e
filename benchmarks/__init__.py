"""xpcnn's benchmark suite against PyTorch (``python -m benchmarks --help``); it lives outside the installed package."""
