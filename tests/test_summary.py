import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L
from xpcnn.summary import chain_rows, summary_text
from xpcnn.zoo import lenet


def test_summary_prints_the_table_once_and_summary_text_returns_it(capsys):
    model = lenet(seed=0)
    assert model.summary((1, 28, 28)) is None          # a notebook shows nothing more than the printed table
    assert capsys.readouterr().out == model.summary_text((1, 28, 28)) + "\n"
    assert model.summary_text((1, 28, 28)) == summary_text(model, (1, 28, 28))


def test_summary_lists_shapes_and_parameter_counts():
    text = summary_text(lenet(seed=0), (1, 28, 28))
    assert "Dense(3136->128)" in text and "(N, 64, 7, 7)" in text
    expected = 1 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 3136 * 128 + 128 + 128 * 10 + 10
    assert f"total parameters: {expected:,}" in text


def test_chain_rows_number_nested_layers_and_name_the_one_that_fails():
    inner = xpcnn.Sequential([L.Dense(3, 3), L.ReLU()])
    model = xpcnn.Sequential([L.Flatten(), L.Dense(3), L.Residual(inner)], seed=0, input_shape=(1, 2, 2))
    rows, shape = chain_rows(model.layers, "", (1, 1, 2, 2))
    assert [row[0] for row in rows] == ["0", "1", "2.block.0", "2.block.1", "2"] and shape == (1, 3)
    assert rows[1][1:] == ("Dense(4->3)", (1, 3), 4 * 3 + 3)
    with pytest.raises(ValueError, match=r"layer 1: Dense\(4->3\): expected \(N, 4\), got \(1, 9\)"):
        chain_rows(model.layers, "", (1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"summary: layer 1: Dense"):
        summary_text(model, (1, 3, 3))
    with pytest.raises(ValueError, match=r"summary: pass the input shape"):
        summary_text(xpcnn.Sequential([L.Flatten()]))
