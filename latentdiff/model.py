"""StableDiffusion: the tokenizer, text encoder, VAE and UNet of one model, with their config.

This is what weights I/O loads and saves and what pipelines run. It holds no sampling logic.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import nn

from .clip import CLIPTextModel
from .config import SDConfig, preset
from .cpu_kernels import accelerate
from .tokenizer import CLIPTokenizer
from .unet import UNet2DConditionModel
from .vae import AutoencoderKL


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder's context; the message names the dropped words."""


class StableDiffusion(nn.Module):
    def __init__(self, config: SDConfig, tokenizer: CLIPTokenizer | None = None):
        super().__init__()
        if config.text.hidden_size != config.unet.cross_attention_dim:
            raise ValueError(
                f"text encoder width {config.text.hidden_size} does not match the UNet's "
                f"cross_attention_dim {config.unet.cross_attention_dim}"
            )
        if config.vae.latent_channels != config.unet.out_channels:
            raise ValueError(
                f"VAE latent channels {config.vae.latent_channels} do not match the UNet's "
                f"out_channels {config.unet.out_channels}"
            )
        self.config = config
        # The SD 1.x vocabulary (OpenAI CLIP's) unless the checkpoint brings its own.
        self.tokenizer = tokenizer or CLIPTokenizer.default()
        self.text_encoder = CLIPTextModel(config.text)
        self.vae = AutoencoderKL(config.vae)
        self.unet = UNet2DConditionModel(config.unet)
        # oneDNN kernels for every Linear and Conv2d in inference (exact fp32; cpu_kernels.py says
        # why and how much); conv weights are held once, packed, after their first use.
        accelerate(self, release=True)

    @classmethod
    def from_preset(cls, name: str, seed: int = 0) -> StableDiffusion:
        """Random weights in a named architecture (for tests, demos and as a training start)."""
        with torch.random.fork_rng():  # seeded init without resetting the caller's RNG
            torch.manual_seed(seed)
            return cls(preset(name)).eval()

    def set_prediction_type(self, prediction_type: str) -> None:
        """Single-file checkpoints do not record it (SD 2.x base predicts eps, SD 2.x 768 predicts v)."""
        scheduler = dataclasses.replace(self.config.scheduler, prediction_type=prediction_type)
        self.config = dataclasses.replace(self.config, scheduler=scheduler)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @torch.no_grad()
    def encode_prompt(self, prompts: str | list[str]) -> torch.Tensor:
        """Prompts -> the context the UNet cross-attends to, (B, 77, D)."""
        tokens = self.tokenizer(prompts)
        warning = self.tokenizer.truncation_warning(tokens, prompts)
        if warning:  # CLIP reads 77 tokens; the rest of a long prompt has no effect, so say which
            warnings.warn(warning, PromptTruncatedWarning, stacklevel=2)
        ids = tokens.input_ids.to(self.device)
        return self.text_encoder.encode(ids, layer=self.config.clip_skip_layer).to(self.dtype)
