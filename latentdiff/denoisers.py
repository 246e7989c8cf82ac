"""Wrap a noise-predicting UNet into one interface: D(x, sigma) -> x0, the clean-latent estimate.

Samplers step on x = x0 + sigma * eps (schedules.py). The UNet was trained on the VP latent
x_t = x / sqrt(1 + sigma^2) at a timestep t, and predicts eps, v or x0 depending on the model;
the denoiser hides all three so every sampler is written once (Karras et al. 2022, sec. 4;
k-diffusion's `DiscreteEpsDDPMDenoiser` / `DiscreteVDDPMDenoiser`).

Legend: B batch, C latent channels, H W latent size, T tokens, D context width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import sigma_to_t

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, context) -> output


class Denoiser:
    def __init__(self, model: ModelFn, train_sigmas: torch.Tensor, prediction_type: str, quantize: bool = False):
        """model: the UNet, called as model(x_t, t, context); quantize rounds fractional timesteps
        (for samplers whose reference feeds the UNet integer timesteps)."""
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unknown prediction_type {prediction_type!r}")
        self.model = model
        self.train_sigmas = train_sigmas
        self.prediction_type = prediction_type
        self.quantize = quantize

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        t = sigma_to_t(sigma.to(self.train_sigmas), self.train_sigmas)
        return t.round() if self.quantize else t

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) at noise level sigma (a scalar tensor) -> x0 estimate (B, C, H, W)."""
        s = sigma.to(x.dtype)
        c_in = (s**2 + 1).rsqrt()  # 1 / sqrt(1 + sigma^2) = sqrt(alpha_bar): x -> x_t
        t = self.timestep(sigma).to(x.dtype)
        out = self.model(x * c_in, t, context)
        if self.prediction_type == "epsilon":
            return x - s * out  # x = x0 + sigma * eps
        if self.prediction_type == "v_prediction":
            # v = sqrt(ab) eps - sqrt(1-ab) x0 (Salimans & Ho 2022) => x0 = x / (1+s^2) - s / sqrt(1+s^2) v
            return x / (s**2 + 1) - s * c_in * out
        return out


class GuidedDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022): x0_u + scale * (x0_c - x0_u).

    Conditional and unconditional halves run as one batch of 2B; the unconditional context comes
    from the negative prompt (or the empty prompt). Scale 1 skips the unconditional half.
    max_sigma: guide only at noise levels sigma <= max_sigma, a guidance interval (Kynkaenniemi et
    al. 2024, "Applying guidance in a limited interval"); the steps above it run the conditional
    half alone, at half the cost. None guides every step.
    """

    def __init__(self, denoiser: Denoiser, context: torch.Tensor, uncond: torch.Tensor, scale: float,
                 max_sigma: float | None = None):  # fmt: skip
        self.denoiser, self.context, self.uncond, self.scale = denoiser, context, uncond, scale
        self.max_sigma = max_sigma

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0 or (self.max_sigma is not None and float(sigma.max()) > self.max_sigma):
            return self.denoiser(x, sigma, self.context)
        x0_u, x0_c = self.denoiser(torch.cat([x, x]), sigma, torch.cat([self.uncond, self.context])).chunk(2)
        return x0_u + self.scale * (x0_c - x0_u)
