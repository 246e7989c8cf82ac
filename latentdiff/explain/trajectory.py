"""Record one denoising run step by step: the latent, the predicted noise, the predicted clean image.

Samplers walk x = x0 + sigma * eps from pure noise (sigma_max) to sigma 0 (denoisers.py). At each
step the (guided) denoiser estimates x0; the noise it implies is eps = (x - x0) / sigma. The
recording keeps every step's x, x0 and eps, decodes them with the VAE, and optionally sums the
cross-attention maps over the whole run (attention.py).

Legend: S steps, C latent channels, h w latent size, H W image size, T tokens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..model import StableDiffusion
from ..pipeline import initial_noise, sampling_schedule, txt2img
from .attention import CrossAttentionRecorder


@dataclass
class Trajectory:
    prompt: str
    seed: int
    sampler: str
    guidance_scale: float
    sigmas: torch.Tensor  # (S + 1,) the noise levels walked, the last one where sampling ends
    x: torch.Tensor  # (S + 1, C, h, w) the start, then x after each step, in sampler space x0 + sigma*eps
    x0: torch.Tensor  # (S, C, h, w) the denoiser's clean-latent estimate at each step
    eps: torch.Tensor  # (S, C, h, w) the noise it implies, (x_in - x0) / sigma
    image: torch.Tensor  # (3, H, W) the final image in [0, 1]
    heat: torch.Tensor | None  # (T, H, W) cross-attention summed over layers, heads and steps

    @property
    def x_t(self) -> torch.Tensor:
        """x as the UNet and VAE see it, the variance-preserving latent x / sqrt(1 + sigma^2)."""
        return self.x / (1 + self.sigmas[:, None, None, None] ** 2).sqrt()


@torch.no_grad()
def record(model: StableDiffusion, prompt: str, seed: int = 0, steps: int = 20, sampler: str = "euler",
           guidance_scale: float = 7.5, negative_prompt: str = "", sigmas: str = "default",
           attention: bool = True) -> Trajectory:  # fmt: skip
    """Run txt2img for one prompt and keep every step (attention: also sum the cross-attention)."""
    states = txt2img(model, prompt, negative_prompt, steps, guidance_scale, seed=seed, sampler=sampler, sigmas=sigmas)
    schedule = sampling_schedule(model, steps, sampler, sigmas)
    f = model.config.vae.downsample_factor
    size = (model.config.unet.sample_size * f,) * 2
    recorder = CrossAttentionRecorder(model.unet, prompts=1, size=size) if attention else None
    xs, x0s, image = [], [], None
    with recorder or contextlib.nullcontext():
        for state in states:
            if isinstance(state, torch.Tensor):
                image = state[0]
            else:
                xs.append(state.x[0].float().cpu())
                x0s.append(state.x0[0].float().cpu())
    h, w = xs[0].shape[1:]
    noise, _ = initial_noise(model, 1, h, w, seed)
    sig = schedule.sigmas.float()
    start = noise[0].float().cpu() * (1 + sig[0] ** 2).sqrt()
    x = torch.stack([start, *xs])
    x0 = torch.stack(x0s)
    eps = (x[:-1] - x0) / sig[:-1, None, None, None]
    heat = recorder.heat[0].cpu() if recorder is not None else None
    return Trajectory(prompt, seed, sampler, guidance_scale, sig, x, x0, eps, image.cpu(), heat)


@torch.no_grad()
def decode(model: StableDiffusion, latents: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Scaled VP latents (N, C, h, w) -> images (N, 3, H, W) in [0, 1], through the VAE decoder."""
    out = []
    for chunk in latents.split(batch):
        z = chunk.to(model.device, model.dtype) / model.config.vae.scaling_factor
        out.append(((model.vae.decode(z).float() + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out)


def fit_preview(latent: torch.Tensor, image: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """A linear latent -> RGB map (C + 1, 3), fitted by ridge least squares on one (latent, image) pair.

    The "cheap" decode of the live previews other UIs show: each latent pixel times a fixed matrix.
    Fitted here on the run's own final latent against its image averaged down to the latent grid,
    so it works for any VAE without published coefficients.
    """
    C, h, w = latent.shape
    target = torch.nn.functional.adaptive_avg_pool2d(image[None].float(), (h, w))[0]  # (3, h, w)
    A = torch.cat([latent.reshape(C, -1), torch.ones(1, h * w)]).T.double()  # (h*w, C + 1)
    B = target.reshape(3, -1).T.double()  # (h*w, 3)
    return torch.linalg.solve(A.T @ A + ridge * torch.eye(C + 1, dtype=A.dtype), A.T @ B).float()


def preview(latents: torch.Tensor, weights: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """Latents (N, C, h, w) -> (N, 3, h, w) through the fitted map; normalise stretches each to [0, 1]."""
    rgb = torch.einsum("nchw,cr->nrhw", latents, weights[:-1]) + weights[-1][None, :, None, None]
    if normalise:
        lo = rgb.amin(dim=(1, 2, 3), keepdim=True)
        hi = rgb.amax(dim=(1, 2, 3), keepdim=True)
        rgb = (rgb - lo) / (hi - lo).clamp_min(1e-8)
    return rgb.clamp(0, 1)
