"""Plain-loop NumPy float64 versions of every op: the textbook form.

These loop over batch, channels and pixels exactly as the formulas read. They are the
oracle the tests compare the fast ops against, and the text the teaching examples show.
They are slow on purpose and never used on a hot path.

Padding arguments take an int, a pair, or (top, bottom, left, right).
"""
from __future__ import annotations

import numpy as np


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def _pad(x, pads, value=0.0):
    t, b, l, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


# ----------------------------------------------------------------------------- convolution
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n,o,p,q] = b[o] + Σ_{c,i,j} x_pad[n, g*Cg + c, p*s + i*d, q*s + j*d] · w[o,c,i,j]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    (sh, sw), (dh, dw), pads = _pair(stride), _pair(dilation), _pads(padding)
    xp = _pad(x, pads)
    n, c_in, hp, wp = xp.shape
    c_out, c_g, kh, kw = w.shape
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    out_per_group = c_out // groups
    y = np.zeros((n, c_out, oh, ow))
    for ni in range(n):
        for o in range(c_out):
            g = o // out_per_group
            for p in range(oh):
                for q in range(ow):
                    total = 0.0 if b is None else float(b[o])
                    for c in range(c_g):
                        for i in range(kh):
                            for j in range(kw):
                                total += xp[ni, g * c_g + c, p * sh + i * dh, q * sw + j * dw] * w[o, c, i, j]
                    y[ni, o, p, q] = total
    return y


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """Returns (dx, dw, db): each output gradient δ[n,o,p,q] flows back to the inputs and weights it touched.

    dw[o,c,i,j] = Σ_{n,p,q} δ[n,o,p,q] · x_pad[n, g*Cg + c, p*s + i*d, q*s + j*d]   (dW = a ⋆ δ)
    dx_pad[n, g*Cg + c, p*s + i*d, q*s + j*d] += δ[n,o,p,q] · w[o,c,i,j]        (δ_prev = pad(δ) ∗ rot180(W))
    db[o] = Σ_{n,p,q} δ[n,o,p,q]
    """
    dy, x, w = (np.asarray(a, np.float64) for a in (dy, x, w))
    (sh, sw), (dh, dw_), pads = _pair(stride), _pair(dilation), _pads(padding)
    xp = _pad(x, pads)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    n, c_out, oh, ow = dy.shape
    _, c_g, kh, kw = w.shape
    out_per_group = c_out // groups
    for ni in range(n):
        for o in range(c_out):
            g = o // out_per_group
            for p in range(oh):
                for q in range(ow):
                    d = dy[ni, o, p, q]
                    for c in range(c_g):
                        for i in range(kh):
                            for j in range(kw):
                                r, s = p * sh + i * dh, q * sw + j * dw_
                                dw[o, c, i, j] += d * xp[ni, g * c_g + c, r, s]
                                dxp[ni, g * c_g + c, r, s] += d * w[o, c, i, j]
    t, b, l, r_ = pads
    dx = dxp[:, :, t:dxp.shape[2] - b, l:dxp.shape[3] - r_]
    return dx, dw, dy.sum(axis=(0, 2, 3))


# ----------------------------------------------------------------------------- pooling
def _pool_windows(x, kernel_size, stride, padding, value):
    (kh, kw) = _pair(kernel_size)
    (sh, sw) = _pair(kernel_size if stride is None else stride)
    pads = _pads(padding)
    xp = _pad(np.asarray(x, np.float64), pads, value)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    return xp, (kh, kw), (sh, sw), pads, (oh, ow)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    xp, (kh, kw), (sh, sw), _, (oh, ow) = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    n, c = xp.shape[:2]
    y = np.zeros((n, c, oh, ow))
    for ni in range(n):
        for ci in range(c):
            for p in range(oh):
                for q in range(ow):
                    y[ni, ci, p, q] = xp[ni, ci, p * sh:p * sh + kh, q * sw:q * sw + kw].max()
    return y


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """δ goes to each window's maximum; overlapping windows add. The cell is torch's: walk the window's
    real (unpadded) cells in row-major order, starting at the first; a larger value or a NaN takes over
    (so a tie keeps the first maximum, a NaN wins, and padding never does)."""
    xp, (kh, kw), (sh, sw), (t, b, l, r), (oh, ow) = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    height, width = np.shape(x)[2], np.shape(x)[3]
    dxp = np.zeros_like(xp)
    n, c = xp.shape[:2]
    for ni in range(n):
        for ci in range(c):
            for p in range(oh):
                for q in range(ow):
                    best = None
                    for i in range(kh):
                        for j in range(kw):
                            row, col = p * sh + i, q * sw + j
                            if not (t <= row < t + height and l <= col < l + width):
                                continue                      # a padded cell
                            value = xp[ni, ci, row, col]
                            if best is None or value > xp[ni, ci, best[0], best[1]] or np.isnan(value):
                                best = (row, col)
                    dxp[ni, ci, best[0], best[1]] += dy[ni, ci, p, q]
    return dxp[:, :, t:dxp.shape[2] - b, l:dxp.shape[3] - r]


def _avg_counts(shape, kernel_size, stride, padding, count_include_pad):
    """(map of real cells padded with zeros, None) or (None, kH*kW) when padding counts."""
    ones, kernel, _, _, _ = _pool_windows(np.ones((1, 1) + tuple(shape[2:])), kernel_size, stride, padding, 0.0)
    return (None, kernel[0] * kernel[1]) if count_include_pad else (ones, None)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    xp, (kh, kw), (sh, sw), _, (oh, ow) = _pool_windows(x, kernel_size, stride, padding, 0.0)
    real, size = _avg_counts(np.shape(x), kernel_size, stride, padding, count_include_pad)
    n, c = xp.shape[:2]
    y = np.zeros((n, c, oh, ow))
    for ni in range(n):
        for ci in range(c):
            for p in range(oh):
                for q in range(ow):
                    rows, cols = slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw)
                    count = size if real is None else real[0, 0, rows, cols].sum()
                    y[ni, ci, p, q] = xp[ni, ci, rows, cols].sum() / count
    return y


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Each cell of a window receives δ / |window|."""
    xp, (kh, kw), (sh, sw), (t, b, l, r), (oh, ow) = _pool_windows(x, kernel_size, stride, padding, 0.0)
    real, size = _avg_counts(np.shape(x), kernel_size, stride, padding, count_include_pad)
    dxp = np.zeros_like(xp)
    n, c = xp.shape[:2]
    for ni in range(n):
        for ci in range(c):
            for p in range(oh):
                for q in range(ow):
                    rows, cols = slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw)
                    count = size if real is None else real[0, 0, rows, cols].sum()
                    dxp[ni, ci, rows, cols] += dy[ni, ci, p, q] / count
    return dxp[:, :, t:dxp.shape[2] - b, l:dxp.shape[3] - r]


# ----------------------------------------------------------------------------- dense
def linear(x, w, b=None):
    """y[n,o] = Σ_i x[n,i] w[o,i] + b[o]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    y = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = sum(x[n, i] * w[o, i] for i in range(x.shape[1])) + (0.0 if b is None else b[o])
    return y


def linear_backward(dy, x, w):
    """dx[n,i] = Σ_o δ[n,o] w[o,i];  dw[o,i] = Σ_n δ[n,o] x[n,i];  db[o] = Σ_n δ[n,o]."""
    dy, x, w = (np.asarray(a, np.float64) for a in (dy, x, w))
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            dx[n] += dy[n, o] * w[o]
            dw[o] += dy[n, o] * x[n]
    return dx, dw, dy.sum(axis=0)


# ----------------------------------------------------------------------------- activations
def relu(x):
    return np.where(x > 0, x, 0.0)


def relu_backward(dy, x):
    return np.where(x > 0, dy, 0.0)


def leaky_relu(x, negative_slope=0.01):
    return np.where(x > 0, x, negative_slope * x)


def leaky_relu_backward(dy, x, negative_slope=0.01):
    return np.where(x > 0, dy, negative_slope * dy)


def sigmoid(x):
    return np.array([1.0 / (1.0 + np.exp(-v)) if v >= 0 else np.exp(v) / (1.0 + np.exp(v))
                     for v in np.ravel(x)]).reshape(np.shape(x))


def sigmoid_backward(dy, x):
    s = sigmoid(x)
    return dy * s * (1.0 - s)


def tanh(x):
    return np.tanh(x)


def tanh_backward(dy, x):
    return dy * (1.0 - np.tanh(x) ** 2)


def softmax(x):
    """Row-wise softmax of a 2-D array, one row at a time."""
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        e = np.exp(x[n] - x[n].max())
        out[n] = e / e.sum()
    return out


def softmax_backward(dy, x):
    """dx_k = Σ_j δ_j ∂y_j/∂x_k with the Jacobian ∂y_j/∂x_k = y_j (1[j=k] - y_k)."""
    y = softmax(x)
    dx = np.zeros_like(y)
    for n in range(y.shape[0]):
        jacobian = np.diag(y[n]) - np.outer(y[n], y[n])
        dx[n] = jacobian.T @ dy[n]
    return dx


def log_softmax(x):
    """Row by row: log p_k = (x_k - max x) - log Σ_j exp(x_j - max x)."""
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        shifted = x[n] - x[n].max()
        out[n] = shifted - np.log(np.exp(shifted).sum())
    return out


def log_softmax_backward(dy, x):
    """dx_k = δ_k - softmax(x)_k Σ_j δ_j."""
    return dy - softmax(x) * dy.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- batch normalisation
def _channel_statistics(x, c, running_mean, running_var, training):
    """μ and the biased σ² of channel c over its M = N*H*W values (training), else the running ones."""
    if not training:
        return float(running_mean[c]), float(running_var[c])
    values = x[:, c]
    mean = np.sum(values) / values.size
    return mean, np.sum((values - mean) ** 2) / values.size


def batch_norm2d(x, weight=None, bias=None, running_mean=None, running_var=None, training=True, eps=1e-5):
    """y[n,c,h,w] = γ[c] (x[n,c,h,w] - μ[c]) / sqrt(σ²[c] + ε) + β[c], channel by channel; μ and σ² are the
    batch's (mean over the channel's M = N*H*W values, σ² divided by M) in training, the running ones in
    evaluation. γ = 1 and β = 0 when None."""
    x = np.asarray(x, np.float64)
    y = np.zeros_like(x)
    for c in range(x.shape[1]):
        mean, var = _channel_statistics(x, c, running_mean, running_var, training)
        gamma = 1.0 if weight is None else float(weight[c])
        beta = 0.0 if bias is None else float(bias[c])
        y[:, c] = gamma * (x[:, c] - mean) / np.sqrt(var + eps) + beta
    return y


def batch_norm2d_backward(dy, x, weight=None, running_mean=None, running_var=None, training=True, eps=1e-5):
    """Returns (dx, dweight, dbias) by the chain rule through x̂ = (x - μ) / sqrt(σ² + ε), channel by channel:

    dβ = Σ δ,  dγ = Σ δ x̂,  dx̂ = δ γ
    training (μ and σ² depend on x):  dσ² = Σ dx̂ (x - μ) · (-1/2) (σ² + ε)^(-3/2)
        dμ = -Σ dx̂ / sqrt(σ² + ε) + dσ² · (-2/M) Σ (x - μ)
        dx = dx̂ / sqrt(σ² + ε) + dσ² · 2 (x - μ) / M + dμ / M
    evaluation (μ and σ² are constants):  dx = dx̂ / sqrt(σ² + ε)
    """
    dy, x = np.asarray(dy, np.float64), np.asarray(x, np.float64)
    channels = x.shape[1]
    dx, dweight, dbias = np.zeros_like(x), np.zeros(channels), np.zeros(channels)
    for c in range(channels):
        mean, var = _channel_statistics(x, c, running_mean, running_var, training)
        gamma = 1.0 if weight is None else float(weight[c])
        centred, delta, m = x[:, c] - mean, dy[:, c], x[:, c].size
        x_hat = centred / np.sqrt(var + eps)
        dbias[c] = np.sum(delta)
        dweight[c] = np.sum(delta * x_hat)
        dx_hat = delta * gamma
        dx[:, c] = dx_hat / np.sqrt(var + eps)
        if training:
            dvar = np.sum(dx_hat * centred) * -0.5 * (var + eps) ** -1.5
            dmean = -np.sum(dx_hat) / np.sqrt(var + eps) + dvar * -2.0 * np.sum(centred) / m
            dx[:, c] += dvar * 2.0 * centred / m + dmean / m
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- losses
def softmax_cross_entropy(logits, labels):
    """Returns (loss, dlogits): L = -(1/N) Σ_n Σ_k t[n,k] log p[n,k], dL/dz = (p - t)/N."""
    logits = np.asarray(logits, np.float64)
    n, k = logits.shape
    labels = np.asarray(labels)
    target = np.eye(k)[labels] if labels.ndim == 1 else labels.astype(np.float64)
    log_p = log_softmax(logits)
    loss = 0.0
    for i in range(n):
        loss -= sum(target[i, j] * log_p[i, j] for j in range(k))
    return loss / n, (np.exp(log_p) - target) / n


def mse_loss(pred, target):
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    return float(((pred - target) ** 2).mean()), 2.0 * (pred - target) / pred.size
