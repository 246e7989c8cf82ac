"""Lesson: a deep autoencoder draws a better 2-D map of the data than PCA.

Hinton & Salakhutdinov (2006, "Reducing the dimensionality of data with neural networks", Fig. 3)
squeezed MNIST through a 784-1000-500-250-2 autoencoder and through PCA to 2-D: PCA's classes
overlap in one smear, the autoencoder's fan out apart. Both codes have the same size, so what the
autoencoder adds is non-linearity. Measured on held-out images:

- reconstruction MSE: how much of the image the two numbers keep;
- k-NN accuracy in the 2-D code space: each held-out code takes the majority class of its k nearest
  training codes, a number for "are the classes apart on the map".

    latentdiff lab ae-vs-pca --dataset mnist          # out/lab/ae-vs-pca-mnist.png and .json
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import figures
from ..train.common import device
from . import plots
from .data import LabData, one_per_class
from .metrics import knn_accuracy, mse
from .models import DenseAutoencoder, encode_all, parameter_count, reconstruct_all, train_autoencoder
from .pca import fit_pca
from .report import run_facts, write_lesson

EPOCHS = 30  # 1-2 min on one thread; the training loss is still falling slowly there
KNN_K = 5


def ae_vs_pca(
    data: LabData, out: Path, epochs: int = EPOCHS, seed: int = 0, log: Callable[[str], None] = print
) -> dict:
    """Train, measure, draw; writes out/ae-vs-pca-<dataset>.png and .json and returns the numbers."""
    start, dev = time.perf_counter(), device()

    # 1. PCA: the best *linear* 2-D code, fitted in one SVD.
    pca = fit_pca(data.train, 2)
    codes = {"pca": (pca.encode(data.train), pca.encode(data.test))}
    # Clamped to the pixel range like the autoencoder's sigmoid output: that can only lower PCA's error.
    reconstructions = {"pca": pca.decode(codes["pca"][1]).clamp(0, 1)}

    # 2. The deep autoencoder: the same 2-D code, reached through non-linear maps.
    torch.manual_seed(seed)
    autoencoder = DenseAutoencoder(code_size=2).to(dev)
    log(f"training the 784-1000-500-250-2 autoencoder ({parameter_count(autoencoder):,} weights) on {data.name}")
    losses = train_autoencoder(autoencoder, data.train, epochs, seed=seed, log=log)
    codes["autoencoder"] = (encode_all(autoencoder, data.train), encode_all(autoencoder, data.test))
    reconstructions["autoencoder"] = reconstruct_all(autoencoder, data.test)

    # 3. Measure both the same way, on images neither has seen.
    def measure(train_codes: torch.Tensor, test_codes: torch.Tensor, reconstruction: torch.Tensor) -> dict:
        accuracy = knn_accuracy(train_codes, data.train_labels, test_codes, data.test_labels, k=KNN_K)
        return {"test_mse": round(mse(reconstruction, data.test), 5), "knn_accuracy": round(accuracy, 4)}

    results = {name: measure(*codes[name], reconstructions[name]) for name in ("pca", "autoencoder")}
    results["autoencoder"] |= {
        "parameters": parameter_count(autoencoder),
        "train_bce_per_epoch": [round(x, 5) for x in losses],
    }

    for name, scores in results.items():
        log(f"{name}: held-out MSE {scores['test_mse']:.4f}, {KNN_K}-NN accuracy {scores['knn_accuracy']:.1%}")

    # 4. The figure: both maps of the held-out codes, then what each brings back of one image per class.
    titles = {name: f"{label}: MSE {results[name]['test_mse']:.4f}, {KNN_K}-NN {results[name]['knn_accuracy']:.1%}"
              for name, label in (("pca", "PCA to 2-D"), ("autoencoder", "autoencoder to 2-D"))}  # fmt: skip
    maps = figures.beside(*(plots.scatter(codes[name][1], data.test_labels, titles[name]) for name in titles),
                        plots.legend(data.classes))  # fmt: skip
    shown = one_per_class(data.test_labels)
    rows = plots.image_rows([("held out", data.test[shown]),
                             ("PCA, 2 numbers", reconstructions["pca"][shown]),
                             ("autoencoder, 2", reconstructions["autoencoder"][shown])])  # fmt: skip
    heading = f"{data.name}: held-out codes (asinh axes) and reconstructions, {len(data.train):,} training images"
    figure = figures.above(figures.caption(heading, maps.width), maps, rows)

    metrics = {"lesson": "ae-vs-pca", "knn_k": KNN_K, **results}
    metrics |= run_facts(data, epochs, seed, time.perf_counter() - start, dev)
    write_lesson(out, f"ae-vs-pca-{data.name}", figure, metrics)
    return metrics
