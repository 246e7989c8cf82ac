"""Latents as a trained UNet draws them: training inputs for a decoder that renders what the UNet means.

A decoder trained only on the encoder's latents meets, at generation time, latents it never saw:
the UNet's samples sit near the encoder's latent space but not on it, and their small errors come out
as soft, wobbly edges. In the shapes world that is the built-in model's most common failure: small
squares whose corners come back round enough to parse as circles (`latentdiff evaluate`'s
"failed first on" line).

So each training scene's latent is noised to a random low level and denoised again by the UNet with
its caption, as img2img does (SDEdit, Meng et al. 2022). The result is a latent the UNet drew, of an
image we know: the scene itself, because at low noise SDEdit keeps the content. A decoder trained to
map it back to the scene learns to render UNet latents crisply, while the encoder, the latent space
and the UNet stay as they are. (Consistency decoders and SD's fine-tuned VAE decoders likewise
train the decoder alone, for the latents it is actually given.)
"""

from __future__ import annotations

import numpy as np
import torch

from ..pipeline import _denoise, _encode, sampling_schedule
from ..samplers import noise_like


@torch.no_grad()
def redrawn_latents(model, images: torch.Tensor, captions: list[str], max_sigma: float, seed: int,
                    steps: int = 20, guidance_scale: float = 2.5, guidance_max_sigma: float | None = 15.0,
                    chunk: int = 50) -> torch.Tensor:  # fmt: skip
    """Each image's latent, noised to a level <= max_sigma and denoised by `model` with its caption.

    images: (N, 3, H, W) in [-1, 1]. Returns the latents (N, C, h, w) in the VAE's own (unscaled)
    units, ready for model.vae.decode. The sampler is the built-in model's: Euler on Karras sigmas,
    `steps` of them over the whole range, of which each chunk of `chunk` images runs a tail that
    starts at a level drawn (from `seed`) among those <= max_sigma."""
    schedule = sampling_schedule(model, steps, "euler", "karras").sigmas
    starts = [i for i, sigma in enumerate(schedule[:-1].tolist()) if sigma <= max_sigma]
    if not starts:
        raise ValueError(f"redraw max_sigma {max_sigma} is below the schedule's lowest level {schedule[-2]:.3f}")
    rng = np.random.default_rng(seed)
    out = []
    for first in range(0, len(images), chunk):
        x = images[first : first + chunk].to(model.device, model.dtype)
        generators = [torch.Generator().manual_seed(seed + first + i) for i in range(len(x))]
        x0 = _encode(model, x, generators)
        tail = schedule[int(rng.choice(starts)) :]
        x_t = x0 + noise_like(x0, generators) * tail[0].to(x0)
        for step in _denoise(model, captions[first : first + chunk], "", guidance_scale, "euler", tail, x_t,
                             generators, guidance_max_sigma=guidance_max_sigma):  # fmt: skip
            if step.index == len(tail) - 2:  # the last step lands at sigma 0: the latent itself
                break  # (before _denoise decodes it: the images are not needed)
        out.append((step.x / model.config.vae.scaling_factor).float().cpu())
    return torch.cat(out)
