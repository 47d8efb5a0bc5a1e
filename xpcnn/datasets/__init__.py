"""Data sets on the host (NumPy): MNIST and Fashion-MNIST (the bundled sample, IDX files, verified
downloads), CIFAR-10 (its binary version, verified download) and transforms of image batches
(RandomShift also runs on the device, in the batch's namespace). Feeding batches to a model is the
training loop's job (:mod:`xpcnn.train.batches`). This package imports only the file helpers below it.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0);
Fashion-MNIST by Zalando Research (MIT licence); CIFAR-10 by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton.
"""
from .cifar import CIFAR10_CLASSES, load_cifar10, read_cifar_binary, write_cifar_binary
from .mnist import SAMPLE_FILE, SOURCES, DataError, load_mnist, load_mnist_sample, read_idx
from .transforms import RandomShift, images_to_float, random_shift

__all__ = ["SAMPLE_FILE", "SOURCES", "DataError", "load_mnist", "load_mnist_sample", "read_idx",
           "CIFAR10_CLASSES", "load_cifar10", "read_cifar_binary", "write_cifar_binary",
           "images_to_float", "random_shift", "RandomShift"]
