"""txt2img as a generator that yields each denoising step's state.

The sampler here is deterministic DDIM (Song et al. 2021, eta = 0) with classifier-free guidance;
the CLI wraps the generator in a progress bar, other callers can record or stream each step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .model import StableDiffusion
from .schedules import alphas_cumprod


@dataclass
class Step:
    index: int  # 0-based step number
    total: int
    t: int  # the training timestep just denoised
    x_t: torch.Tensor  # latent after this step (B, C, h, w)
    x0_pred: torch.Tensor  # the model's current estimate of the clean latent


def predict_eps(prediction_type: str, out: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Convert whatever the UNet predicts into eps (v: Salimans & Ho 2022, eq. 9)."""
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return alpha_bar_t.sqrt() * out + (1 - alpha_bar_t).sqrt() * x_t
    return (x_t - alpha_bar_t.sqrt() * out) / (1 - alpha_bar_t).sqrt()  # "sample": out is x0


def txt2img(
    model: StableDiffusion,
    prompt: str | list[str],
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
) -> Iterator[Step | torch.Tensor]:
    """Yields a Step per denoising step, then the decoded images (B, 3, H, W) in [0, 1].

    Arguments are checked here, before the generator starts, so bad input fails at the call.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    f = model.config.vae.downsample_factor
    height = height or model.config.unet.sample_size * f
    width = width or model.config.unet.sample_size * f
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of {f}, got {height}x{width}")
    n_train = model.config.scheduler.num_train_timesteps
    if not 1 <= steps <= n_train:
        raise ValueError(f"steps must be between 1 and {n_train}, got {steps}")
    # "leading" spacing with offset 1, as SD 1.x/2.x ship: 981, 961, ..., 1 for 50 of 1000.
    ratio = n_train // steps
    offset = 1 if ratio > 1 else 0
    timesteps = [i * ratio + offset for i in reversed(range(steps))]
    return _denoise(model, prompts, negative_prompt, timesteps, guidance_scale, (height // f, width // f), seed)


@torch.no_grad()
def _denoise(model, prompts, negative_prompt, timesteps, guidance_scale, latent_size, seed):
    B = len(prompts)
    context = model.encode_prompt(prompts)
    uncond = model.encode_prompt([negative_prompt] * B)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, model.config.unet.in_channels, *latent_size, generator=gen)
    x = x.to(model.device, model.dtype)
    alpha_bar = alphas_cumprod(model.config.scheduler).to(model.device)
    for i, t in enumerate(timesteps):
        # 1. one batched UNet call for the unconditional and conditional predictions
        x_in = torch.cat([x, x])
        out = model.unet(x_in, torch.tensor(float(t)), torch.cat([uncond, context]))
        a_t = alpha_bar[t].to(model.dtype)
        eps_u, eps_c = predict_eps(model.config.scheduler.prediction_type, out, x_in, a_t).chunk(2)
        # 2. classifier-free guidance (Ho & Salimans 2022)
        eps = eps_u + guidance_scale * (eps_c - eps_u)
        # 3. DDIM update (eq. 12 with sigma = 0): estimate x0, then step to the previous timestep
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        # The last step lands on alpha_bar_0, not 1 ("set_alpha_to_one": false in SD's scheduler config).
        a_prev = alpha_bar[timesteps[i + 1] if i + 1 < len(timesteps) else 0].to(model.dtype)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        yield Step(i, len(timesteps), t, x, x0)
    image = model.vae.decode(x / model.config.vae.scaling_factor)
    yield ((image.float() + 1) / 2).clamp(0, 1)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]
