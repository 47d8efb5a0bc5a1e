"""The worked examples' numbers, checked against independent derivations (by hand, the loop reference, torch)."""
import numpy as np
import pytest

import xpcnn
from xpcnn import reference as R, teach
from xpcnn.teach.examples import DENSE_BIAS, DENSE_WEIGHT, HANDWRITTEN_FILTERS, HANDWRITTEN_IMAGE


def test_conv_mse_by_hand():
    v = teach.run("conv-mse").values
    x, w = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.1, 0.2], [0.3, 0.4]])
    o = (x * w).sum() + 0.5                                          # 3.5
    assert v["O"] == pytest.approx(3.5) and o == pytest.approx(3.5)
    assert v["loss"] == pytest.approx(0.5 * (3.5 - 10) ** 2)         # 21.125
    np.testing.assert_allclose(v["dw"], -6.5 * x)
    assert v["db"] == pytest.approx(-6.5)
    np.testing.assert_allclose(v["w_new"], w + 0.01 * 6.5 * x)       # [[0.165, 0.33], [0.495, 0.66]]
    assert v["b_new"] == pytest.approx(0.565)
    assert v["loss_new"] == pytest.approx(0.5 * (5.515 - 10) ** 2)  # 10.0576125


def test_conv_relu_dense_softmax_by_hand():
    v = teach.run("conv-relu-dense-softmax").values
    assert v["conv"] == pytest.approx(0.12) and v["relu"] == pytest.approx(0.12)
    z = np.array(DENSE_WEIGHT).ravel() * 0.12 + np.array(DENSE_BIAS)
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(v["z"].ravel(), z)
    np.testing.assert_allclose(v["p"].ravel(), p)
    assert v["loss"] == pytest.approx(-np.log(p[0]))
    dz = p - np.array([1.0, 0.0])
    np.testing.assert_allclose(v["dz"].ravel(), dz)
    np.testing.assert_allclose(v["dW"].ravel(), dz * 0.12)
    assert v["da"] == pytest.approx(np.array(DENSE_WEIGHT).ravel() @ dz)
    np.testing.assert_allclose(v["dk"], (np.array(DENSE_WEIGHT).ravel() @ dz) * np.array([[0.2, 0.8], [0.6, 0.1]]))
    assert v["loss_after"] < v["loss"]                                # right label, small lr: the loss goes down


def test_reading_the_loss_off_the_wrong_label_is_visible():
    lesson = teach.run("conv-relu-dense-softmax", wrong_label=True)
    text = str(lesson)
    assert lesson.values["loss_after"] > lesson.values["loss_before_read"]
    assert "MISMATCH: the gradient was computed for class 0, but the loss is read off class 1" in text
    assert "target class: 0" in text and "target class: 1" in text
    for target in (0, 1):                    # with the right label the loss goes down
        right = teach.run("conv-relu-dense-softmax", target=target)
        assert right.values["loss_after"] < right.values["loss"]
        assert "MISMATCH" not in str(right)


def test_conv_backprop_checks_the_library_against_the_loop_reference():
    text = str(teach.run("conv-backprop"))
    assert "check: every dL/da_ij of xpcnn.reference's plain loops equals xpcnn's result ✓" in text


def test_conv_backprop_prints_a_cross_when_the_library_gradient_is_wrong(monkeypatch):
    import xpcnn.functional as F
    right = F.conv2d_backward

    def wrong(dy, cache, **kwargs):
        dx, dw, db = right(dy, cache, **kwargs)
        return dx * 1.01, dw, db                       # a one-per-cent error in dL/da only

    monkeypatch.setattr(F, "conv2d_backward", wrong)
    with pytest.raises(AssertionError, match="check: every dL/da_ij of xpcnn.reference's plain loops differs from xpcnn's result ✗"):
        teach.run("conv-backprop")


def test_conv_backprop_equals_the_loop_reference():
    v = teach.run("conv-backprop").values
    a = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    delta = np.array([[[[0.1, -0.2], [0.3, 0.4]]]])
    da, dw, _ = R.conv2d_backward(delta, a, w)
    np.testing.assert_allclose(v["da"], da[0, 0])
    np.testing.assert_allclose(v["full"], da[0, 0])
    np.testing.assert_allclose(v["dw"], dw[0, 0])
    np.testing.assert_allclose(v["corr"], dw[0, 0])
    # the corner terms of the written-out sums: dL/da11 = d11 w11, dL/da33 = d22 w22
    assert v["da"][0, 0] == pytest.approx(0.1 * 1.0) and v["da"][2, 2] == pytest.approx(0.4 * 4.0)
    assert "dL/da12 = d11 w12 + d12 w11" in str(teach.run("conv-backprop"))


def test_pool_backprop_matches_the_worked_answer():
    v = teach.run("pool-backprop").values
    np.testing.assert_array_equal(v["avg"], [[0.5, 0.5, 2, 2], [0.5, 0.5, 2, 2], [1, 1, 1.5, 1.5], [1, 1, 1.5, 1.5]])
    np.testing.assert_array_equal(v["max"], [[2, 0, 0, 0], [0, 0, 0, 8], [0, 4, 0, 0], [0, 0, 6, 0]])


def test_handwritten_cnn_step_matches_torch():
    torch = pytest.importorskip("torch")
    v = teach.run("handwritten-cnn").values
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, 1), nn.Flatten(), nn.Linear(8, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(HANDWRITTEN_FILTERS, dtype=torch.float64)[:, None])
        net[0].bias.zero_()
        net[4].weight.copy_(torch.tensor(np.round(np.linspace(-0.4, 0.4, 16).reshape(2, 8), 3)))
        net[4].bias.zero_()
    x = torch.tensor(HANDWRITTEN_IMAGE, dtype=torch.float64)[None, None]
    loss = nn.functional.cross_entropy(net(x), torch.tensor([1]))
    assert v["loss"] == pytest.approx(loss.item(), rel=1e-12)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss.backward()
    opt.step()
    after = nn.functional.cross_entropy(net(x), torch.tensor([1]))
    assert v["loss_after"] == pytest.approx(after.item(), rel=1e-12)
    np.testing.assert_allclose(v["conv_weight_after"], net[0].weight.detach().numpy(), rtol=1e-12)
    assert v["loss_after"] < v["loss"]


def test_multichannel_equals_the_loop_reference():
    v = teach.run("multichannel").values
    x = (np.arange(1.0, 19.0).reshape(1, 2, 3, 3)) / 10
    w = np.array([[[[1, 0], [0, -1]], [[0.5, 0.5], [0, 0]]], [[[0, 1], [1, 0]], [[-1, 0], [0, 2]]]], dtype=float)
    delta = np.array([[[[1.0, -1.0], [0.5, 0.0]], [[0.0, 2.0], [-1.0, 1.0]]]])
    np.testing.assert_allclose(v["Y"], R.conv2d(x, w, np.array([0.1, -0.2]))[0])
    np.testing.assert_allclose(v["dW"], R.conv2d_backward(delta, x, w)[1])


def test_optimizers_descend_and_sgd_matches_plain_gradient_descent():
    v = teach.run("optimizers", steps=20).values
    for name in ("SGD", "momentum", "Adagrad", "RMSprop", "Adam"):
        assert v[f"loss_{name}"][-1] < v[f"loss_{name}"][0] / 2, name
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((8, 2)) * np.array([1.0, 3.0]), 2)
    y = x @ np.array([2.0, -3.0])
    w, losses = np.zeros(2), []
    for _ in range(21):
        residual = x @ w - y
        losses.append(np.mean(residual ** 2))
        w = w - 0.1 * (2 * x.T @ residual / len(y))
    np.testing.assert_allclose(v["loss_SGD"], losses, rtol=1e-10)


@pytest.mark.parametrize("name", list(teach.EXAMPLES))
def test_every_example_gives_the_same_numbers_on_every_backend(backend, name):
    on_numpy, here = teach.run(name).values, teach.run(name, backend=backend.name).values
    assert on_numpy.keys() == here.keys()
    for key in on_numpy:
        np.testing.assert_allclose(here[key], on_numpy[key], rtol=1e-12, atol=1e-14, err_msg=key)


def test_unknown_examples_and_options_are_refused():
    with pytest.raises(ValueError, match="unknown example 'conv'; choose one of conv-mse"):
        teach.run("conv")
    with pytest.raises(ValueError, match="option steps does not apply; it takes lr, target"):
        teach.run("conv-mse", steps=3)


def test_trace_shows_every_layer_and_matches_the_gradients():
    from xpcnn.zoo import lenet
    model = lenet(image_size=8, width=2, dropout=0.0, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    lesson = teach.trace(model, x, np.array([3, 5]), lr=0.1)
    text = str(lesson)
    for index, layer in enumerate(model.layers):
        assert f"[{index}] {layer.describe()}" in text
    assert "target classes [3, 5]" in text and "SGD update -lr*dL/dweight (lr 0.1)" in text
    assert "norm" in text                   # the 2x2x8x8 conv output is summarised, not printed
    from xpcnn import functional as F
    model2 = lenet(image_size=8, width=2, dropout=0.0, seed=0, dtype="float64")
    loss, d = F.softmax_cross_entropy(model2(x), np.array([3, 5]))
    model2.backward(d)
    assert lesson.values["loss"] == pytest.approx(float(loss))
    for (name, p), (_, q) in zip(model.named_parameters(), model2.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, err_msg=name)


def test_trace_does_not_change_the_run_and_shows_the_optimizer_in_use():
    """Tracing before training once changed the run (dropout masks drawn, batch-norm statistics updated)
    and showed an SGD update while the run used Adam."""
    from xpcnn import layers as L, optim
    import xpcnn

    def build():
        model = xpcnn.Sequential([L.Conv2D(1, 3, 3), L.BatchNorm2D(3), L.ReLU(), L.Flatten(), L.Dropout(0.5),
                                  L.Dense(3 * 6 * 6, 4)], seed=0, dtype="float64")
        return model, optim.Adam(model.parameters(), lr=0.002)

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 8, 8)), rng.integers(0, 4, 16)
    traced, traced_optimizer = build()
    plain, plain_optimizer = build()
    text = str(teach.trace(traced, x[:4], y[:4], optimizer=traced_optimizer))
    assert "Adam update of weight (lr 0.002)" in text and "SGD" not in text
    for model, optimizer in ((traced, traced_optimizer), (plain, plain_optimizer)):
        model.fit(x, y, optimizer=optimizer, epochs=2, batch_size=4, seed=1, progress=False, verbose=0)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(traced.state_dict()[key], value, err_msg=key)
    assert traced_optimizer.step_count == plain_optimizer.step_count == 8


def test_residual_shows_the_two_gradient_paths_adding_up():
    lesson = teach.run("residual")
    v = {k: np.asarray(xpcnn.to_numpy(value)) for k, value in lesson.values.items()}
    np.testing.assert_array_equal(v["y"], [[0, -2]])
    np.testing.assert_array_equal(v["dx_block"], [2.5, 4])
    np.testing.assert_array_equal(v["dx_identity"], [1, 0.5])
    np.testing.assert_array_equal(v["dx"], [[3.5, 4.5]])
    np.testing.assert_array_equal(v["dW"], [[1, -1], [0.5, -0.5]])
    np.testing.assert_array_equal(v["dx_shortcut"], [[4.5, 3.5]])
    assert "dL/dx = [2.5, 4] + [1, 0.5] = [3.5, 4.5]" in str(lesson)
