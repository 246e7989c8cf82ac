"""txt2video: text -> a short video, sampled with the image pipeline's samplers and guidance.

    for state in txt2video(model, video_unet, "a red circle moving left", frames=8, steps=20):
        ...  # samplers.Step per step, finally the video (B, 3, F, H, W) in [0, 1]

`model` supplies the text encoder, the VAE (each frame decoded as an image) and the schedule;
`video_unet` (video_unet.py) predicts the noise of all frames at once. Samplers and guidance are
the image ones: they treat x as any tensor, here (B, C, F, h, w).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .model import StableDiffusion
from .pipeline import _check, _denoise, _prompts, sampling_schedule
from .samplers import SharedFrameNoise, Step, noise_like
from .video_unet import VideoUNet


def txt2video(
    model: StableDiffusion,
    video_unet: VideoUNet,
    prompt: str | list[str],
    frames: int = 8,
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    sampler: str = "euler",
    sigmas: str = "default",
    noise: torch.Tensor | None = None,
) -> Iterator[Step | torch.Tensor]:
    """Video i of a batch uses seed + i for all of its noise; `noise` (B, C, F, h, w) replaces the start.

    The noise (the start, and an ancestral sampler's fresh noise) follows the video UNet's prior:
    `video_unet.shared_noise` of its variance common to all frames.
    """
    h, w = _check(model, steps, sampler, None, None)
    if not 1 <= frames <= video_unet.max_frames:
        raise ValueError(f"frames must be between 1 and {video_unet.max_frames} (the video UNet's limit), got {frames}")
    prompts = _prompts(prompt, None)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    if video_unet.shared_noise:
        generators = SharedFrameNoise(generators, video_unet.shared_noise)
    shape = (len(prompts), model.config.unet.out_channels, frames, h, w)
    if noise is None:
        noise = noise_like(torch.empty(shape, dtype=model.dtype), generators)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must be {shape}, got {tuple(noise.shape)}")
    schedule = sampling_schedule(model, steps, sampler, sigmas)
    x = noise.to(model.device, model.dtype) * (1 + schedule.sigmas[0] ** 2).sqrt().to(model.dtype)
    return _denoise(model, prompts, negative_prompt, guidance_scale, sampler, schedule.sigmas, x, generators,
                    unet=video_unet)  # fmt: skip
