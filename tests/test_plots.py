import numpy as np
import pytest

from xpcnn import plots, teach
from xpcnn.zoo import lenet

Image = pytest.importorskip("PIL.Image")


def _png(path):
    with Image.open(path) as picture:
        picture.verify()
    with Image.open(path) as picture:
        return picture.format, picture.size


def _tile_size(count):
    """8 tiles per row, 1.4 inches each, plus a 0.4-inch title band, at 80 dpi."""
    columns, rows = min(8, count), -(-count // 8)
    return round(1.4 * columns * 80), round((1.4 * rows + 0.4) * 80)


def test_filters_feature_maps_and_curves_are_valid_pngs(tmp_path):
    model = lenet(width=8, seed=0)
    assert _png(plots.plot_filters(model, tmp_path / "filters.png")) == ("PNG", _tile_size(8))
    paths = plots.plot_feature_maps(model, np.random.default_rng(0).standard_normal((1, 28, 28)), tmp_path)
    assert [p.name for p in paths] == ["features-0.png", "features-3.png"]
    assert _png(paths[0]) == ("PNG", _tile_size(8))
    assert _png(paths[1]) == ("PNG", _tile_size(16))
    history = {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "accuracy": [0.5, 0.8, 0.9], "val_loss": [0.9, 0.6, 0.5]}
    assert _png(plots.plot_history(history, tmp_path / "curves.png")) == ("PNG", (1000, 400))


def test_optimizer_curves_png(tmp_path):
    lesson = teach.run("optimizers", steps=5, out=str(tmp_path / "opt.png"))
    assert _png(lesson.values["png"]) == ("PNG", (700, 400))


def test_filters_need_a_conv_layer(tmp_path):
    from xpcnn.zoo import mlp
    with pytest.raises(ValueError, match="plot_filters: the model has no Conv2D layer"):
        plots.plot_filters(mlp(seed=0), tmp_path / "f.png")
