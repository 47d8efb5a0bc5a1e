"""Ready-made architectures (each a function returning a Sequential)."""
from __future__ import annotations

from .layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual
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


def basic_block(in_channels: int, out_channels: int, stride: int = 1) -> Sequential:
    """A ResNet basic block: Residual(conv3x3-bn-relu-conv3x3-bn, shortcut), then ReLU. The shortcut is the
    identity, or a 1x1 convolution with batch norm where the block changes stride or channels."""
    block = Sequential([Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                        BatchNorm2D(out_channels), ReLU(),
                        Conv2D(out_channels, out_channels, 3, padding=1, bias=False), BatchNorm2D(out_channels)])
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential([Conv2D(in_channels, out_channels, 1, stride=stride, bias=False),
                               BatchNorm2D(out_channels)])
    return Sequential([Residual(block, shortcut), ReLU()])


def resnet(depth: int = 20, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, widths=(16, 32, 64),
           **kwargs) -> Sequential:
    """The CIFAR ResNet of He et al. (2016, section 4.2) for 32x32 inputs: a 3x3 conv with 16 channels, three
    stages of (depth - 2) / 6 basic blocks with 16, 32 and 64 channels (the second and third start with
    stride 2), global average pooling and a dense classifier.

    Downsampling shortcuts are 1x1 stride-2 convolutions with batch norm (the paper's option B), not the
    parameter-free zero-padding of option A that the paper used on CIFAR: resnet20 has 272,474 parameters
    here against the paper's 0.27 M. ``image_size`` only documents the intended input; the global pooling
    takes any size."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"resnet: depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
    per_stage = (depth - 2) // 6
    layers = [Conv2D(in_channels, widths[0], 3, padding=1, bias=False), BatchNorm2D(widths[0]), ReLU()]
    channels = widths[0]
    for stage, width in enumerate(widths):
        for index in range(per_stage):
            layers.append(basic_block(channels, width, 2 if stage > 0 and index == 0 else 1))
            channels = width
    layers += [GlobalAvgPool2D(), Dense(channels, num_classes)]
    return Sequential(layers, **kwargs)


def resnet8(**kwargs) -> Sequential:
    """CIFAR ResNet-8 (one basic block per stage; 78,042 parameters): see :func:`resnet`."""
    return resnet(8, **kwargs)


def resnet20(**kwargs) -> Sequential:
    """CIFAR ResNet-20 (three basic blocks per stage; 272,474 parameters): see :func:`resnet`."""
    return resnet(20, **kwargs)


MODELS = {"lenet": lenet, "vgg_small": vgg_small, "mlp": mlp, "resnet8": resnet8, "resnet20": resnet20}
