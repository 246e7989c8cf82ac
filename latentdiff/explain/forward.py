"""Forward diffusion, the training example of the lectures: an image noised to chosen timesteps.

At training step t the UNet reads x_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps (z0 the
image's latent) and is asked for eps (Ho et al. 2020, Algorithm 1). For each t this shows the
noisy latent decoded, the same noise applied to the pixels (what DDPM in pixel space would see),
the target eps, the model's guess, its x0 estimate, and the guess's mean squared error.

Legend: C latent channels, h w latent size, H W image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..denoisers import Denoiser
from ..model import StableDiffusion
from ..schedules import alphas_cumprod, q_sample, train_sigmas


@dataclass
class NoisedExample:
    t: int
    alpha_bar: float
    pixels: torch.Tensor  # (3, H, W) the image noised in pixel space, shown in [0, 1]
    x_t: torch.Tensor  # (C, h, w) the noised latent
    eps: torch.Tensor  # (C, h, w) the noise added, the training target
    eps_hat: torch.Tensor  # (C, h, w) the model's prediction of it
    x0_hat: torch.Tensor  # (C, h, w) the clean latent the prediction implies
    mse: float  # mean (eps_hat - eps)^2, the training loss at this t


@torch.no_grad()
def noise_image(model: StableDiffusion, image: torch.Tensor, prompt: str, timesteps: list[int],
                seed: int = 0) -> tuple[torch.Tensor, list[NoisedExample]]:  # fmt: skip
    """image (3, H, W) in [0, 1] -> its latent z0 (C, h, w) and one NoisedExample per timestep.

    One noise draw (seeded) serves every t, so the rows differ only in how much of it they hold.
    """
    n_train = model.config.scheduler.num_train_timesteps
    bad = [t for t in timesteps if not 0 <= t < n_train]
    if bad:
        raise ValueError(f"timesteps must lie in 0..{n_train - 1}, got {bad}")
    f = model.config.vae.downsample_factor
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] % f or image.shape[2] % f:
        raise ValueError(f"the image must be (3, H, W) with H and W multiples of {f}, got {tuple(image.shape)}")
    pixels = image.to(model.device, model.dtype)[None] * 2 - 1
    z0 = model.vae.encode(pixels).mean * model.config.vae.scaling_factor  # (1, C, h, w)
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(z0.shape, generator=generator).to(z0)
    eps_pixels = torch.randn(pixels.shape, generator=generator).to(pixels)
    alpha_bar = alphas_cumprod(model.config.scheduler)
    scheduler = model.config.scheduler
    denoiser = Denoiser(model.unet, train_sigmas(scheduler).to(model.device), scheduler.prediction_type)
    context = model.encode_prompt([prompt])
    examples = []
    for t in timesteps:
        step = torch.tensor([t])
        x_t = q_sample(z0, step, eps, alpha_bar)
        noisy = q_sample(pixels, step, eps_pixels, alpha_bar)
        ab = float(alpha_bar[t])
        sigma = torch.tensor(((1 - ab) / ab) ** 0.5, dtype=torch.float64)
        x = x_t / ab**0.5  # the sampler-space x = x0 + sigma eps the denoiser takes
        x0_hat = denoiser(x, sigma.to(model.device), context)
        eps_hat = (x - x0_hat) / sigma.item()
        examples.append(NoisedExample(
            t, ab, ((noisy[0].float() + 1) / 2).clamp(0, 1).cpu(), x_t[0].float().cpu(), eps[0].float().cpu(),
            eps_hat[0].float().cpu(), x0_hat[0].float().cpu(), float((eps_hat - eps).float().pow(2).mean()),
        ))  # fmt: skip
    return z0[0].float().cpu(), examples
