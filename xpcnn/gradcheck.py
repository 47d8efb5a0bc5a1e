"""Numerical gradient checks for any forward/backward pair (float64, central differences).

    >>> from xpcnn import functional as F, gradcheck
    >>> gradcheck(F.conv2d_forward, F.conv2d_backward, (x, w, b), forward_kwargs={"padding": 1})

The pair follows the xpcnn convention: ``forward(*inputs, **forward_kwargs) -> (out, cache)`` and
``backward(dout, cache) -> grads`` with one gradient per input, in order (a single array when
there is one input). For a loss ``f(z) -> (loss, dz)``, pass ``backward=lambda d, dz: d * dz``.

The scalar being differentiated is ``L = Σ out ⊙ dout`` for a random ``dout``. Two modes:

- ``"direction"`` (default, any size): for a random direction v, compare Σ grad ⊙ v with
  (L(x + εv) - L(x - εv)) / 2ε: two forward calls per input, whatever its size.
- ``"elementwise"`` (small inputs): every element of every gradient, two forward calls each.

An entry passes when |analytic - numerical| <= atol + rtol * max(|analytic|, |numerical|) plus the
rounding floor of the difference quotient, 32 * 2^-52 * |L| / eps.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import array_api_compat

from .backend import to_numpy

_MAX_ELEMENTWISE = 4096
_ROUNDOFF_ULPS = 32


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def gradcheck(
    forward: Callable,
    backward: Callable,
    inputs: Sequence[Any],
    *,
    forward_kwargs: dict | None = None,
    wrt: Sequence[int] | None = None,
    mode: str = "direction",
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    seed: int = 0,
) -> dict:
    """Check ``backward`` against central differences of ``forward``; raise GradcheckError if they differ.

    inputs: arrays of one backend in float64 (``None`` entries, e.g. a missing bias, are skipped).
    wrt: indices of the inputs to check (default: every float input whose gradient is not None).
    Returns a report ``{index: largest relative error}``.
    """
    if mode not in ("direction", "elementwise"):
        raise ValueError(f"gradcheck: mode must be 'direction' or 'elementwise', got {mode!r}")
    inputs = list(inputs)
    kwargs = dict(forward_kwargs or {})
    arrays = [a for a in inputs if a is not None]
    if not arrays:
        raise ValueError("gradcheck: inputs holds no array")
    xp = array_api_compat.array_namespace(*arrays)
    for index, a in enumerate(inputs):
        if a is not None and xp.isdtype(a.dtype, "real floating") and a.dtype != xp.float64:
            raise TypeError(f"gradcheck: input {index} has dtype {a.dtype}; numerical checks need float64")
    rng = np.random.default_rng(seed)

    out, cache = _split(forward(*inputs, **kwargs))
    device = array_api_compat.device(out)
    dout = xp.asarray(rng.standard_normal(tuple(out.shape)), dtype=out.dtype, device=device)
    grads = backward(dout, cache)
    grads = list(grads) if isinstance(grads, (tuple, list)) else [grads]
    if wrt is None:
        wrt = [i for i, a in enumerate(inputs)
               if a is not None and i < len(grads) and grads[i] is not None
               and xp.isdtype(a.dtype, "real floating")]

    largest_objective = [0.0]

    def objective(position: int, host_value: np.ndarray) -> float:
        trial = list(inputs)
        trial[position] = xp.asarray(host_value, dtype=xp.float64, device=device)
        value, _ = _split(forward(*trial, **kwargs))
        result = float(xp.sum(value * dout))
        largest_objective[0] = max(largest_objective[0], abs(result))
        return result

    report = {}
    for position in wrt:
        if position >= len(grads) or grads[position] is None:
            raise GradcheckError(f"gradcheck: backward returned no gradient for input {position}")
        base = to_numpy(inputs[position]).astype(np.float64)
        analytic = to_numpy(grads[position]).astype(np.float64)
        if analytic.shape != base.shape:
            raise GradcheckError(
                f"gradcheck: gradient {position} has shape {analytic.shape}, input has {base.shape}")
        if mode == "direction":
            v = rng.standard_normal(base.shape)
            numeric = (objective(position, base + eps * v) - objective(position, base - eps * v)) / (2 * eps)
            expected, got = np.array([numeric]), np.array([float(np.sum(analytic * v))])
        else:
            if base.size > _MAX_ELEMENTWISE:
                raise ValueError(f"gradcheck: elementwise mode is for inputs of at most {_MAX_ELEMENTWISE} "
                                 f"elements, input {position} has {base.size}; use mode='direction'")
            expected = np.zeros(base.shape)
            for flat in range(base.size):
                step = np.zeros(base.size)
                step[flat] = eps
                step = step.reshape(base.shape)
                expected.flat[flat] = (objective(position, base + step) - objective(position, base - step)) / (2 * eps)
            got = analytic
        scale = np.maximum(np.abs(expected), np.abs(got))
        error = np.abs(expected - got)
        # a difference quotient cannot resolve less than the rounding error of L itself, |L| * 2^-52 / eps
        roundoff = _ROUNDOFF_ULPS * np.finfo(np.float64).eps * largest_objective[0] / eps
        worst = float(np.max(error / np.maximum(scale, 1e-300))) if error.size else 0.0
        if np.any(error > atol + roundoff + rtol * scale):
            where = int(np.argmax(error - rtol * scale))
            raise GradcheckError(
                f"gradcheck: gradient of input {position} disagrees ({mode}): analytic "
                f"{got.flat[where]:.10g}, numerical {expected.flat[where]:.10g}, "
                f"relative error {worst:.3g} > rtol {rtol:g}"
            )
        report[position] = worst
    return report


def _split(result):
    if isinstance(result, tuple) and len(result) == 2:
        return result
    raise TypeError("gradcheck: forward must return (out, cache)")
