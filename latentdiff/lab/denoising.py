"""Lesson: a denoising autoencoder learns to undo the damage it was trained on (Vincent et al. 2008).

Vincent, Larochelle, Bengio & Manzagol, "Extracting and composing robust features with denoising
autoencoders" (ICML 2008): corrupt the input, keep the clean image as the target. To succeed the
network must learn what digits (or clothes) look like, not just copy pixels through. Two of the
paper's corruptions:

- Gaussian: add noise of standard deviation `level` to every pixel, clip back to [0, 1];
- masking: set each pixel to 0 with probability `level`.

Each training image gets a level drawn uniformly up to the largest one measured, so one network
per corruption serves every level. Measured on held-out images, per level: the PSNR of the noisy
input and of the network's output, both against the clean image.

    latentdiff lab denoising-ae --dataset mnist       # out/lab/denoising-ae-mnist.png and .json
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
from .metrics import psnr
from .models import ConvAutoencoder, parameter_count, reconstruct_all, train_autoencoder
from .report import run_facts, write_lesson

EPOCHS = 10  # two networks in about a minute on one thread
CODE_SIZE = 128
NOISE_LEVELS = {"gaussian": (0.1, 0.2, 0.3, 0.4, 0.5), "masking": (0.1, 0.25, 0.4, 0.55, 0.7)}


def gaussian_noise(x: torch.Tensor, level: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """x + level * N(0, 1) per pixel, clipped to the pixel range [0, 1]."""
    return (x + level * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def masking_noise(x: torch.Tensor, level: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Each pixel set to 0 (the background) with probability `level`."""
    return x * (torch.rand(x.shape, generator=generator) >= level)


Noise = Callable[[torch.Tensor, torch.Tensor | float, torch.Generator], torch.Tensor]  # (x, level, generator)
NOISES: dict[str, Noise] = {"gaussian": gaussian_noise, "masking": masking_noise}


def at_random_levels(noise: Noise, top: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A training corruption: each image of a batch damaged at its own level, uniform in [0, top]."""

    def corrupt(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return noise(x, top * torch.rand(len(x), 1, generator=generator), generator)  # (B, 1): a level per image

    return corrupt


def denoising_ae(
    data: LabData, out: Path, epochs: int = EPOCHS, seed: int = 0, log: Callable[[str], None] = print
) -> dict:
    """Train one denoising autoencoder per corruption; writes out/denoising-ae-<dataset>.png and .json."""
    start, dev = time.perf_counter(), device()
    shown = one_per_class(data.test_labels)
    rows = [("clean", data.test[shown])]
    results = {}
    for name, noise in NOISES.items():
        levels, top = NOISE_LEVELS[name], max(NOISE_LEVELS[name])
        torch.manual_seed(seed)
        model = ConvAutoencoder(code_size=CODE_SIZE).to(dev)
        log(f"training a denoising autoencoder on {name} noise up to {top} ({parameter_count(model):,} weights)")
        losses = train_autoencoder(model, data.train, epochs, corrupt=at_random_levels(noise, top), seed=seed, log=log)

        per_level = []
        test_noise = torch.Generator().manual_seed(seed + 1)  # the same damaged test images on every run
        for level in levels:
            noisy = noise(data.test, level, test_noise)
            denoised = reconstruct_all(model, noisy)
            per_level.append({"level": level, "input_psnr_db": round(psnr(noisy, data.test), 2),
                              "output_psnr_db": round(psnr(denoised, data.test), 2)})  # fmt: skip
            log(f"{name} {level}: PSNR noisy {per_level[-1]['input_psnr_db']:.2f} dB -> "
                f"denoised {per_level[-1]['output_psnr_db']:.2f} dB")  # fmt: skip
            if level in (levels[1], levels[-1]):  # a milder and the strongest level in the figure
                rows += [(f"{name} {level}", noisy[shown]), ("  denoised", denoised[shown])]
        results[name] = {"levels": per_level, "train_bce_per_epoch": [round(x, 5) for x in losses]}

    heading = f"{data.name}: held-out images, damaged, then through the denoising autoencoder"
    table = plots.image_rows(rows)
    figure = figures.above(figures.caption(heading, table.width), table)
    metrics = {"lesson": "denoising-ae", "code_size": CODE_SIZE, "parameters": parameter_count(model), **results}
    metrics |= run_facts(data, epochs, seed, time.perf_counter() - start, dev)
    write_lesson(out, f"denoising-ae-{data.name}", figure, metrics)
    return metrics
