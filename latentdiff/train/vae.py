"""Train the KL autoencoder on the shapes world, top to bottom.

    latentdiff train vae --recipe recipes/vae_shapes.toml [--set optim.max_steps=2000] [--resume]

Loss: L1 reconstruction + kl_weight * KL(q(z|x) || N(0, I)) per latent element (Kingma & Welling
2014; SD's VAE uses a tiny KL weight so the latent keeps detail and only has to stay near unit scale).
No pretrained perceptual network exists offline, so there is no LPIPS term.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..config import VAEConfig
from ..data.shapes import make_dataset
from ..vae import AutoencoderKL
from .common import (
    EMA,
    Metrics,
    OptimConfig,
    load_last_checkpoint,
    lr_at,
    make_optimizer,
    save_checkpoint,
    set_rng_state,
)


@dataclasses.dataclass
class DataConfig:
    canvas: int = 64
    seed: int = 0
    pool: int = 20_000  # training images, generated once from `seed`
    heldout_seed: int = 987_654_321  # never used for training
    heldout: int = 256


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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def train(recipe: VAERecipe, resume: bool = False, stop_at: int | None = None, quiet: bool = False) -> dict:
    """Train (or continue) to recipe.optim.max_steps; stop_at ends early (as a kill would)."""
    out = Path(recipe.out)
    torch.manual_seed(recipe.data.seed)
    model = AutoencoderKL(recipe.model)
    optimizer = make_optimizer(model, recipe.optim)
    ema = EMA(model, recipe.optim.ema_decay)
    step = 0
    checkpoint = load_last_checkpoint(out) if resume else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        ema.shadow = checkpoint["ema"]
        step = checkpoint["step"]
        set_rng_state(checkpoint["rng"])
    images = to_tensor(make_dataset(recipe.data.seed, recipe.data.pool, recipe.data.canvas)[0])
    metrics = Metrics(out / "metrics.jsonl")
    o = recipe.optim
    start = time.perf_counter()
    loss_value = float("nan")
    while step < o.max_steps and (stop_at is None or step < stop_at):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, o)
        total = 0.0
        for _ in range(o.grad_accum):
            x = images[torch.randint(len(images), (recipe.batch_size,))]
            recon, posterior = model(x, sample=True)
            kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
            loss = (recon - x).abs().mean() + recipe.kl_weight * kl
            (loss / o.grad_accum).backward()
            total += loss.item() / o.grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        step += 1
        loss_value = total
        if step % recipe.log_every == 0 or step == o.max_steps:
            rate = recipe.batch_size * o.grad_accum * recipe.log_every / (time.perf_counter() - start)
            metrics.log(step, loss=total, lr=lr_at(step - 1, o), images_per_s=rate)
            if not quiet:
                print(f"step {step}: loss {total:.4f}, {rate:.1f} img/s", flush=True)
            start = time.perf_counter()
        if step % recipe.ckpt_every == 0 or step == o.max_steps:
            payload = {"recipe": dataclasses.asdict(recipe), "model": model.state_dict(),
                       "optimizer": optimizer.state_dict(), "ema": ema.shadow}  # fmt: skip
            save_checkpoint(out, step, payload)
    ema_model = AutoencoderKL(recipe.model)
    ema_model.load_state_dict(ema.shadow)
    return {"step": step, "loss": loss_value, "model": model, "ema": ema, "ema_model": ema_model}


@torch.no_grad()
def evaluate(model: AutoencoderKL, data: DataConfig) -> float:
    """Mean PSNR (dB) of reconstructions (posterior mean) on held-out scenes."""
    x = to_tensor(make_dataset(data.heldout_seed, data.heldout, data.canvas)[0])
    model.eval()
    scores = [psnr(model(chunk)[0], chunk) for chunk in x.split(64)]
    return float(np.mean(scores))
