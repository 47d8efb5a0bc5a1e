"""One parameter group's parameters updated together on flat arrays: one kernel per operation of the
update formula, whatever the number of parameters.

The group's parameters that have a gradient and share one library, device and dtype (and one step
count) are joined once into a flat θ and flat state; each step joins their gradients, runs the formula
once, and makes each ``p.data`` its slice of the new θ (a view on NumPy, CuPy and PyTorch; a copy on
JAX). Otherwise each parameter is updated on its own, with the same formula.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import array_api_compat

from ..backend import like, same_place
from ..functional._launch import launch_bound


def join(xp, arrays: list, dtype, bounds: list[tuple[int, int]] | None = None) -> Any:
    """``arrays`` cast to ``dtype`` and flattened into one 1-D array (a reshape, no copy, for one array).

    ``bounds`` (each array's [start, stop) in the result) selects the form for launch-bound libraries
    (GPUs): an empty array and one slice copy per array, since CuPy's concatenate of more than 8 arrays
    copies a table of their pointers from the host. Otherwise (and on JAX, whose arrays are immutable)
    one concatenate, the fastest form on a CPU."""
    cast = [xp.astype(a, dtype, copy=False) for a in arrays]
    if bounds is None or len(cast) == 1 or not launch_bound(cast[0]) or array_api_compat.is_jax_namespace(xp):
        flat = [xp.reshape(a, (-1,)) for a in cast]
        return flat[0] if len(flat) == 1 else xp.concat(flat)
    out = xp.empty((bounds[-1][1],), dtype=dtype, device=array_api_compat.device(cast[0]))
    for a, (start, stop) in zip(cast, bounds):
        # through a view of the slice shaped as the array: one strided copy, where flattening a transposed
        # gradient first (a conv weight's) would copy it twice
        xp.reshape(out[start:stop], tuple(a.shape))[...] = a
    return out


def follow(state: dict[str, Any], data: Any) -> None:
    """Move a parameter's state arrays to the parameter's library and device (after the model moved)."""
    for name, value in state.items():
        if name != "step" and not same_place(value, data):
            state[name] = like(value, data)


@dataclass
class _Fused:
    """The flat arrays of the parameters ``active``: their shapes and bounds, the namespace, θ and the
    state (``"step"`` an int)."""

    active: tuple[int, ...]
    shapes: list[tuple]
    bounds: list[tuple[int, int]]
    xp: Any
    theta: Any
    state: dict[str, Any]


class FlatGroup:
    """The parameters of one group and their per-parameter state; :meth:`gather` then :meth:`apply` make
    one step. Built once per group; the flat arrays are rebuilt only when the set of parameters with a
    gradient changes or a parameter moved (``p.data`` is no longer the array this group wrote)."""

    def __init__(self, params: list) -> None:
        self.params = params
        self.load([{} for _ in params])

    def load(self, states: list[dict[str, Any]]) -> None:
        """Take ``states`` (one dict per parameter) as the state; forget the flat arrays and the places."""
        self.states, self._fused, self._active = states, None, None
        self._written: list[Any] = [None] * len(self.params)     # the array last written into each p.data
        self._namespaces: list[Any] = [None] * len(self.params)

    def per_parameter(self) -> list[dict[str, Any]]:
        """The state of each parameter, the flat arrays split back (views where the library has them)."""
        fused, self._fused, self._active = self._fused, None, None
        if fused is not None:
            for index, shape, (start, stop) in zip(fused.active, fused.shapes, fused.bounds):
                self.states[index] = {name: value if name == "step" else fused.xp.reshape(value[start:stop], shape)
                                      for name, value in fused.state.items()}
        return self.states

    def namespace(self) -> Any:
        """The namespace of the parameters the last :meth:`gather` found with a gradient."""
        return self._fused.xp if self._fused is not None else self._namespaces[self._active[0]]

    def gather(self) -> list:
        """This step's gradients, each in its parameter's dtype: one flat array when the parameters with a
        gradient can share flat arrays, else one per parameter (none when no parameter has a gradient)."""
        params = self.params
        active = tuple(i for i, p in enumerate(params) if p.grad is not None and p.requires_grad)
        if active != self._active or any(params[i].data is not self._written[i] for i in active):
            self._fused = self._fuse(active)
            self._active = active
        if self._fused is not None:
            fused = self._fused
            return [join(fused.xp, [params[i].grad for i in active], fused.theta.dtype, fused.bounds)]
        grads = []
        for i in active:
            p = params[i]
            if p.data is not self._written[i]:         # first step, or the model moved or was reloaded
                self._namespaces[i] = array_api_compat.array_namespace(p.data)
                follow(self.states[i], p.data)
            grads.append(self._namespaces[i].astype(p.grad, p.data.dtype, copy=False))
        return grads

    def apply(self, update: Callable, grads: list, hp: dict[str, Any]) -> None:
        """``update(xp, theta, grad, state, hp)`` with the gradients :meth:`gather` returned (scaled or not)."""
        fused = self._fused
        if fused is not None:
            fused.state["step"] += 1
            fused.theta = update(fused.xp, fused.theta, grads[0], fused.state, hp)
            for i, shape, (start, stop) in zip(fused.active, fused.shapes, fused.bounds):
                self.params[i].data = self._written[i] = fused.xp.reshape(fused.theta[start:stop], shape)
            return
        for i, grad in zip(self._active, grads):
            p, state = self.params[i], self.states[i]
            state["step"] = state.get("step", 0) + 1
            p.data = self._written[i] = update(self._namespaces[i], p.data, grad, state, hp)

    def _fuse(self, active: tuple[int, ...]) -> _Fused | None:
        """Flat arrays for the parameters ``active``, or None when they cannot share them: different
        libraries, devices or dtypes, or states of different histories."""
        self.per_parameter()
        datas = [self.params[i].data for i in active]
        if not datas:
            return None
        try:
            xp = array_api_compat.array_namespace(*datas)
        except TypeError:
            return None
        first, states = datas[0], [self.states[i] for i in active]
        if any(not same_place(d, first) or d.dtype != first.dtype for d in datas) \
                or any(state.keys() != states[0].keys() or state.get("step") != states[0].get("step")
                       for state in states):
            return None
        for i, state, data in zip(active, states, datas):
            follow(state, data)
            self._namespaces[i] = xp
        ends = list(itertools.accumulate(math.prod(d.shape) for d in datas))
        bounds = list(zip([0] + ends[:-1], ends))
        state = {name: join(xp, [s[name] for s in states], first.dtype, bounds) for name in states[0] if name != "step"}
        state["step"] = states[0].get("step", 0)
        return _Fused(active, [tuple(d.shape) for d in datas], bounds, xp, join(xp, datas, first.dtype, bounds), state)
