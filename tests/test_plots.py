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
    """8 tiles per row, 2 inches each, plus a 1-inch colour bar and a 0.6-inch title band, at 100 dpi."""
    columns, rows = min(8, count), -(-count // 8)
    return round((2.0 * columns + 1.0) * 100), round((2.0 * rows + 0.6) * 100)


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


def _figures(monkeypatch):
    """The figures the plots draw, kept as they are saved."""
    kept = []
    save = plots._save

    def keep(plt, figure, path, dpi):
        kept.append(figure)
        return save(plt, figure, path, dpi)
    monkeypatch.setattr(plots, "_save", keep)
    return kept


def test_learning_curves_have_a_title_whole_epochs_and_name_the_validation_data(tmp_path, monkeypatch):
    kept = _figures(monkeypatch)
    history = {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "accuracy": [0.5, 0.8, 0.9], "val_loss": [0.9, 0.6, 0.5],
               "val_accuracy": [0.6, 0.7, 0.8]}
    plots.plot_history(history, tmp_path / "curves.png", title="lenet on sample", validation_label="test")
    plots.plot_history(history, tmp_path / "default.png")
    figure, default = kept
    assert figure._suptitle.get_text() == "lenet on sample" and default._suptitle.get_text() == "learning curves"
    for axis in figure.axes:
        assert [text.get_text() for text in axis.get_legend().get_texts()] == ["train", "test"]
        low, high = axis.get_xlim()
        ticks = [tick for tick in axis.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
    assert [text.get_text() for text in default.axes[0].get_legend().get_texts()] == ["train", "validation"]


def test_filters_and_feature_maps_have_a_colour_bar(tmp_path, monkeypatch):
    kept = _figures(monkeypatch)
    model = lenet(width=8, seed=0)
    plots.plot_filters(model, tmp_path / "filters.png")
    plots.plot_feature_maps(model, np.random.default_rng(0).standard_normal((1, 28, 28)), tmp_path)
    assert len(kept) == 3
    for figure in kept:
        assert len([axis for axis in figure.axes if getattr(axis, "_colorbar", None) is not None]) == 1
    low, high = kept[0].axes[0].get_images()[0].get_clim()
    assert low == -high                                   # filters: one scale, symmetric about 0
