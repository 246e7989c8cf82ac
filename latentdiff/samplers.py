"""Samplers: stateless functions that walk x from sigmas[0] down to sigmas[-1].

One signature for all:  sample_*(model, x, sigmas, callback=None, generator=None, **options) -> x
Each is written as a generator of Steps (`sample_*.steps(...)`, what the pipelines iterate; a
consumer may replace `step.x` before resuming it); the `@sampler` wrapper runs it to the end,
calling `callback` after every step.
    model(x, sigma) -> x0   a denoiser (denoisers.py), guidance included
    x                       the start, x = x0 + sigmas[0] * eps (pure noise: eps * sigmas[0])
    sigmas                  decreasing noise levels (schedules.make_schedule), one step per gap
    callback(Step)          called after every step with the new x and the x0 estimate
    generator               fresh noise for ancestral samplers, drawn on the CPU so a seed gives the
                            same images on every device; a list gives each batch item its own
Notation: d = (x - x0) / sigma is the ODE's slope dx/dsigma (Karras et al. 2022, eq. 3),
alpha_bar = 1 / (1 + sigma^2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Step:
    index: int  # 0-based
    total: int
    sigma: float  # the noise level this step started from
    x: torch.Tensor  # after the step
    x0: torch.Tensor  # the denoiser's estimate of the clean latent at this step


Callback = Callable[[Step], None] | None


@dataclass
class SharedFrameNoise:
    """Generators for video latents (B, C, F, h, w) whose noise shares `shared` of its variance
    across frames: the mixed noise prior a video model may be trained with (train/video.py)."""

    generators: torch.Generator | list[torch.Generator] | None
    shared: float


Generators = torch.Generator | list[torch.Generator] | SharedFrameNoise | None


def mix_frame_noise(independent: torch.Tensor, common: torch.Tensor, shared: float) -> torch.Tensor:
    """(B, C, F, h, w) per-frame noise and (B, C, 1, h, w) noise common to all frames -> standard
    normal noise whose frames correlate by `shared` (Ge et al. 2023, "Preserve Your Own Correlation",
    the mixed prior): frames start alike, so the model only has to add the motion between them."""
    return (1 - shared) ** 0.5 * independent + shared**0.5 * common


def noise_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the CPU (per batch item for a list)."""
    if isinstance(generator, SharedFrameNoise):
        independent = noise_like(x, generator.generators)
        return mix_frame_noise(independent, noise_like(x[:, :, :1], generator.generators), generator.shared)
    if isinstance(generator, list):
        return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generator]).to(x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def _step(i: int, sigmas: torch.Tensor, x: torch.Tensor, x0: torch.Tensor):
    """Yield the step; continue from step.x, which the consumer may replace (inpainting does)."""
    step = Step(i, len(sigmas) - 1, sigmas[i].item(), x, x0)
    yield step
    return step.x


def sampler(steps_fn):
    """Turn a generator of Steps into the callback-style sampler function (keeping it as `.steps`)."""

    @functools.wraps(steps_fn)
    def run(model, x, sigmas, callback: Callback = None, generator: Generators = None, **options) -> torch.Tensor:
        for step in steps_fn(model, x, sigmas, generator=generator, **options):
            if callback is not None:
                callback(step)
            x = step.x
        return x

    run.steps = steps_fn
    return run


@sampler
def sample_euler(model, x, sigmas, generator: Generators = None):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 without churn).

    Per step: 1. x0 = D(x, sigma)  2. d = (x - x0) / sigma  3. x += d * (sigma_next - sigma).
    With SD's sigmas and final sigma_min this is exactly DDIM with eta = 0.
    """
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i])
        d = (x - x0) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
        x = yield from _step(i, sigmas, x, x0)


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """Split the move to sigma_next into a deterministic part down to sigma_down and fresh noise
    of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 (k-diffusion's get_ancestral_step)."""
    sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt().clamp(max=sigma_next) * eta
    sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
    return sigma_down, sigma_up


@sampler
def sample_euler_ancestral(model, x, sigmas, generator: Generators = None, eta: float = 1.0):
    """Euler ancestral: an Euler step to sigma_down, then fresh noise up to sigma_next.

    Per step: 1. x0 = D(x, sigma)  2. (sigma_down, sigma_up) = ancestral_step  3. x += d (sigma_down - sigma)
    4. x += sigma_up * noise (not after the last step).
    """
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + (x - x0) / sigmas[i] * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_like(x, generator) * sigma_up
        x = yield from _step(i, sigmas, x, x0)


@sampler
def sample_heun(model, x, sigmas, generator: Generators = None):
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1): two model calls per step.

    Per step: 1. d = (x - D(x, sigma)) / sigma, Euler proposal x' at sigma_next
    2. if sigma_next > 0: d' = (x' - D(x', sigma_next)) / sigma_next, step with the mean slope (d + d') / 2
    3. else keep the Euler step (the slope at sigma = 0 is undefined).
    """
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i])
        d = (x - x0) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_next = x + d * dt
            d_next = (x_next - model(x_next, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_next) / 2 * dt
        x = yield from _step(i, sigmas, x, x0)


@sampler
def sample_dpmpp_2m(model, x, sigmas, generator: Generators = None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), multistep: one model call per step.

    In lambda = -log(sigma) (half-log-SNR), h = lambda_next - lambda:
    1. x0 = D(x, sigma)
    2. first step and the step to sigma = 0: first order, x = (sigma_next/sigma) x - (e^-h - 1) x0
    3. otherwise correct x0 with the previous one: x0' = (1 + 1/2r) x0 - (1/2r) x0_prev, r = h_prev / h
    """
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x0
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            target = x0
            if x0_prev is not None:
                r = h_prev / h
                target = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * target
            h_prev = h
        x0_prev = x0
        x = yield from _step(i, sigmas, x, x0)


@sampler
def sample_ddim(model, x, sigmas, generator: Generators = None, eta: float = 0.0):
    """DDIM (Song et al. 2021, eq. 12), written on x = x_t / sqrt(alpha_bar_t).

    Per step, with ab = alpha_bar at sigma and ab' at sigma_next:
    1. x0 = D(x, sigma), eps = (x - x0) / sigma
    2. s = eta * sqrt((1 - ab') / (1 - ab)) * sqrt(1 - ab / ab')        (eq. 16)
    3. x_t' = sqrt(ab') x0 + sqrt(1 - ab' - s^2) eps + s * noise; x = x_t' / sqrt(ab')
    eta = 0 is deterministic (= Euler); eta = 1 is DDPM's ancestral sampler.
    """
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i])
        eps = (x - x0) / sigmas[i]
        ab, ab_next = 1 / (1 + sigmas[i] ** 2), 1 / (1 + sigmas[i + 1] ** 2)
        s = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).sqrt()
        x_t = ab_next.sqrt() * x0 + (1 - ab_next - s**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x_t = x_t + s * noise_like(x, generator)
        x = x_t / ab_next.sqrt()
        x = yield from _step(i, sigmas, x, x0)


@sampler
def sample_ddpm(model, x, sigmas, generator: Generators = None):
    """DDPM ancestral sampling (Ho et al. 2020, eq. 6-7), on strided timesteps.

    Per step, with beta = 1 - ab / ab' (the strided step's beta):
    1. x0 = D(x, sigma)
    2. posterior mean  mu = sqrt(ab') beta / (1 - ab) x0 + sqrt(1 - beta) (1 - ab') / (1 - ab) x_t
    3. x_t' = mu + sqrt(beta (1 - ab') / (1 - ab)) * noise  (the "fixed_small" variance)
    """
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i])
        ab, ab_next = 1 / (1 + sigmas[i] ** 2), 1 / (1 + sigmas[i + 1] ** 2)
        beta = 1 - ab / ab_next
        x_t = x * ab.sqrt()
        mean = ab_next.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_next) / (1 - ab) * x_t
        variance = (beta * (1 - ab_next) / (1 - ab)).clamp(min=1e-20)
        x_t = mean + variance.sqrt() * noise_like(x, generator)
        x = x_t / ab_next.sqrt()
        x = yield from _step(i, sigmas, x, x0)


SAMPLERS = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
