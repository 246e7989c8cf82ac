"""Train the KL autoencoder on the shapes world, top to bottom.

    latentdiff train vae --recipe recipes/vae_shapes.toml [--set optim.max_steps=2000] [--resume]

Loss: L1 reconstruction + kl_weight * KL(q(z|x) || N(0, I)) per latent element (Kingma & Welling
2014; SD's VAE uses a tiny KL weight so the latent keeps detail and only has to stay near unit scale).
No pretrained perceptual network exists offline, so there is no LPIPS term.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..config import VAEConfig
from ..vae import AutoencoderKL
from .common import DataConfig, OptimConfig, fit, shapes_tensors


@dataclasses.dataclass
class VAERecipe:
    model: VAEConfig = dataclasses.field(default_factory=lambda: VAEConfig(block_out_channels=(32, 64, 128, 128)))
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 32
    kl_weight: float = 1e-6
    log_every: int = 50
    ckpt_every: int = 500
    out: str = "runs/vae"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def train(recipe: VAERecipe, resume: bool = False, stop_at: int | None = None, quiet: bool = False) -> dict:
    """Train (or continue) to recipe.optim.max_steps; stop_at ends early (as a kill would)."""
    torch.manual_seed(recipe.data.seed)
    model = AutoencoderKL(recipe.model)
    images, _ = shapes_tensors(recipe.data)

    def loss_fn() -> torch.Tensor:
        x = images[torch.randint(len(images), (recipe.batch_size,))]
        recon, posterior = model(x, sample=True)
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        return (recon - x).abs().mean() + recipe.kl_weight * kl

    result = fit(model, loss_fn, recipe, resume, stop_at, quiet)
    result["ema_model"] = AutoencoderKL(recipe.model)
    result["ema_model"].load_state_dict(result["ema"].shadow)
    return result


@torch.no_grad()
def evaluate(model: AutoencoderKL, data: DataConfig) -> float:
    """Mean PSNR (dB) of reconstructions (posterior mean) on held-out scenes."""
    x, _ = shapes_tensors(data, heldout=True)
    model.eval()
    scores = [psnr(model(chunk)[0], chunk) for chunk in x.split(64)]
    return float(np.mean(scores))
