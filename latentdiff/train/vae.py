"""Train the KL autoencoder on shapes scenes (and emoji, with data.emoji_repeats), top to bottom.

    latentdiff train vae --recipe recipes/vae_builtin.toml [--set optim.max_steps=2000] [--resume]

Loss: L1 or L2 reconstruction + kl_weight * KL(q(z|x) || N(0, I)) per latent element (Kingma &
Welling 2014; SD's VAE uses a tiny KL weight so the latent keeps detail and only has to stay near
unit scale). No pretrained perceptual network exists offline, so there is no LPIPS term.
`init_from` starts from another run's (or a diffusers folder's) VAE instead of random weights;
with `decoder_only` the encoder stays frozen (a new decoder for a latent space a UNet already uses).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..config import VAEConfig
from ..vae import AutoencoderKL
from .common import (
    DataConfig,
    OptimConfig,
    RecipeError,
    device,
    emoji_tensors,
    fit,
    pool_tensors,
    shapes_tensors,
    shard,
)
from .grid import save_grid


@dataclasses.dataclass
class VAERecipe:
    model: VAEConfig = dataclasses.field(default_factory=lambda: VAEConfig(block_out_channels=(32, 64, 128, 128)))
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 32
    kl_weight: float = 1e-6
    recon_loss: str = "l1"  # "l1" (SD's) or "l2" (squared error: what PSNR measures)
    init_from: str = ""  # a `train vae` run folder or diffusers folder whose VAE starts this run
    # Train only the decoder (and post_quant_conv), the encoder frozen: the latent space stays the
    # one a trained UNet already generates in, so a sharper decoder improves that model as it is.
    decoder_only: bool = False
    # Decoder training on latents a UNet drew (train/redraw.py; needs decoder_only): the model folder
    # `redraw_with` re-draws the first redraw_pool scenes' latents from noise levels <= redraw_max_sigma,
    # and a redraw_share of every batch is decoded from those, toward the scenes themselves.
    redraw_with: str = ""
    redraw_pool: int = 10000
    redraw_max_sigma: float = 2.0
    redraw_share: float = 0.5
    log_every: int = 50
    ckpt_every: int = 500
    out: str = "runs/vae"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def train(recipe: VAERecipe, resume: bool = False, stop_at: int | None = None, quiet: bool = False) -> dict:
    """Train (or continue) to recipe.optim.max_steps; stop_at ends early (as a kill would)."""
    if recipe.recon_loss not in ("l1", "l2"):
        raise RecipeError(f"recon_loss must be l1 or l2, got {recipe.recon_loss!r}")
    torch.manual_seed(recipe.data.seed)
    dev = device()
    model = AutoencoderKL(recipe.model)
    if recipe.init_from:
        from .unet import frozen_vae  # the loader the UNet trainer uses for its frozen VAE

        model.load_state_dict(frozen_vae(recipe.init_from).state_dict())
    if recipe.decoder_only:
        if not recipe.init_from:
            raise RecipeError("decoder_only needs init_from: a frozen random encoder defines no useful latent space")
        for part in (model.encoder, model.quant_conv):
            part.requires_grad_(False)
    model = model.to(dev)
    images, captions = pool_tensors(recipe.data)
    redrawn = _redrawn(recipe, model, images, captions) if recipe.redraw_with else None
    n_redrawn = round(recipe.batch_size * recipe.redraw_share) if redrawn is not None else 0
    # The reconstructions shown in the run's sample grids: the first shapes, and the first emoji.
    fixed = images[[0, 1, 2, 3, -1, -2, -3, -4]] if recipe.data.emoji_repeats else images[:8]

    def loss_fn(net, rank: int, world: int) -> torch.Tensor:
        x = shard(images[torch.randint(len(images), (recipe.batch_size - n_redrawn,))], rank, world).to(dev)
        recon, posterior = net(x, sample=True)
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        error = (recon - x).abs() if recipe.recon_loss == "l1" else (recon - x).pow(2)
        if n_redrawn:  # one process only (checked in _redrawn), so `net` is the model itself
            pick = torch.randint(len(redrawn), (n_redrawn,))
            target = images[pick].to(dev)
            drawn = net.decode(redrawn[pick].to(dev)) - target
            error = torch.cat([error, drawn.abs() if recipe.recon_loss == "l1" else drawn.pow(2)])
        return error.mean() + recipe.kl_weight * kl

    def grid(step: int, ema_state: dict) -> None:  # originals above, EMA reconstructions below
        ema_model = AutoencoderKL(recipe.model).to(dev).eval()
        ema_model.load_state_dict(ema_state)
        with torch.no_grad():
            recon = ema_model(fixed.to(dev))[0].cpu()
        save_grid(torch.cat([fixed, recon]), Path(recipe.out) / "samples" / f"step-{step:08d}.png", columns=8)

    result = fit(model, loss_fn, recipe, resume, stop_at, quiet, on_checkpoint=grid)
    result["ema_model"] = AutoencoderKL(recipe.model).to(dev)
    result["ema_model"].load_state_dict(result["ema"].shadow)
    return result


def _redrawn(recipe: VAERecipe, model: AutoencoderKL, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """The redraw_pool latents recipe.redraw_with's UNet draws (train/redraw.py), computed once per run
    and kept in the run folder (written atomically), so a resumed run reads the same ones."""
    from ..weights import load
    from ..weights.io import atomic_path
    from .redraw import redrawn_latents

    if not recipe.decoder_only:
        raise RecipeError("redraw_with needs decoder_only: the UNet's latent space is the frozen encoder's")
    if not 0 < recipe.redraw_share < 1 or recipe.redraw_pool < 1:
        raise RecipeError(f"redraw_share must be in (0, 1) and redraw_pool >= 1, got {recipe.redraw_share} and "
                          f"{recipe.redraw_pool}")  # fmt: skip
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RecipeError("redraw_with runs in one process: its decoder-only loss bypasses DDP's forward")
    key = dict(redraw_with=recipe.redraw_with, pool=recipe.redraw_pool, max_sigma=recipe.redraw_max_sigma,
               seed=recipe.data.seed)  # fmt: skip
    cache = Path(recipe.out) / "redrawn.pt"
    if cache.exists():
        saved = torch.load(cache)
        if saved["key"] == key:
            return saved["latents"]
    drawer = load(recipe.redraw_with)
    theirs, ours = drawer.vae.encoder.state_dict(), model.encoder.state_dict()
    if any(not torch.equal(theirs[k].float(), ours[k].float().cpu()) for k in ours):
        raise RecipeError(f"redraw_with: {recipe.redraw_with}'s VAE encoder is not this run's, so its UNet draws "
                          "in another latent space")  # fmt: skip
    n = min(recipe.redraw_pool, len(images))
    latents = redrawn_latents(drawer, images[:n], captions[:n], recipe.redraw_max_sigma, seed=recipe.data.seed)
    with atomic_path(cache) as tmp:
        torch.save({"key": key, "latents": latents}, tmp)
    return latents


@torch.no_grad()
def evaluate(model: AutoencoderKL, data: DataConfig, domain: str = "shapes") -> float:
    """Mean PSNR (dB) of reconstructions (posterior mean) on held-out shapes scenes or emoji."""
    x, _ = shapes_tensors(data, heldout=True) if domain == "shapes" else emoji_tensors(data, heldout=True)
    model.eval()
    dev = next(model.parameters()).device
    scores = [psnr(model(chunk.to(dev))[0].cpu(), chunk) for chunk in x.split(64)]
    return float(np.mean(scores))


@torch.no_grad()
def reconstructions_hold(model: AutoencoderKL, data: DataConfig) -> float:
    """Share of held-out shapes scenes whose reconstruction still satisfies its caption (SHAPES.md's
    parser): the most shapes fidelity a diffusion model in this VAE's latent space can reach."""
    from ..data.shapes import caption_holds

    x, captions = shapes_tensors(data, heldout=True)
    model.eval()
    dev = next(model.parameters()).device
    recon = torch.cat([model(chunk.to(dev))[0].cpu() for chunk in x.split(64)])
    pixels = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return sum(caption_holds(p, c) for p, c in zip(pixels, captions, strict=True)) / len(captions)
