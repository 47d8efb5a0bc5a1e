#!/usr/bin/env bash
# The GPU check (docs/gpu.md, "The GPU check"): on a machine with an NVIDIA GPU, install the wheels carried
# in .whl/ (or $XPCNN_WHEELS), then run python -m benchmarks.gpu with these arguments. Without a GPU it
# stops at once with "gpu_check: no GPU present (...)" and exit status 0, having run and written nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no GPU present (nvidia-smi finds no NVIDIA GPU); nothing was run and no results were written"
    exit 0
fi
wheels=${XPCNN_WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
    site=${TMPDIR:-/tmp}/xpcnn-gpu-check-site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" -m benchmarks.gpu "$@"
