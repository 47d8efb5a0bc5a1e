"""Ready-made architectures (each a function returning a Sequential)."""
from __future__ import annotations

from .layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .model import Sequential


def lenet(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, dropout: float = 0.25,
          width: int = 32, **kwargs) -> Sequential:
    """LeNet-style: conv(3x3, pad 1) -> ReLU -> maxpool 2, twice (width, 2*width channels), dense 128, dense out.

    With the defaults on 1x28x28: conv 1->32, conv 32->64, dense 3136->128, dense 128->10.
    """
    flat = 2 * width * (image_size // 4) ** 2
    return Sequential([
        Conv2D(in_channels, width, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(width, 2 * width, 3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dropout(dropout), Dense(flat, 128), ReLU(), Dropout(dropout), Dense(128, num_classes),
    ], **kwargs)


def vgg_small(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, dropout: float = 0.5,
              widths=(32, 64, 128), **kwargs) -> Sequential:
    """VGG-style: per width a block conv-bn-relu-conv-bn-relu-maxpool, then a dropout/dense head."""
    layers, channels = [], in_channels
    for width in widths:
        layers += [Conv2D(channels, width, 3, padding=1, bias=False), BatchNorm2D(width), ReLU(),
                   Conv2D(width, width, 3, padding=1, bias=False), BatchNorm2D(width), ReLU(), MaxPool2D(2)]
        channels = width
    side = image_size // 2 ** len(widths)
    layers += [Flatten(), Dropout(dropout), Dense(channels * side * side, 128), ReLU(), Dropout(dropout),
               Dense(128, num_classes)]
    return Sequential(layers, **kwargs)


def mlp(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, hidden: int = 128, **kwargs) -> Sequential:
    """A two-layer perceptron on flattened images: dense (C*H*W -> hidden), ReLU, dense (hidden -> classes)."""
    in_features = in_channels * image_size * image_size
    return Sequential([Flatten(), Dense(in_features, hidden), ReLU(), Dense(hidden, num_classes)], **kwargs)


MODELS = {"lenet": lenet, "vgg_small": vgg_small, "mlp": mlp}
