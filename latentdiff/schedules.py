"""Noise schedules as data: betas -> alpha_bar -> sigma, and the sigmas a sampler walks down.

Notation (Ho et al. 2020; Karras et al. 2022):
    alpha_bar_t  fraction of signal left at training timestep t (alphas_cumprod)
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps          the "VP" latent the UNet reads
    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)                  the same noise level, "VE" form:
    x = x_t / sqrt(alpha_bar_t) = x0 + sigma_t eps                   what the samplers step on
Samplers run on decreasing sigmas; the denoiser (denoisers.py) maps each sigma back to a timestep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import SchedulerConfig

SPACINGS = ("leading", "trailing", "linspace")
SIGMA_KINDS = ("default", "karras", "exponential")


def betas(cfg: SchedulerConfig) -> torch.Tensor:
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64)
    if cfg.beta_schedule == "scaled_linear":
        # SD's schedule: linear in sqrt(beta), which spends more steps at low noise than "linear".
        return torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=torch.float64) ** 2

    # squaredcos_cap_v2: the cosine schedule of Nichol & Dhariwal 2021, betas capped at 0.999.
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], dtype=torch.float64
    )


def alphas_cumprod(cfg: SchedulerConfig) -> torch.Tensor:
    """alpha_bar_t for t = 0 .. num_train_timesteps-1 (float64: products of 1000 terms)."""
    return torch.cumprod(1.0 - betas(cfg), dim=0)


def train_sigmas(cfg: SchedulerConfig) -> torch.Tensor:
    alpha_bar = alphas_cumprod(cfg)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Forward diffusion: noise clean x0 to timesteps t (B,) in one jump (Ho et al. 2020, eq. 4)."""
    a = alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def spaced_timesteps(num_train: int, steps: int, spacing: str = "leading", offset: int = 0) -> torch.Tensor:
    """`steps` integer training timesteps, descending (Lin et al. 2023, table 2).

    leading: 0, k, 2k ... (+offset; SD 1.x/2.x ship offset 1), never reaching the noisiest t.
    trailing: counts down from the last timestep, so sampling starts at pure noise.
    linspace: evenly from 0 to the last timestep, rounded.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if not 1 <= steps <= num_train:
        raise ValueError(f"steps must be between 1 and {num_train}, got {steps}")
    if spacing == "leading":
        t = torch.arange(steps, dtype=torch.float64) * (num_train // steps) + offset
    elif spacing == "trailing":
        t = torch.arange(num_train, 0, -num_train / steps, dtype=torch.float64).round() - 1
    else:
        t = torch.linspace(0, num_train - 1, steps, dtype=torch.float64).round()
    return t.sort(descending=True).values


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The (fractional) training timestep of a noise level: linear interpolation in log sigma."""
    log_sigmas = sigmas.log()
    log_sigma = sigma.clamp(min=1e-10).log()
    low = (log_sigma[..., None] >= log_sigmas).sum(-1).sub(1).clamp(0, len(sigmas) - 2)
    w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])).clamp(0, 1)
    return low + w


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: evenly spaced in sigma^(1/rho), so steps crowd at low noise."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """Evenly spaced in log sigma."""
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()


@dataclass(frozen=True)
class Schedule:
    """What a sampler walks: sigmas[0] > ... > sigmas[-1], and the timestep the UNet is told at each.

    sigmas has one more entry than timesteps: the level the last step lands on (0, or alpha_bar_0's
    sigma for DDIM as SD configures it).
    """

    sigmas: torch.Tensor  # (steps + 1,) float64
    timesteps: torch.Tensor  # (steps,) float64, possibly fractional (Karras / exponential)


def make_schedule(
    cfg: SchedulerConfig,
    steps: int,
    spacing: str = "leading",
    offset: int = 1,
    sigmas: str = "default",
    final: str = "zero",
) -> Schedule:
    """The sigmas for `steps` sampling steps.

    sigmas="default" takes the training sigmas at the spaced timesteps. "karras" / "exponential"
    respace the range those timesteps span, from the first one's sigma down to the last one's, as
    diffusers does, and read each sigma's timestep off the training table. With "linspace" spacing
    and offset 0 that range is the whole training range [sigma(0), sigma(T-1)], as in k-diffusion
    and A1111; SD's "leading" spacing starts lower (timestep 951 of 999 for 20 steps), which the
    built-in model draws better from (see cli.DEFAULTS).
    final="zero" ends at a clean image; "sigma_min" ends at timestep 0's noise level.
    """
    if sigmas not in SIGMA_KINDS:
        raise ValueError(f"unknown sigma spacing {sigmas!r}; choose one of {', '.join(SIGMA_KINDS)}")
    table = train_sigmas(cfg)
    t = spaced_timesteps(cfg.num_train_timesteps, steps, spacing, offset)
    s = table[t.long()]
    if sigmas != "default":
        respace = karras_sigmas if sigmas == "karras" else exponential_sigmas
        s = respace(s.min().item(), s.max().item(), steps)
        t = sigma_to_t(s, table)
    last = {"zero": 0.0, "sigma_min": table[0].item()}[final]
    return Schedule(torch.cat([s, s.new_tensor([last])]), t)
