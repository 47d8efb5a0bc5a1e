"""The worked examples. Each computes with xpcnn's ops on the chosen backend (float64) and checks
its hand-written sums against them, so the printed formulas and the library can never disagree."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from .. import config, functional as F, reference as R
from ..functional import winograd
from ..checks import positive_int
from .. import optim
from ..backend import resolve, to_backend, to_numpy
from ..layers import Conv2D, Dense, Flatten, MaxPool2D, Parameter, ReLU, Residual
from ..model import Sequential
from .lesson import Lesson, grid, num, scalar
from .trace import trace


class _On:
    """Moves host values to the lesson's backend in float64, and back."""

    def __init__(self, backend):
        self.backend = resolve(backend)

    def __call__(self, value) -> Any:
        return to_backend(np.asarray(value, dtype=np.float64), self.backend)


def _check(lesson: Lesson, what: str, by_hand, by_op) -> None:
    """Compare a hand-written (or plain-loop) value with the op's result and say so in the lesson: ✓, or
    ✗ followed by an AssertionError naming both values."""
    if not np.allclose(np.asarray(by_hand, dtype=np.float64), to_numpy(by_op), rtol=1e-9, atol=1e-12):
        line = f"  check: {what} differs from xpcnn's result ✗"
        lesson.say(line)
        raise AssertionError(f"{line.strip()}: expected {by_hand}, xpcnn's {to_numpy(by_op)}")
    lesson.say(f"  check: {what} equals xpcnn's result ✓")


def _product_sum(pairs) -> tuple[str, float]:
    """'a·b + c·d' and its value, for pairs of numbers."""
    pairs = [(float(a), float(b)) for a, b in pairs]
    text = " + ".join(f"{num(a)}·{num(b)}" if b >= 0 else f"{num(a)}·({num(b)})" for a, b in pairs)
    return text, float(sum(a * b for a, b in pairs))


# ----------------------------------------------------------------------------- 1
def conv_mse(backend="numpy", lr: float = 0.01, target: float = 10.0) -> Lesson:
    lesson = Lesson("conv-mse", "conv-mse: one 2x2 kernel, one output, squared error")
    on = _On(backend)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    w = np.array([[0.1, 0.2], [0.3, 0.4]])
    b = 0.5
    lesson.say(f"image x =\n{grid(x)}", f"kernel w =\n{grid(w)}", f"bias b = {num(b)}, target y = {num(target)}, "
               f"learning rate {num(lr)}; loss L = 1/2 (O - y)^2")
    weight, bias = Parameter(on(w.reshape(1, 1, 2, 2))), Parameter(on([b]))
    image = on(x.reshape(1, 1, 2, 2))

    def forward():
        out, cache = F.conv2d_forward(image, weight.data, bias.data)
        mse, dmse = F.mse_loss(out, on([[[[target]]]]))
        return out, cache, 0.5 * mse, 0.5 * dmse

    out, cache, loss, d_out = forward()
    o = scalar(out)
    lesson.step("Forward: valid convolution to a single output")
    lesson.say("O = x11 w11 + x12 w12 + x21 w21 + x22 w22 + b")
    text, value = _product_sum(zip(x.ravel(), w.ravel()))
    lesson.say(f"  = {text} + {num(b)} = {num(o)}")
    _check(lesson, "O", value + b, out)
    lesson.say(f"L = 1/2 (O - y)^2 = 1/2 ({num(o)} - {num(target)})^2 = {num(loss)}")
    lesson.step("Backward")
    dx, dw, db = F.conv2d_backward(d_out, cache)
    lesson.say(f"dL/dO = O - y = {num(o)} - {num(target)} = {num(d_out)}")
    lesson.say("dL/dw_ij = (O - y) x_ij:")
    names = ["11", "12", "21", "22"]
    for name, xi, g in zip(names, x.ravel(), to_numpy(dw).ravel()):
        lesson.say(f"  dL/dw{name} = {num(d_out)}·{num(xi)} = {num(g)}")
    _check(lesson, "dL/dw", scalar(d_out) * x, to_numpy(dw)[0, 0])
    lesson.say(f"dL/db = O - y = {num(db)}")
    lesson.step("Update: w <- w - lr dL/dw, b <- b - lr dL/db")
    weight.grad, bias.grad = dw, db
    old_w, old_b = to_numpy(weight.data).ravel().copy(), float(to_numpy(bias.data)[0])
    optim.SGD([weight, bias], lr=lr).step()
    for name, before, g, after in zip(names, old_w, to_numpy(dw).ravel(), to_numpy(weight.data).ravel()):
        lesson.say(f"  w{name} = {num(before)} - {num(lr)}·({num(g)}) = {num(after)}")
    lesson.say(f"  b = {num(old_b)} - {num(lr)}·({num(db[0])}) = {num(bias.data[0])}")
    out2, _, loss2, _ = forward()
    lesson.step("Forward again")
    text, _ = _product_sum(zip(x.ravel(), to_numpy(weight.data).ravel()))
    lesson.say(f"O = {text} + {num(bias.data[0])} = {num(out2)}")
    direction = "down" if scalar(loss2) < scalar(loss) else "UP: the learning rate is too large"
    lesson.say(f"L = 1/2 ({num(out2)} - {num(target)})^2 = {num(loss2)}  (was {num(loss)}: {direction})")
    lesson.keep(O=out, loss=loss, dO=d_out, dw=to_numpy(dw)[0, 0], db=db, w_new=to_numpy(weight.data)[0, 0],
                b_new=bias.data, O_new=out2, loss_new=loss2)
    return lesson


# ----------------------------------------------------------------------------- 2
DENSE_WEIGHT = [[0.6], [-0.4]]
DENSE_BIAS = [0.05, 0.15]


def conv_relu_dense_softmax(backend="numpy", lr: float = 0.1, target: int = 0, wrong_label: bool = False) -> Lesson:
    lesson = Lesson("conv-relu-dense-softmax", "conv-relu-dense-softmax: conv -> ReLU -> dense 1->2 -> softmax "
                    "-> cross-entropy")
    if target not in (0, 1):
        raise ValueError(f"conv-relu-dense-softmax: target must be class 0 or 1, got {target!r}")
    read = 1 - target if wrong_label else target   # the class the loss is read off after the step
    on = _On(backend)
    x = np.array([[0.2, 0.8], [0.6, 0.1]])
    k = np.array([[0.5, -0.3], [0.2, 0.4]])
    params = {"k": Parameter(on(k.reshape(1, 1, 2, 2))), "c": Parameter(on([0.1])),
              "W": Parameter(on(DENSE_WEIGHT)), "b": Parameter(on(DENSE_BIAS))}
    image = on(x.reshape(1, 1, 2, 2))
    lesson.say(f"image x =\n{grid(x)}", f"kernel k =\n{grid(k)}", "conv bias c = 0.1",
               f"dense W = {np.asarray(DENSE_WEIGHT).ravel().tolist()} (one input, two outputs), "
               f"dense b = {DENSE_BIAS}", f"learning rate {num(lr)}")

    def forward():
        conv, conv_cache = F.conv2d_forward(image, params["k"].data, params["c"].data)
        act, act_cache = F.relu_forward(conv)
        flat = xp_reshape(act)
        z, dense_cache = F.linear_forward(flat, params["W"].data, params["b"].data)
        p, _ = F.softmax_forward(z)
        return conv, act, flat, z, p, (conv_cache, act_cache, dense_cache)

    def xp_reshape(a):
        return resolve(backend).xp.reshape(a, (1, 1))

    def cross_entropy(z, cls):
        return F.softmax_cross_entropy(z, to_backend(np.array([cls]), resolve(backend)))

    conv, act, flat, z, p, caches = forward()
    lesson.step("Forward")
    text, _ = _product_sum(zip(x.ravel(), k.ravel()))
    lesson.say(f"conv = {text} + 0.1 = {num(conv)}", f"ReLU: a = max(0, {num(conv)}) = {num(act)}")
    zs = to_numpy(z).ravel()
    lesson.say(f"z_j = W_j a + b_j: z_0 = {num(DENSE_WEIGHT[0][0])}·{num(act)} + {num(DENSE_BIAS[0])} = {num(zs[0])}, "
               f"z_1 = {num(DENSE_WEIGHT[1][0])}·{num(act)} + {num(DENSE_BIAS[1])} = {num(zs[1])}")
    ps = to_numpy(p).ravel()
    lesson.say(f"softmax: p_j = e^z_j / (e^z_0 + e^z_1): p = [{num(ps[0])}, {num(ps[1])}]")
    loss, dz = cross_entropy(z, target)
    lesson.step(f"Loss and gradient for the target class {target}")
    lesson.say(f"target class: {target}", f"L = -log p_{target} = -log {num(ps[target])} = {num(loss)}")
    dzs = to_numpy(dz).ravel()
    lesson.say(f"dL/dz = p - onehot({target}) = [{num(dzs[0])}, {num(dzs[1])}]")
    lesson.step("Backward through every layer")
    d_flat, dW, db = F.linear_backward(dz, caches[2])
    lesson.say(f"dense: dL/dW = dL/dz · a = [{num(to_numpy(dW)[0, 0])}, {num(to_numpy(dW)[1, 0])}], "
               f"dL/db = dL/dz = [{num(to_numpy(db)[0])}, {num(to_numpy(db)[1])}]")
    lesson.say(f"dense: dL/da = W^T dL/dz = {num(DENSE_WEIGHT[0][0])}·({num(dzs[0])}) + "
               f"{num(DENSE_WEIGHT[1][0])}·({num(dzs[1])}) = {num(d_flat)}")
    d_act = resolve(backend).xp.reshape(d_flat, (1, 1, 1, 1))
    d_conv = F.relu_backward(d_act, caches[1])
    lesson.say(f"ReLU: dL/dconv = dL/da · [conv > 0] = {num(d_flat)}·{1 if scalar(conv) > 0 else 0} "
               f"= {num(d_conv)}")
    _, dk, dc = F.conv2d_backward(d_conv, caches[0])
    lesson.say(f"conv: dL/dk = dL/dconv · x =\n{grid(to_numpy(dk)[0, 0])}", f"conv: dL/dc = {num(dc)}")
    lesson.step(f"SGD step (lr {num(lr)})")
    for name, grad in (("k", dk), ("c", dc), ("W", dW), ("b", db)):
        params[name].grad = grad
    before = {name: to_numpy(p_.data).copy() for name, p_ in params.items()}
    optim.SGD(list(params.values()), lr=lr).step()
    for name in params:
        lesson.say(f"{name}: {np.round(before[name].ravel(), 6).tolist()} -> "
                   f"{np.round(to_numpy(params[name].data).ravel(), 6).tolist()}")
    conv2, act2, _, z2, p2, _ = forward()
    new_loss, _ = cross_entropy(z2, read)
    old_read, _ = cross_entropy(z, read)
    lesson.step("Forward again")
    p2s = to_numpy(p2).ravel()
    lesson.say(f"conv = {num(conv2)}, a = {num(act2)}, p = [{num(p2s[0])}, {num(p2s[1])}]")
    lesson.say(f"target class: {read} (the loss is read off class {read})")
    went = "down" if scalar(new_loss) < scalar(old_read) else "UP"
    lesson.say(f"L = -log p_{read}: {num(old_read)} -> {num(new_loss)} ({went})")
    if wrong_label:
        lesson.say("", f"MISMATCH: the gradient was computed for class {target}, but the loss is read off class "
                   f"{read}. The step raised p_{target}, so p_{read} fell and this 'loss' went up. Take the "
                   "gradient and read the loss with the same label.")
    lesson.keep(conv=conv, relu=act, z=z, p=p, loss=loss, dz=dz, dW=dW, db=db, da=d_flat, dconv=d_conv,
                dk=to_numpy(dk)[0, 0], dc=dc, loss_before_read=old_read, loss_after=new_loss, p_after=p2)
    return lesson


# ----------------------------------------------------------------------------- 3
def conv_backprop(backend="numpy") -> Lesson:
    lesson = Lesson("conv-backprop", "conv-backprop: the three backward formulas of a convolution, term by term")
    on = _On(backend)
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    delta = np.array([[0.1, -0.2], [0.3, 0.4]])
    lesson.say(f"input a (3x3) =\n{grid(a)}", f"kernel w (2x2) =\n{grid(w)}",
               f"output delta d = dL/dO (2x2), given =\n{grid(delta)}")
    out, cache = F.conv2d_forward(on(a.reshape(1, 1, 3, 3)), on(w.reshape(1, 1, 2, 2)))
    lesson.step("Forward: O_mn = sum_kl a_(m+k)(n+l) w_kl")
    lesson.say(f"O =\n{grid(to_numpy(out)[0, 0])}")
    da, dw, _ = F.conv2d_backward(on(delta.reshape(1, 1, 2, 2)), cache)
    da_np, dw_np = to_numpy(da)[0, 0], to_numpy(dw)[0, 0]
    lesson.step("dL/da_ij: every output that a_ij touched sends back delta times the weight that touched it")
    by_hand = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            terms = [(m, n) for m in range(2) for n in range(2) if 0 <= i - m < 2 and 0 <= j - n < 2]
            symbols = " + ".join(f"d{m + 1}{n + 1} w{i - m + 1}{j - n + 1}" for m, n in terms)
            text, by_hand[i, j] = _product_sum([(delta[m, n], w[i - m, j - n]) for m, n in terms])
            lesson.say(f"dL/da{i + 1}{j + 1} = {symbols} = {text} = {num(da_np[i, j])}")
    loops, _, _ = R.conv2d_backward(delta.reshape(1, 1, 2, 2), a.reshape(1, 1, 3, 3), w.reshape(1, 1, 2, 2))
    _check(lesson, "every dL/da_ij of xpcnn.reference's plain loops", loops[0, 0], da_np)
    _check(lesson, "every dL/da_ij written out above", by_hand, da_np)
    lesson.step("The same as a full convolution: pad(d) * rot180(w)")
    padded, _ = F.conv2d_forward(on(delta.reshape(1, 1, 2, 2)), on(np.ones((1, 1, 1, 1))), padding=1)
    flipped = w[::-1, ::-1].copy()
    full, _ = F.conv2d_forward(padded, on(flipped.reshape(1, 1, 2, 2)))
    lesson.say(f"d zero-padded by 1 =\n{grid(to_numpy(padded)[0, 0])}", f"rot180(w) =\n{grid(flipped)}",
               f"valid correlation of the two =\n{grid(to_numpy(full)[0, 0])}")
    _check(lesson, "pad(d) * rot180(w)", to_numpy(full)[0, 0], da)
    lesson.step("dW = a ⋆ d: the valid cross-correlation of the input with delta")
    corr, _ = F.conv2d_forward(on(a.reshape(1, 1, 3, 3)), on(delta.reshape(1, 1, 2, 2)))
    for h in range(2):
        for v in range(2):
            text, _ = _product_sum([(delta[m, n], a[m + h, n + v]) for m in range(2) for n in range(2)])
            lesson.say(f"dL/dw{h + 1}{v + 1} = sum_mn d_mn a_(m+{h})(n+{v}) = {text} = {num(dw_np[h, v])}")
    _check(lesson, "a ⋆ d", to_numpy(corr)[0, 0], dw_np)
    lesson.keep(O=to_numpy(out)[0, 0], da=da_np, dw=dw_np, full=to_numpy(full)[0, 0], corr=to_numpy(corr)[0, 0])
    return lesson


# ----------------------------------------------------------------------------- 4
POOL_INPUT = [[9.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 9.0], [1.0, 9.0, 2.0, 3.0], [4.0, 5.0, 9.0, 6.0]]


def pool_backprop(backend="numpy") -> Lesson:
    lesson = Lesson("pool-backprop", "pool-backprop: sending delta back through 2x2 pooling")
    on = _On(backend)
    delta = np.array([[2.0, 8.0], [4.0, 6.0]])
    x = np.array(POOL_INPUT)
    lesson.say(f"delta at the pooling output (2x2) =\n{grid(delta)}")
    _, cache = F.avg_pool2d_forward(on(x.reshape(1, 1, 4, 4)), 2)
    avg = to_numpy(F.avg_pool2d_backward(on(delta.reshape(1, 1, 2, 2)), cache))[0, 0]
    lesson.step("Average pooling: each of the 4 cells of a window receives delta / 4")
    lesson.say(f"dL/dx =\n{grid(avg)}")
    _check(lesson, "delta/4 spread over each window", np.kron(delta / 4, np.ones((2, 2))), avg)
    _, cache = F.max_pool2d_forward(on(x.reshape(1, 1, 4, 4)), 2)
    mx = to_numpy(F.max_pool2d_backward(on(delta.reshape(1, 1, 2, 2)), cache))[0, 0]
    lesson.step("Max pooling: all of delta goes to the maximum of each window, zero elsewhere")
    lesson.say(f"input x (maxima top-left, bottom-right, top-right and bottom-left of their windows) =\n{grid(x)}",
               f"dL/dx =\n{grid(mx)}")
    expected = np.zeros((4, 4))
    for (m, n), value in np.ndenumerate(delta):
        window = x[2 * m:2 * m + 2, 2 * n:2 * n + 2]
        i, j = np.unravel_index(np.argmax(window), (2, 2))
        expected[2 * m + i, 2 * n + j] = value
    _check(lesson, "delta routed to each argmax", expected, mx)
    lesson.keep(avg=avg, max=mx)
    return lesson


# ----------------------------------------------------------------------------- 5
HANDWRITTEN_IMAGE = [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
HANDWRITTEN_FILTERS = [[[1, -1], [1, -1]], [[1, 1], [-1, -1]]]


def handwritten_cnn(backend="numpy", lr: float = 0.5, target: int = 1) -> Lesson:
    lesson = Lesson("handwritten-cnn", "handwritten-cnn: one complete training step of a tiny CNN")
    if target not in (0, 1):
        raise ValueError(f"handwritten-cnn: target must be class 0 or 1, got {target!r}")
    model = Sequential([Conv2D(1, 2, 2), ReLU(), MaxPool2D(2, stride=1), Flatten(), Dense(8, 2)],
                       backend=backend, dtype="float64")
    dense = np.round(np.linspace(-0.4, 0.4, 16).reshape(2, 8), 3)
    model.load_state_dict({"0.weight": np.array(HANDWRITTEN_FILTERS, dtype=np.float64)[:, None],
                           "0.bias": np.zeros(2), "4.weight": dense, "4.bias": np.zeros(2)})
    image = np.array(HANDWRITTEN_IMAGE, dtype=np.float64)
    lesson.say(f"4x4 binary image (a vertical bar) =\n{grid(image)}",
               f"filter 0 (vertical edges) =\n{grid(np.array(HANDWRITTEN_FILTERS[0]))}",
               f"filter 1 (horizontal edges) =\n{grid(np.array(HANDWRITTEN_FILTERS[1]))}",
               "conv 2x2 valid -> ReLU -> max pool 2x2 stride 1 -> flatten (8) -> dense 8->2 -> softmax; "
               f"dense weights =\n{grid(dense)}", f"target class {target}, SGD learning rate {num(lr)}")
    x = image[None, None]
    y = np.array([target])
    steps = trace(model, x, y, lr=lr, max_full=64)
    lesson.lines.extend(steps.lines)
    loss_before = steps.values["loss"]
    optimizer = optim.SGD(model.parameters(), lr=lr)
    optimizer.step()
    logits = model(x)
    loss_after, _ = F.softmax_cross_entropy(logits, model.backend.asarray(y))
    probabilities, _ = F.softmax_forward(logits)
    lesson.step("After the SGD step")
    lesson.say(f"p = {np.round(to_numpy(probabilities).ravel(), 6).tolist()}",
               f"loss {num(loss_before)} -> {num(loss_after)}")
    lesson.keep(loss=loss_before, loss_after=loss_after, logits_after=logits,
                conv_weight_after=model.layers[0].weight.data)
    return lesson


# ----------------------------------------------------------------------------- 6
def multichannel(backend="numpy") -> Lesson:
    lesson = Lesson("multichannel", "multichannel: C_in = 2, C_out = 2")
    on = _On(backend)
    x = np.arange(1.0, 19.0).reshape(2, 3, 3) / 10
    w = np.array([[[[1, 0], [0, -1]], [[0.5, 0.5], [0, 0]]], [[[0, 1], [1, 0]], [[-1, 0], [0, 2]]]], dtype=float)
    b = np.array([0.1, -0.2])
    delta = np.array([[[1.0, -1.0], [0.5, 0.0]], [[0.0, 2.0], [-1.0, 1.0]]])
    lesson.say(*(f"X(ci={c}) =\n{grid(x[c])}" for c in range(2)),
               *(f"W(co={o}, ci={c}) =\n{grid(w[o, c])}" for o in range(2) for c in range(2)), f"b = {b.tolist()}")
    y, cache = F.conv2d_forward(on(x[None]), on(w), on(b))
    y_np = to_numpy(y)[0]
    lesson.step("Forward: Y(co, i, j) = b_co + sum over ci, k, l of X(ci, i+k, j+l) W(co, ci, k, l)")
    co, i, j = 1, 0, 1
    pairs = [(x[c, i + k, j + l], w[co, c, k, l]) for c in range(2) for k in range(2) for l in range(2)]
    text, value = _product_sum(pairs)
    lesson.say(f"Y({co}, {i}, {j}) = {num(b[co])} + {text} = {num(y_np[co, i, j])}")
    _check(lesson, f"Y({co}, {i}, {j})", value + b[co], y_np[co, i, j])
    lesson.say(*(f"Y(co={o}) =\n{grid(y_np[o])}" for o in range(2)))
    _, dw, db = F.conv2d_backward(on(delta[None]), cache)
    dw_np = to_numpy(dw)
    lesson.step("dW(co, ci, h, w) = sum over m, n of delta(co, m, n) X(ci, m+h, n+w)")
    lesson.say(*(f"delta(co={o}) =\n{grid(delta[o])}" for o in range(2)))
    co, ci, h, v = 0, 1, 1, 0
    pairs = [(delta[co, m, n], x[ci, m + h, n + v]) for m in range(2) for n in range(2)]
    text, value = _product_sum(pairs)
    lesson.say(f"dW({co}, {ci}, {h}, {v}) = {text} = {num(dw_np[co, ci, h, v])}")
    _check(lesson, f"dW({co}, {ci}, {h}, {v})", value, dw_np[co, ci, h, v])
    every = np.array([[[[sum(delta[o, m, n] * x[c, m + hh, n + vv] for m in range(2) for n in range(2))
                         for vv in range(2)] for hh in range(2)] for c in range(2)] for o in range(2)])
    lesson.say(*(f"dW(co={o}, ci={c}) =\n{grid(dw_np[o, c])}" for o in range(2) for c in range(2)))
    _check(lesson, "every dW(co, ci, h, w)", every, dw_np)
    lesson.say(f"db(co) = sum of delta(co) = {to_numpy(db).tolist()}")
    lesson.keep(Y=y_np, dW=dw_np, db=db)
    return lesson


# ----------------------------------------------------------------------------- 7
OPTIMIZER_SETTINGS = {
    "SGD": (optim.SGD, {"lr": 0.1}),
    "momentum": (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "Adagrad": (optim.Adagrad, {"lr": 0.5}),
    "RMSprop": (optim.RMSprop, {"lr": 0.05}),
    "Adam": (optim.Adam, {"lr": 0.2}),
}


def optimizers(backend="numpy", steps: int = 25, out: str | None = None) -> Lesson:
    lesson = Lesson("optimizers", "optimizers: one least-squares problem, five optimizers")
    positive_int("optimizers", "steps", steps)
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((8, 2)) * np.array([1.0, 3.0]), 2)
    target = x @ np.array([[2.0], [-3.0]])
    lesson.say("fit y = x w with w = [w1, w2] from w = [0, 0]; data x (8x2) with columns of different scale, "
               "y = 2 x1 - 3 x2; loss = mean squared error",
               *(f"{name}: {cls.__name__}({', '.join(f'{k}={v}' for k, v in kw.items())})"
                 for name, (cls, kw) in OPTIMIZER_SETTINGS.items()))
    on = _On(backend)
    xs, ys = on(x), on(target)
    curves = {}
    for name, (cls, kwargs) in OPTIMIZER_SETTINGS.items():
        weight = Parameter(on(np.zeros((1, 2))))
        optimizer = cls([weight], **kwargs)
        losses = []
        for _ in range(steps + 1):
            pred, cache = F.linear_forward(xs, weight.data)
            loss, dpred = F.mse_loss(pred, ys)
            losses.append(scalar(loss))
            _, weight.grad, _ = F.linear_backward(dpred, cache)
            optimizer.step()
        curves[name] = np.array(losses)
    lesson.step("Loss per step")
    names = list(curves)
    lesson.say("step " + "".join(f"{n:>12s}" for n in names))
    for t in range(steps + 1):
        lesson.say(f"{t:4d} " + "".join(f"{num(curves[n][t]):>12s}" for n in names))
    if out is not None:
        from ..plots import plot_lines
        steps_axis = list(range(steps + 1))
        path = plot_lines({n: (steps_axis, curves[n] + 1e-16) for n in names}, out, "step", "loss (log scale)",
                          log_y=True)
        lesson.say("", f"curves written to {path}")
        lesson.values["png"] = str(path)
    lesson.keep(**{f"loss_{n}": curves[n] for n in names})
    return lesson


# ----------------------------------------------------------------------------- 8
RESIDUAL_W = [[1.0, 2.0], [3.0, 4.0]]
RESIDUAL_S = [[2.0, 0.0], [0.0, -1.0]]


def _vector(values) -> str:
    return "[" + ", ".join(num(v) for v in np.asarray(to_numpy(values), dtype=np.float64).ravel()) + "]"


def residual(backend="numpy") -> Lesson:
    lesson = Lesson("residual", "residual: y = f(x) + x, and the sum rule in the backward pass")
    w, s = np.array(RESIDUAL_W), np.array(RESIDUAL_S)
    x, delta = np.array([1.0, -1.0]), np.array([1.0, 0.5])
    lesson.say(f"block f(x) = W x (a Dense layer without bias), W =\n{grid(w)}", f"x = {_vector(x)}",
               f"delta = dL/dy = {_vector(delta)}")

    def residual_of(*weights) -> Residual:
        """Residual(Dense W[, Dense S]) built on the backend in float64, with the given weights."""
        layer = Residual(*(Dense(2, 2, bias=False) for _ in weights))._materialize(backend, None, "float64")
        for (_, param), value in zip(layer.named_parameters(), weights):
            param.data = to_backend(value, resolve(backend), dtype="float64")
        return layer

    on = _On(backend)
    identity = residual_of(w)
    y = identity(on(x[None]))
    lesson.step("Forward: y = f(x) + x")
    fx = w @ x
    lesson.say(f"f(x) = W x = [{num(w[0, 0])}·{num(x[0])} + {num(w[0, 1])}·({num(x[1])}), "
               f"{num(w[1, 0])}·{num(x[0])} + {num(w[1, 1])}·({num(x[1])})] = {_vector(fx)}",
               f"y = f(x) + x = {_vector(fx)} + {_vector(x)} = {_vector(y)}")
    _check(lesson, "y", fx + x, to_numpy(y)[0])
    dx = identity.backward(on(delta[None]))
    lesson.step("Backward: x reaches y along two paths, so dL/dx is the sum of two gradients")
    through_block = w.T @ delta
    lesson.say(f"through the block:    Wᵀ delta = [{num(w[0, 0])}·{num(delta[0])} + {num(w[1, 0])}·{num(delta[1])}, "
               f"{num(w[0, 1])}·{num(delta[0])} + {num(w[1, 1])}·{num(delta[1])}] = {_vector(through_block)}",
               f"through the identity: delta = {_vector(delta)} (passed on unchanged)",
               f"dL/dx = {_vector(through_block)} + {_vector(delta)} = {_vector(dx)}")
    _check(lesson, "dL/dx = Wᵀ delta + delta", through_block + delta, to_numpy(dx)[0])
    dw = np.outer(delta, x)
    lesson.say(f"the block's own weights see only their path: dL/dW = delta xᵀ =\n{grid(to_numpy(identity.block.weight.grad))}")
    _check(lesson, "dL/dW", dw, identity.block.weight.grad)
    lesson.step("With a shortcut layer s(x) = S x (as a ResNet uses where shapes change): y = f(x) + s(x)")
    shortcut = residual_of(w, s)
    shortcut(on(x[None]))
    dx_shortcut = shortcut.backward(on(delta[None]))
    through_shortcut = s.T @ delta
    lesson.say(f"S =\n{grid(s)}", f"through the shortcut: Sᵀ delta = {_vector(through_shortcut)}",
               f"dL/dx = Wᵀ delta + Sᵀ delta = {_vector(through_block)} + {_vector(through_shortcut)} "
               f"= {_vector(dx_shortcut)}")
    _check(lesson, "dL/dx = Wᵀ delta + Sᵀ delta", through_block + through_shortcut, to_numpy(dx_shortcut)[0])
    lesson.keep(y=y, dx_block=through_block, dx_identity=delta, dx=dx, dW=identity.block.weight.grad,
                dx_shortcut=dx_shortcut)
    return lesson


# ----------------------------------------------------------------------------- 9
WINOGRAD_SIGNAL, WINOGRAD_FILTER = [1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0]


def winograd_lesson(backend="numpy") -> Lesson:
    lesson = Lesson("winograd", "winograd: 2 outputs of a 3-tap filter with 4 multiplications instead of 6")
    on = _On(backend)
    (d0, d1, d2, d3), (g0, g1, g2) = WINOGRAD_SIGNAL, WINOGRAD_FILTER
    lesson.say(f"signal d = {WINOGRAD_SIGNAL}, filter g = {WINOGRAD_FILTER}")
    lesson.step("Directly: each output is 3 products, 6 in all")
    y0_text, y0 = _product_sum([(d0, g0), (d1, g1), (d2, g2)])
    y1_text, y1 = _product_sum([(d1, g0), (d2, g1), (d3, g2)])
    lesson.say(f"y0 = d0 g0 + d1 g1 + d2 g2 = {y0_text} = {num(y0)}", f"y1 = d1 g0 + d2 g1 + d3 g2 = {y1_text} = {num(y1)}")
    lesson.step("F(2, 3): four products of sums; the filter's sums are made once and reused for every tile")
    m = [(d0 - d2) * g0, (d1 + d2) * (g0 + g1 + g2) / 2, (d2 - d1) * (g0 - g1 + g2) / 2, (d1 - d3) * g2]
    lesson.say(f"m1 = (d0 - d2) g0 = ({num(d0 - d2)})·{num(g0)} = {num(m[0])}",
               f"m2 = (d1 + d2) (g0 + g1 + g2)/2 = {num(d1 + d2)}·{num((g0 + g1 + g2) / 2)} = {num(m[1])}",
               f"m3 = (d2 - d1) (g0 - g1 + g2)/2 = {num(d2 - d1)}·{num((g0 - g1 + g2) / 2)} = {num(m[2])}",
               f"m4 = (d1 - d3) g2 = ({num(d1 - d3)})·{num(g2)} = {num(m[3])}",
               f"y0 = m1 + m2 + m3 = {num(m[0] + m[1] + m[2])}  (expand: the halves pair up into d0 g0 + d1 g1 + d2 g2)",
               f"y1 = m2 - m3 - m4 = {num(m[1] - m[2] - m[3])}")
    row = on(np.array(WINOGRAD_SIGNAL).reshape(1, 1, 1, 4))
    direct, _ = F.conv2d_forward(row, on(np.array(WINOGRAD_FILTER).reshape(1, 1, 1, 3)))
    _check(lesson, "y0, y1 from 4 products", [m[0] + m[1] + m[2], m[1] - m[2] - m[3]], to_numpy(direct)[0, 0, 0])
    lesson.step("2-D, F(2x2, 3x3): Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A on a 4x4 tile")
    b_t, g_matrix, a_t = (np.array(t, dtype=float) for t in winograd.TRANSFORMS[2])
    d = np.arange(16.0).reshape(4, 4) % 5 - 1
    g = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    v, u = b_t @ d @ b_t.T, g_matrix @ g @ g_matrix.T
    products = u * v
    y = a_t @ products @ a_t.T
    lesson.say(f"tile d (4x4) =\n{grid(d)}", f"kernel g (3x3) =\n{grid(g)}",
               f"V = Bᵀ d B (additions only) =\n{grid(v)}", f"U = G g Gᵀ (once per kernel) =\n{grid(u)}",
               f"M = U ⊙ V: 16 multiplications =\n{grid(products)}", f"Y = Aᵀ M A (additions only) =\n{grid(y)}")
    with config.using(winograd="off"):
        direct, _ = F.conv2d_forward(on(d.reshape(1, 1, 4, 4)), on(g.reshape(1, 1, 3, 3)))
    _check(lesson, "Y against the 36 products of the direct convolution", y, to_numpy(direct)[0, 0])
    with config.using(winograd="on"):            # the library's own Winograd form, on the same tile
        library, _ = F.conv2d_forward(on(d.reshape(1, 1, 4, 4)), on(g.reshape(1, 1, 3, 3)))
    _check(lesson, "Y against xpcnn's Winograd convolution (xpcnn.functional.winograd)", y, to_numpy(library)[0, 0])
    lesson.step("The count")
    lesson.say("direct: 2x2 outputs x 9 products = 36; F(2x2, 3x3): 4x4 = 16, 2.25x fewer",
               "F(4x4, 3x3): 6x6 = 36 for 4x4 outputs instead of 144, 4x fewer (its constants 1/6, 1/24 round more)",
               "With C_in channels the 16 products of each position k sum over channels: one matrix product per k,",
               "  M[k] = V[k] @ U[k], (tiles, C_in) @ (C_in, C_out), all 16 batched (xpcnn.functional.winograd).")
    lesson.keep(y_direct=[y0, y1], m=m, V=v, U=u, M=products, Y=y, Y_direct=to_numpy(direct)[0, 0])
    return lesson


EXAMPLES: dict[str, tuple[str, Callable[..., Lesson]]] = {
    "conv-mse": ("a 2x2 kernel on a 2x2 image, squared error, one update", conv_mse),
    "conv-relu-dense-softmax": ("conv, ReLU, dense, softmax and cross-entropy; which label the loss is read for",
                                conv_relu_dense_softmax),
    "conv-backprop": ("dL/da as sums of delta*w, as pad(delta) * rot180(W); dW = a ⋆ delta", conv_backprop),
    "pool-backprop": ("delta through average and max pooling", pool_backprop),
    "handwritten-cnn": ("a complete training step of a tiny CNN, every array shown", handwritten_cnn),
    "multichannel": ("two input and two output channels, one element then all", multichannel),
    "optimizers": ("SGD, momentum, Adagrad, RMSprop and Adam on one problem", optimizers),
    "residual": ("a skip connection: the two gradient paths of x add up (the sum rule)", residual),
    "winograd": ("why 16 multiplications instead of 36 give the same 2x2 outputs (F(2x2, 3x3))", winograd_lesson),
}


def run(name: str, backend: str = "numpy", **options) -> Lesson:
    """Run the worked example ``name`` on ``backend``; ``options`` are the example's own (lr, target, ...)."""
    if name not in EXAMPLES:
        raise ValueError(f"teach: unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    function = EXAMPLES[name][1]
    accepted = [p for p in inspect.signature(function).parameters if p != "backend"]
    unknown = [key for key, value in options.items() if value is not None and key not in accepted]
    if unknown:
        raise ValueError(f"teach {name}: option {', '.join(unknown)} does not apply; it takes "
                         f"{', '.join(accepted) or 'no options'}")
    return function(backend, **{k: v for k, v in options.items() if v is not None and k in accepted})
