"""Train the text-to-video UNet, top to bottom (Ho et al. 2022, "Video Diffusion Models").

    latentdiff train video --recipe recipes/video_builtin.toml [--resume]

The VAE and the CLIP text tower are frozen, as for images; the video UNet (video_unet.py) starts
from a trained image UNet (`init_from`), its temporal layers as identity. Each step trains on a
batch of moving-shapes videos (data/moving_shapes.py) and, jointly, on a batch of still shapes
scenes as 1-frame videos (the paper's joint image-video training: it keeps the spatial layers
sharp while the temporal ones learn motion). Both batches: eps-prediction on x_t = q_sample(x0, t,
eps) with the video's own t, the same for all its frames, and caption dropout for guidance.

Seven settings are meant to help a trained image model learn motion (recipes/video_shapes2.toml and
video_shapes3.toml record what they measured):
- shared_noise: a share of each video's noise variance common to all its frames (the mixed prior
  of Ge et al. 2023, "Preserve Your Own Correlation"). From independent noise per frame, an
  image model draws a different scene in every frame and the new temporal layers must first undo
  that; from correlated noise the frames start alike. Sampling draws its noise the same way.
- frame_position: each temporal layer adds its frame's sinusoidal index encoding to its input
  (AnimateDiff's motion module does). With the relative-position bias alone, frames whose contents
  agree get the same output from every temporal layer, so nothing says which frame comes first.
- temporal_text: each temporal layer also adds the caption (its states' mean, projected) to its
  input, so the layers that relate frames read "moving left" themselves (video_shapes4 measured that
  without it the model ignores the direction word: benchmarks/video_direction.py).
- reverse_pairs: half of each video batch is the other half played backwards, under the caption
  with every direction turned around (data/moving_shapes.reverse_caption), at the same t and with
  the same noise reversed in time. Each pair shows the same frames in both orders with opposite
  words, so the only way to denoise both is to read the word and the frame order. A model trained
  on four such videos learns the word in 800 steps (benchmarks/video_overfit.py); on the full pool
  the runs before this one showed no sign of it after 2,000. With the pairs it still showed none
  after 1,500 (recipes/video_shapes6.toml).
- space_time_conv: each temporal layer ends with a depthwise 3x3x3 convolution over frames, height
  and width (video_unet.SpaceTimeConv). Temporal attention relates one pixel across frames, so it
  cannot by itself put an object one pixel further along in the next frame; one such kernel can.
- spatial_lr_scale: the spatial (image) layers learn at this multiple of the lr, the new temporal
  layers at the full lr; 0 freezes the image model.
- v_weight_cap: weigh each video's eps error by 1 / alpha_bar_t (what the v objective of Ho et al.
  weighs it by), capped there and normalised to mean 1 over t. The plain eps loss is nearly blind
  at high noise, where each frame's layout (so the motion, and whether frames agree at all) is
  decided: at t = 950 of the linear schedule models/shapes-64's eps error is about 0.0002 against
  0.03 at t = 100 (a one-off check on 48 moving-shapes videos), while its x0 error is the eps
  error times 1 / alpha_bar_t - 1 (about 9,400 there).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import SchedulerConfig, UNetConfig
from ..data.moving_shapes import make_video_dataset, reverse_caption
from ..samplers import mix_frame_noise
from ..schedules import alphas_cumprod
from ..tokenizer import CLIPTokenizer
from ..video_unet import VideoUNet
from .common import DataConfig, OptimConfig, RecipeError, device, fit, image_tensor, pool_tensors, shard
from .unet import (
    _init_unet,
    _scheduler,
    _unet,
    denoising_loss,
    encode_pool,
    frozen_text_encoder,
    frozen_vae,
    latent_scale,
)


@dataclasses.dataclass
class VideoRecipe:
    model: UNetConfig = dataclasses.field(default_factory=_unet)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=_scheduler)
    frames: int = 8
    max_frames: int = 16
    causal: bool = False
    vae: str = "runs/vae_shapes"
    clip: str = "runs/clip_shapes"
    vae_weights: str = "ema"
    clip_weights: str = "ema"
    init_from: str = ""  # the image UNet (a `train unet` run or a diffusers folder) the spatial layers start from
    videos: int = 2_000  # moving-shapes videos in the pool (data.seed); the image pool is data.pool scenes
    image_batch_size: int = 32  # still scenes per step, trained as 1-frame videos (0: videos only)
    caption_dropout: float = 0.1
    shared_noise: float = 0.0  # share of a video's noise variance common to its frames, in [0, 1)
    frame_position: bool = False  # add each frame's absolute index to the temporal layers' input (video_unet.py)
    temporal_text: bool = False  # add the pooled caption to the temporal layers' input (video_unet.py)
    space_time_conv: bool = False  # end each temporal layer with a depthwise 3x3x3 convolution (video_unet.py)
    reverse_pairs: bool = False  # half of each video batch: the other half backwards, directions reversed
    spatial_lr_scale: float = 1.0  # the image layers' lr as a multiple of optim.lr (0: frozen)
    v_weight_cap: float = 0.0  # videos' eps errors weighed by min(1 / alpha_bar_t, cap), mean 1 (0: unweighted)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 8  # videos per step
    log_every: int = 50
    ckpt_every: int = 500
    out: str = "runs/video"


@torch.no_grad()
def video_posteriors(vae, videos, chunk: int = 256):
    """(N, F, H, W, 3) uint8 videos -> the VAE's latent means and stds, each (N, C, F, h, w); chunk frames at a time."""
    frames = image_tensor(videos.reshape(-1, *videos.shape[2:]))  # (N*F, 3, H, W)
    posteriors = [vae.encode(part) for part in frames.split(chunk)]

    def per_video(t: torch.Tensor) -> torch.Tensor:
        return t.view(len(videos), videos.shape[1], *t.shape[1:]).transpose(1, 2)  # (N, C, F, h, w)

    return per_video(torch.cat([p.mean for p in posteriors])), per_video(torch.cat([p.std for p in posteriors]))


@torch.no_grad()
def _encode_videos(vae, text_encoder, recipe: VideoRecipe, chunk: int = 256):
    """Latent posteriors (N, C, F, h, w) of the moving-shapes pool, its captions' text states, and
    (with reverse_pairs, else None) the text states of the captions with every direction reversed."""
    videos, captions = make_video_dataset(recipe.data.seed, recipe.videos, recipe.frames, recipe.data.canvas)
    means, stds = video_posteriors(vae, videos, chunk)
    tokenizer = CLIPTokenizer.default()

    def encode(texts: list[str]) -> torch.Tensor:
        return torch.cat([text_encoder.encode(tokenizer(texts[i : i + chunk]).input_ids)
                          for i in range(0, len(texts), chunk)])  # fmt: skip

    states = encode(captions)
    reversed_states = encode([reverse_caption(c) for c in captions]) if recipe.reverse_pairs else None
    return means, stds, states, reversed_states


def v_weights(alpha_bar: torch.Tensor, cap: float) -> torch.Tensor:
    """(T,) per-timestep weights for the eps error: min(1 / alpha_bar_t, cap), normalised to mean 1
    (t is drawn uniformly, so the loss keeps its scale)."""
    weights = (1 / alpha_bar).clamp(max=cap)
    return weights / weights.mean()


def pair_backwards(idx, t, drop, eps, latent_noise) -> torch.Tensor:
    """Make the second half of a batch copy the first (in place): the same videos, t, caption
    dropout and noise; returns (B,) bool, True where a video is to be played backwards."""
    half = len(idx) // 2
    for x in (idx, t, drop, eps, latent_noise):
        x[half : 2 * half] = x[:half]
    backwards = torch.zeros(len(idx), dtype=torch.bool)
    backwards[half : 2 * half] = True
    return backwards


def setup(recipe: VideoRecipe):
    if not 1 <= recipe.frames <= recipe.max_frames:
        raise RecipeError(f"frames must be between 1 and max_frames ({recipe.max_frames}), got {recipe.frames}")
    if not 0 <= recipe.shared_noise < 1:
        raise RecipeError(f"shared_noise must be in [0, 1), got {recipe.shared_noise}")
    if recipe.spatial_lr_scale < 0:
        raise RecipeError(f"spatial_lr_scale must be 0 or more, got {recipe.spatial_lr_scale}")
    if recipe.reverse_pairs and recipe.batch_size < 2:
        raise RecipeError(f"reverse_pairs needs a batch_size of at least 2 (pairs of videos), got {recipe.batch_size}")
    if recipe.v_weight_cap and recipe.v_weight_cap < 1:
        raise RecipeError(f"v_weight_cap must be 0 (off) or at least 1, got {recipe.v_weight_cap}")
    torch.manual_seed(recipe.data.seed)
    dev = device()
    text_encoder = frozen_text_encoder(recipe.clip, recipe.clip_weights)
    vae = frozen_vae(recipe.vae, recipe.vae_weights)
    videos = _encode_videos(vae, text_encoder, recipe)
    empty = text_encoder.encode(CLIPTokenizer.default()([""]).input_ids)  # the dropped caption
    stills = None
    if recipe.image_batch_size:
        images, captions = pool_tensors(recipe.data)
        means, stds, states, _ = encode_pool(vae, text_encoder, images, captions)
        stills = (means[:, :, None], stds[:, :, None], states, None)  # images as 1-frame videos (N, C, 1, h, w)
    scale = latent_scale(videos[0], videos[1])
    model = VideoUNet(recipe.model, recipe.max_frames, recipe.causal, recipe.shared_noise, recipe.frame_position,
                      recipe.temporal_text, recipe.space_time_conv)  # fmt: skip
    if recipe.init_from:
        model.unet.load_state_dict(_init_unet(recipe.init_from))
    model.unet.requires_grad_(recipe.spatial_lr_scale > 0)
    model = model.to(dev)
    alpha_bar = alphas_cumprod(recipe.scheduler).float().to(dev)
    T = recipe.scheduler.num_train_timesteps
    video_weights = v_weights(alpha_bar, recipe.v_weight_cap) if recipe.v_weight_cap else None

    def batch_loss(net, means, stds, states, reversed_states, B, rank, world, weights=None) -> torch.Tensor:
        idx, t = torch.randint(len(means), (B,)), torch.randint(T, (B,))
        drop = torch.rand(B) < recipe.caption_dropout
        eps, latent_noise = torch.randn(B, *means.shape[1:]), torch.randn(B, *means.shape[1:])
        if recipe.shared_noise and means.shape[2] > 1:  # videos; a still's one frame needs no mixing
            eps = mix_frame_noise(eps, torch.randn(B, means.shape[1], 1, *means.shape[3:]), recipe.shared_noise)
        backwards = torch.zeros(B, dtype=torch.bool)
        if reversed_states is not None:
            backwards = pair_backwards(idx, t, drop, eps, latent_noise)
        parts = (idx, t, drop, eps, latent_noise, backwards)
        idx, t, drop, eps, latent_noise, backwards = (shard(x, rank, world) for x in parts)
        x0 = (means[idx] + stds[idx] * latent_noise) * scale
        flip = backwards.view(-1, 1, 1, 1, 1)
        x0, eps = torch.where(flip, x0.flip(2), x0), torch.where(flip, eps.flip(2), eps)  # frames in reverse order
        if reversed_states is not None:
            states = torch.where(backwards.view(-1, 1, 1), reversed_states[idx], states[idx])
        else:
            states = states[idx]
        context = torch.where(drop.view(-1, 1, 1), empty, states)
        x0, context, t, eps = (x.to(dev) for x in (x0, context, t, eps))
        weights = None if weights is None else weights[t]
        return denoising_loss(net, x0, context, t, eps, alpha_bar, recipe.scheduler.prediction_type, weights)

    def loss_fn(net, rank: int, world: int) -> torch.Tensor:
        loss = batch_loss(net, *videos, recipe.batch_size, rank, world, video_weights)
        if stills is not None:
            loss = loss + batch_loss(net, *stills, recipe.image_batch_size, rank, world)
        return loss

    return model, loss_fn, vae, text_encoder, scale


def train(recipe: VideoRecipe, resume: bool = False, stop_at: int | None = None, quiet: bool = False) -> dict:
    model, loss_fn, vae, text_encoder, scale = setup(recipe)

    def lr_scale(name: str) -> float:
        return 1.0 if name.startswith("temporal.") else recipe.spatial_lr_scale

    result = fit(model, loss_fn, recipe, resume, stop_at, quiet, lr_scale=lr_scale)
    result.update(vae=vae, text_encoder=text_encoder, scale=scale, out=Path(recipe.out))
    return result
