"""Noise schedules as data: betas -> alpha_bar (alphas_cumprod) over the training timesteps.

Forward diffusion (DDPM, Ho et al. 2020, eq. 4): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.
"""

from __future__ import annotations

import math

import torch

from .config import SchedulerConfig


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


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Noise clean x0 to timestep t (B,) in one jump."""
    a = alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * eps
