"""Which form of an op runs on an array: the few-launch forms (for GPUs, where every operation costs a
kernel launch) or the loops measured fastest on CPUs, per ``xpcnn.config``'s ``few_launches``."""
from __future__ import annotations

from typing import Any

import array_api_compat

from .. import config
from ..backend.transfer import on_gpu


def launch_bound(array: Any) -> bool:
    """Whether ops on ``array`` take their few-launch forms (one stacked max-pool reduction, one matrix
    product for the conv input gradient, selects instead of mask products), per ``xpcnn.config``'s
    ``few_launches``: ``"auto"`` (the default) chooses them on GPUs, where every operation costs a kernel
    launch, and on array_api_strict, so that every test run checks them; CPU libraries keep the loops
    measured fastest there. ``"on"`` forces them anywhere (the readiness benchmark counts a GPU's launches
    on CPU tensors that way), ``"off"`` never."""
    mode = config.get().few_launches
    if mode != "auto":
        return mode == "on"
    return on_gpu(array) or type(array).__module__.startswith("array_api_strict")


def host_memory(array: Any) -> bool:
    """Whether ``array`` is a NumPy array: host memory, where reading a value back costs no transfer and no
    wait (an op may then look at its data to skip work, as max pooling's NaN test)."""
    return array_api_compat.is_numpy_array(array)
