"""Does a video model read the direction word? Its denoising error under the true caption and a reversed one.

For 48 held-out one-object moving-shapes videos ("a red circle moving left", seed FIDELITY_SEED),
the VAE's latents are noised to t (the same noise, drawn with the model's shared-noise prior) and
denoised once under the video's caption and under the same caption with the direction reversed
("... moving right"). The error is measured on the predicted clean latents (x0), where the layout,
and so the motion, lives. A model that has learned motion from the text denoises its own caption
better: the ratio reversed / true rises above 1. A model that ignores the word prints 1.00.

The last column, `still`, is the same ratio for a model that predicts every frame from the image
UNet alone (the folder's spatial layers with identity temporal layers): what the image model
already reads from the word, without any motion.

    .venv/bin/python benchmarks/video_direction.py runs/video_shapes4/model [more folders]

First, per folder, whether the text tower tells the two captions apart at all: the cosine of their
padding states (the mean of the last 10, which take most of the UNet's cross-attention).

Prints one line per folder, then one per folder and t; writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up"}
TIMESTEPS = (300, 500, 700, 900)


def one_object_videos(n: int, frames: int = 8):
    """n held-out one-object videos (n, F, 64, 64, 3), their captions, and the captions reversed."""
    import numpy as np

    from latentdiff.data.moving_shapes import render_video, sample_moving_scene
    from latentdiff.evaluate import FIDELITY_SEED

    rng = np.random.default_rng(FIDELITY_SEED)
    videos, captions, reversed_ = [], [], []
    while len(videos) < n:
        moving = sample_moving_scene(rng, frames)
        if len(moving.scene.objects) != 1:
            continue
        direction = moving.directions[0]
        videos.append(render_video(moving, frames))
        captions.append(moving.caption)
        reversed_.append(moving.caption.replace(f"moving {direction}", f"moving {REVERSED[direction]}"))
    return np.stack(videos), captions, reversed_


@torch.no_grad()
def x0_errors(model, video_unet, latents, captions, reversed_, t: int, seed: int = 0) -> tuple[float, float]:
    """Mean squared x0 error under the true and the reversed captions at timestep t (same noise)."""
    from latentdiff.samplers import mix_frame_noise
    from latentdiff.schedules import alphas_cumprod, q_sample

    g = torch.Generator().manual_seed(seed + t)
    eps = torch.randn(latents.shape, generator=g)
    if video_unet.shared_noise:
        common = torch.randn(*latents.shape[:2], 1, *latents.shape[3:], generator=g)
        eps = mix_frame_noise(eps, common, video_unet.shared_noise)
    alpha_bar = alphas_cumprod(model.config.scheduler).float()
    a = alpha_bar[t]
    steps = torch.full((len(latents),), t)
    x_t = q_sample(latents, steps, eps, alpha_bar)
    errors = []
    for prompts in (captions, reversed_):
        out = video_unet(x_t, steps, model.encode_prompt(prompts).float())
        if model.config.scheduler.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
            x0_pred = a.sqrt() * x_t - (1 - a).sqrt() * out
        else:
            x0_pred = (x_t - (1 - a).sqrt() * out) / a.sqrt()
        errors.append((x0_pred - latents).square().mean().item())
    return errors[0], errors[1]


@torch.no_grad()
def main(folders: list[str], n: int = 48) -> None:
    from latentdiff.train.common import image_tensor
    from latentdiff.video_unet import VideoUNet
    from latentdiff.weights.video_folder import load_video

    videos, captions, reversed_ = one_object_videos(n)
    for folder in folders:
        model, video = load_video(folder)
        model, video = model.float(), video.float()
        frames = image_tensor(videos.reshape(-1, *videos.shape[2:]))  # (n*F, 3, 64, 64)
        latents = model.vae.encode(frames).mean * model.config.vae.scaling_factor
        latents = latents.view(n, videos.shape[1], *latents.shape[1:]).transpose(1, 2)  # (n, C, F, h, w)
        true_states, reversed_states = model.encode_prompt(captions).float(), model.encode_prompt(reversed_).float()
        cosine = torch.nn.functional.cosine_similarity(true_states[:, -10:].mean(1), reversed_states[:, -10:].mean(1))
        print(f"{folder}: text tower's padding states (mean of the last 10), true vs reversed: cosine "
              f"{cosine.mean().item():.2f}")  # fmt: skip
        still = VideoUNet.from_image_unet(video.unet, video.max_frames, shared_noise=video.shared_noise).eval()
        for t in TIMESTEPS:
            true, rev = x0_errors(model, video, latents, captions, reversed_, t)
            still_true, still_rev = x0_errors(model, still, latents, captions, reversed_, t)
            print(f"{folder} t={t}: x0 error {true:.4f} (true caption), {rev:.4f} (reversed): "
                  f"ratio {rev / true:.2f}; still {still_rev / still_true:.2f}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:] or ["runs/video_shapes4/model"])
