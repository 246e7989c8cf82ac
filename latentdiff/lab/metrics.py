"""What the lessons measure: reconstruction error (MSE, PSNR) and how well codes separate classes (k-NN)."""

from __future__ import annotations

import math

import torch


def mse(output: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error per pixel, images in [0, 1]."""
    return (output - target).pow(2).mean().item()


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of a whole set of images in [0, 1]: 10 log10(1 / MSE)."""
    return 10 * math.log10(1 / max(mse(output, target), 1e-12))


def knn_accuracy(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 5,
    chunk: int = 1000,
) -> float:
    """Share of test points whose k nearest training codes (Euclidean) vote for their true class.

    A majority vote; a tie goes to the smallest class index among the tied (argmax takes the first).
    """
    if not 1 <= k <= len(train_codes):
        raise ValueError(f"k must be in 1..{len(train_codes)} (the training points), got {k}")
    classes = int(train_labels.max()) + 1
    correct = 0
    for codes, labels in zip(test_codes.split(chunk), test_labels.split(chunk), strict=True):
        nearest = torch.cdist(codes, train_codes).topk(k, largest=False).indices  # (chunk, k)
        votes = torch.nn.functional.one_hot(train_labels[nearest], classes).sum(dim=1)  # (chunk, classes)
        correct += (votes.argmax(dim=1) == labels).sum().item()
    return correct / len(test_codes)
