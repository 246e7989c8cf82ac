"""Lesson: a convolutional and a dense autoencoder, squeezed to the same code size.

The dense autoencoder is the lecture's 784-1000-500-250-k; the convolutional one sees the image as
a grid (two stride-2 3x3 convolutions, then a linear map to the k-number code) and shares each
filter across positions, so it has 10-40x fewer weights. Both train on the same images for the
same epochs with the same optimizer; PCA with k components is the best any linear code of that
size can do. Measured: held-out reconstruction MSE and PSNR at each code size.

    latentdiff lab conv-vs-dense --dataset mnist      # out/lab/conv-vs-dense-mnist.png and .json
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
from .metrics import mse, psnr
from .models import ConvAutoencoder, DenseAutoencoder, parameter_count, reconstruct_all, train_autoencoder
from .pca import fit_pca
from .report import run_facts, write_lesson

EPOCHS = 10  # six networks in 3-4 min on one thread; the dense ones are still improving (see the README)
CODE_SIZES = (2, 8, 32)


def conv_vs_dense(data: LabData, out: Path, epochs: int = EPOCHS, seed: int = 0,
                  code_sizes: tuple[int, ...] = CODE_SIZES, log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Train both at each code size, measure held-out reconstruction; writes out/conv-vs-dense-<dataset>.*"""
    start, dev = time.perf_counter(), device()
    shown = one_per_class(data.test_labels)
    rows = [("held out", data.test[shown])]
    results = []
    for k in code_sizes:
        pca = fit_pca(data.train, k)
        reconstructions = {"pca": pca.decode(pca.encode(data.test)).clamp(0, 1)}  # clamped: only helps PCA
        entry = {"code_size": k, "pca": {}}
        for name, make in (("dense", DenseAutoencoder), ("conv", ConvAutoencoder)):
            torch.manual_seed(seed)  # both start from the same random state
            model = make(code_size=k).to(dev)
            log(f"training the {name} autoencoder, code size {k} ({parameter_count(model):,} weights)")
            losses = train_autoencoder(model, data.train, epochs, seed=seed, log=log)
            reconstructions[name] = reconstruct_all(model, data.test)
            entry[name] = {"parameters": parameter_count(model), "train_bce_per_epoch": [round(x, 5) for x in losses]}
        for name, reconstruction in reconstructions.items():
            entry[name] |= {"test_mse": round(mse(reconstruction, data.test), 5),
                            "psnr_db": round(psnr(reconstruction, data.test), 2)}  # fmt: skip
            rows.append((f"{name}, {k} numbers", reconstruction[shown]))
            scores = entry[name]
            log(f"code size {k}, {name}: held-out MSE {scores['test_mse']:.4f}, PSNR {scores['psnr_db']:.2f} dB")
        results.append(entry)

    heading = f"{data.name}: held-out reconstructions at equal code size (PCA, dense, conv), {epochs} epochs"
    table = plots.image_rows(rows)
    figure = figures.above(figures.caption(heading, table.width), table)
    metrics = {"lesson": "conv-vs-dense", "code_sizes": results}
    metrics |= run_facts(data, epochs, seed, time.perf_counter() - start, dev)
    write_lesson(out, f"conv-vs-dense-{data.name}", figure, metrics)
    return metrics
