"""txt2img, img2img and inpaint as generators that yield each denoising step, then the images.

    for state in txt2img(model, "a red circle", steps=20, sampler="dpmpp_2m", sigmas="karras"):
        ...  # samplers.Step(index, total, sigma, x, x0) per step, finally images (B, 3, H, W) in [0, 1]

The CLI wraps the generator in a progress bar, the server streams previews from it, the explainer
records it. Arguments are checked when the function is called, before anything runs.

Seeds: image i of a batch uses seed + i for all of its noise, drawn on the CPU, so it comes out the
same alone or in a batch, on any device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from .denoisers import Denoiser, GuidedDenoiser
from .model import StableDiffusion
from .samplers import SAMPLERS, Step, get_sampler, noise_like
from .schedules import Schedule, make_schedule, train_sigmas
from .unet import DeepFeatures

# DDIM lands on alpha_bar_0, as SD's scheduler config says ("set_alpha_to_one": false); the
# others end at sigma = 0.
_FINAL_SIGMA = {"ddim": "sigma_min"}


def _check(model: StableDiffusion, steps: int, sampler: str, height: int | None, width: int | None):
    get_sampler(sampler)
    f = model.config.vae.downsample_factor
    height = height or model.config.unet.sample_size * f
    width = width or model.config.unet.sample_size * f
    if height % f or width % f or height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive multiples of {f}, got {height}x{width}")
    n_train = model.config.scheduler.num_train_timesteps
    if not 1 <= steps <= n_train:
        raise ValueError(f"steps must be between 1 and {n_train}, got {steps}")
    return height // f, width // f


def sampling_schedule(model: StableDiffusion, steps: int, sampler: str, sigmas: str = "default") -> Schedule:
    """The noise levels a pipeline walks for this sampler and step count."""
    # "leading" spacing with offset 1 is how SD 1.x/2.x ship: 981, 961, ..., 1 for 50 of 1000 steps.
    final = _FINAL_SIGMA.get(sampler, "zero")
    return make_schedule(model.config.scheduler, steps, "leading", offset=1, sigmas=sigmas, final=final)


def initial_noise(model: StableDiffusion, n: int, h: int, w: int, seed: int):
    """txt2img's starting noise (n, C, h, w) at latent size h x w, and the generators it continues with."""
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    shape = (n, model.config.unet.out_channels, h, w)
    return noise_like(torch.empty(shape, dtype=model.dtype), generators).to(model.device), generators


def _prompts(prompt: str | list[str], batch: int | None) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or (batch is not None and batch < 1):
        raise ValueError(f"need at least one prompt and a batch of at least 1, got {len(prompts)} and {batch}")
    if batch is not None:
        prompts = prompts * batch if len(prompts) == 1 else prompts
    return prompts


def txt2img(
    model: StableDiffusion,
    prompt: str | list[str],
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    sampler: str = "euler_ancestral",
    sigmas: str = "default",
    batch: int | None = None,
    deep_cache: int = 1,
    guidance_max_sigma: float | None = None,
) -> Iterator[Step | torch.Tensor]:
    """Text -> images. `batch` repeats a single prompt; a list of prompts is one image each.

    deep_cache N > 1: an approximation, faster: the UNet's deep levels run on every N-th call only
    (unet.DeepFeatures); 1 is the exact path.
    guidance_max_sigma: guide only the steps at noise levels <= this (denoisers.GuidedDenoiser); the
    noisier steps run the conditional half alone. None guides every step."""
    h, w = _check(model, steps, sampler, height, width)
    prompts = _prompts(prompt, batch)
    schedule = sampling_schedule(model, steps, sampler, sigmas)
    noise, generators = initial_noise(model, len(prompts), h, w, seed)
    x = noise * (1 + schedule.sigmas[0] ** 2).sqrt().to(model.dtype)
    unet = DeepFeatures(model.unet, deep_cache) if deep_cache != 1 else None
    return _denoise(model, prompts, negative_prompt, guidance_scale, sampler, schedule.sigmas, x, generators,
                    unet=unet, guidance_max_sigma=guidance_max_sigma)  # fmt: skip


def _image_batch(model, prompt, image: torch.Tensor, steps: int, sampler: str, strength: float):
    """Checks shared by img2img and inpaint; returns prompts and the images, one per prompt."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    _check(model, steps, sampler, image.shape[2], image.shape[3])
    prompts = _prompts(prompt, image.shape[0] if image.shape[0] > 1 else None)
    image = image.expand(len(prompts), -1, -1, -1) if image.shape[0] == 1 else image
    if image.shape[0] != len(prompts):
        raise ValueError(f"{image.shape[0]} images for {len(prompts)} prompts")
    return prompts, image.to(model.device, model.dtype)


@torch.no_grad()
def _encode(model: StableDiffusion, image: torch.Tensor, generators) -> torch.Tensor:
    """Image in [-1, 1] -> a sample of its latent posterior, scaled for diffusion."""
    posterior = model.vae.encode(image)
    return (posterior.mean + posterior.std * noise_like(posterior.mean, generators)) * model.config.vae.scaling_factor


def _strength_tail(schedule: Schedule, steps: int, strength: float) -> torch.Tensor:
    # As diffusers does: run int(steps * strength) steps, the last ones of the full schedule.
    return schedule.sigmas[steps - min(int(steps * strength), steps) :]


def img2img(
    model: StableDiffusion,
    prompt: str | list[str],
    image: torch.Tensor,
    strength: float = 0.75,
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    sampler: str = "euler_ancestral",
    sigmas: str = "default",
    guidance_max_sigma: float | None = None,
) -> Iterator[Step | torch.Tensor]:
    """Text + image -> image: noise the image's latent to `strength` of the way, then denoise.

    image: (B, 3, H, W) in [0, 1] (one image per prompt, or one for all). strength 0 returns the
    image through the VAE, 1 ignores it; only the last int(steps * strength) steps run.
    """
    prompts, image = _image_batch(model, prompt, image, steps, sampler, strength)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    tail = _strength_tail(sampling_schedule(model, steps, sampler, sigmas), steps, strength)
    x0 = _encode(model, image * 2 - 1, generators)
    x = x0 + noise_like(x0, generators) * tail[0].to(model.dtype) if len(tail) > 1 else x0
    return _denoise(model, prompts, negative_prompt, guidance_scale, sampler, tail, x, generators,
                    guidance_max_sigma=guidance_max_sigma)  # fmt: skip


def inpaint(
    model: StableDiffusion,
    prompt: str | list[str],
    image: torch.Tensor,
    mask: torch.Tensor,
    strength: float = 1.0,
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    sampler: str = "euler_ancestral",
    sigmas: str = "default",
    guidance_max_sigma: float | None = None,
) -> Iterator[Step | torch.Tensor]:
    """Repaint where mask is 1 (white), keep the rest.

    mask: (B or 1, 1, H, W) in [0, 1], thresholded at 0.5. With SD's inpainting UNet (9 input
    channels: latent, mask, masked-image latent) the model sees what to keep. With any other UNet
    the kept region is pasted back after every step, noised to the step's level (latent blending).
    """
    prompts, image = _image_batch(model, prompt, image, steps, sampler, strength)
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"mask must be (B, 1, {image.shape[2]}, {image.shape[3]}) like the image, got {tuple(mask.shape)}"
        )
    unet_channels = model.config.unet.in_channels
    latent_channels = model.config.unet.out_channels
    if unet_channels not in (latent_channels, 2 * latent_channels + 1):
        raise ValueError(f"a UNet with {unet_channels} input channels is neither plain nor an inpainting UNet")
    mask = (mask >= 0.5).to(model.device, model.dtype).expand(len(prompts), -1, -1, -1)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    tail = _strength_tail(sampling_schedule(model, steps, sampler, sigmas), steps, strength)
    blend = unet_channels == latent_channels
    # Draw from each image's generator in diffusers' order: image posterior (when used), the initial
    # noise, the masked image's posterior; seeds then give the same images in both.
    x0 = _encode(model, image * 2 - 1, generators) if blend or strength < 1 else None
    f = model.config.vae.downsample_factor
    shape = (len(prompts), latent_channels, image.shape[2] // f, image.shape[3] // f)
    noise = noise_like(torch.empty(shape, dtype=model.dtype), generators).to(model.device)
    x = noise * (1 + tail[0] ** 2).sqrt().to(model.dtype) if strength == 1 else x0 + noise * tail[0].to(model.dtype)
    masked = _encode(model, (image * 2 - 1) * (mask < 0.5), generators)  # repainted pixels set to grey
    latent_mask = torch.nn.functional.interpolate(mask, size=shape[2:])  # nearest
    if blend:
        return _denoise(model, prompts, negative_prompt, guidance_scale, sampler, tail, x, generators,
                        keep=(x0, noise, latent_mask), guidance_max_sigma=guidance_max_sigma)  # fmt: skip
    return _denoise(model, prompts, negative_prompt, guidance_scale, sampler, tail, x, generators,
                    extra_channels=torch.cat([latent_mask, masked], dim=1),
                    guidance_max_sigma=guidance_max_sigma)  # fmt: skip


@torch.no_grad()
def _denoise(model, prompts, negative_prompt, guidance_scale, sampler, sigmas, x, generators,
             keep=None, extra_channels=None, unet=None, guidance_max_sigma=None):  # fmt: skip
    """Run the sampler with guidance, yield its steps, then decode.

    keep=(x0, noise, mask): latent blending; after each step the region where mask is 0 is reset to
    the image's latent x0 noised to the step's level. extra_channels: fed to the UNet beside x_t.
    unet: another noise predictor for model.unet (the video UNet, whose latents are (B, C, F, h, w);
    they are decoded frame by frame and come back as (B, 3, F, H, W)).
    """
    unet = unet or model.unet
    if extra_channels is not None:

        def unet(x_t, t, context):  # CFG doubles the batch: repeat the extra channels to match
            extra = extra_channels.repeat(x_t.shape[0] // extra_channels.shape[0], 1, 1, 1)
            return model.unet(torch.cat([x_t, extra], dim=1), t, context)

    scheduler = model.config.scheduler
    denoiser = Denoiser(unet, train_sigmas(scheduler).to(model.device), scheduler.prediction_type)
    context = model.encode_prompt(prompts)
    uncond = model.encode_prompt([negative_prompt] * len(prompts))
    if guidance_max_sigma is not None and not guidance_max_sigma >= 0:
        raise ValueError(
            f"guidance_max_sigma must be a noise level >= 0 or None (guide every step), got {guidance_max_sigma}"
        )
    guided = GuidedDenoiser(denoiser, context, uncond, guidance_scale, guidance_max_sigma)
    sigmas = sigmas.to(model.device, model.dtype)
    for step in get_sampler(sampler).steps(guided, x, sigmas, generator=generators):
        if keep is not None:
            x0, noise, mask = keep
            sigma = sigmas[step.index + 1]
            last = step.index + 1 == len(sigmas) - 1
            # In x_t terms, as diffusers blends: the clean latent at the end, else x0 noised to sigma.
            kept = x0 * (1 + sigma**2).sqrt() if last else x0 + noise * sigma
            step.x = (1 - mask) * kept + mask * step.x
        yield step
        x = step.x
    if not torch.isfinite(x).all():
        raise FloatingPointError("the model produced NaN or infinite latents; try fp32, fewer steps or another seed")
    latents = x / (1 + sigmas[-1] ** 2).sqrt()  # back to the VP latent the VAE was trained on
    if latents.ndim == 5:  # video (B, C, F, h, w): decode every frame as an image
        B, C, frames, h, w = latents.shape
        frames_first = latents.transpose(1, 2).reshape(B * frames, C, h, w)
        image = model.vae.decode(frames_first / model.config.vae.scaling_factor)
        image = image.view(B, frames, *image.shape[1:]).transpose(1, 2)  # (B, 3, F, H, W)
    else:
        image = model.vae.decode(latents / model.config.vae.scaling_factor)
    yield ((image.float() + 1) / 2).clamp(0, 1)


def last_images(states: Iterator[Step | torch.Tensor]) -> torch.Tensor:
    """Run a pipeline to its end without watching the steps: the images, (B, 3, H, W) in [0, 1]."""
    images = None
    for images in states:  # noqa: B007 (the generator's last item is the result)
        pass
    return images


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def from_pil(image: Image.Image, mode: str = "RGB") -> torch.Tensor:
    """A PIL image -> (1, C, H, W) float in [0, 1]; mode "L" gives one grey channel (masks)."""
    arr = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.reshape(*arr.shape[:2], -1)).permute(2, 0, 1)[None]


__all__ = [
    "SAMPLERS",
    "Step",
    "from_pil",
    "img2img",
    "initial_noise",
    "inpaint",
    "last_images",
    "sampling_schedule",
    "to_pil",
    "txt2img",
]
