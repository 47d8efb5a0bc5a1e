"""Forward and backward time of each layer of a zoo model on NumPy (medians of 12 passes), and their totals.

    python scripts/time_layers.py [vgg_small|lenet|resnet20] [--batch 32] [--threads N]

Compare settings by running it alternately, e.g. with XPCNN_WINOGRAD=off and XPCNN_WINOGRAD=auto.
"""
import argparse
import time

import numpy as np

import xpcnn.functional as F
from xpcnn import cores, zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="vgg_small", choices=("vgg_small", "lenet", "resnet20"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: as they are)")
    args = parser.parse_args()
    if args.threads:
        cores.set_threads(args.threads)
    model = getattr(zoo, args.model)(seed=0)
    shape = (1, 28, 28) if args.model == "lenet" else (3, 32, 32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    model(x)
    layers = list(model)

    def one_pass():
        activations, forward, backward = [x], [], []
        for layer in layers:
            start = time.perf_counter()
            activations.append(layer.forward(activations[-1]))
            forward.append(time.perf_counter() - start)
        _, delta = F.softmax_cross_entropy(activations[-1], y, check_labels=False)
        for index in reversed(range(len(layers))):
            start = time.perf_counter()
            delta = layers[index].backward(delta, need_dx=index > 0)
            backward.append(time.perf_counter() - start)
        return np.array(forward), np.array(backward[::-1])

    passes = [one_pass() for _ in range(12)]
    forward = np.median([p[0] for p in passes], axis=0) * 1e3
    backward = np.median([p[1] for p in passes], axis=0) * 1e3
    for layer, f, b in zip(layers, forward, backward):
        print(f"{type(layer).__name__:12s} forward {f:7.2f} ms  backward {b:7.2f} ms")
    print(f"total        forward {forward.sum():7.1f} ms  backward {backward.sum():7.1f} ms")


if __name__ == "__main__":
    main()
