"""AutoencoderKL: the VAE whose latent space Stable Diffusion diffuses in.

Encoder: image (B, 3, H, W) -> mean and log-variance of a diagonal Gaussian (B, 4, H/f, W/f),
f = 2**(levels-1) (8 for SD). Decoder: latent -> image. Attribute names equal diffusers'
`AutoencoderKL`, so its checkpoints load with strict=True.

Legend: B batch, C channels, H W height width, L latent channels, N = H*W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig
from .nn import Attention, Downsample2D, ResnetBlock2D, Upsample2D

VAE_EPS = 1e-6  # every GroupNorm in the SD VAE uses this eps (the UNet uses 1e-5)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))): the posterior the encoder predicts."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, L, h, w) each
        # The same clamp as the reference: keeps exp() finite for untrained or corrupt weights.
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over latent elements, one value per batch item."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class SpatialSelfAttention(Attention):
    """Single-head self-attention over all H*W positions, with its own GroupNorm and residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__(ch, heads=1, bias=True)
        self.group_norm = nn.GroupNorm(groups, ch, eps=VAE_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)  # (B, N, C)
        h = super().forward(h)
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class MidBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, None, groups, VAE_EPS) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(ch, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class EncoderLevel(nn.Module):
    """diffusers' DownEncoderBlock2D: ResBlocks, then a downsample unless it is the last level."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, None, groups, VAE_EPS) for i in range(layers)
        )
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch, asymmetric_pad=True)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class DecoderLevel(nn.Module):
    """diffusers' UpDecoderBlock2D: one ResBlock more than the encoder level, then an upsample."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, None, groups, VAE_EPS) for i in range(layers)
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chs, g, n = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            EncoderLevel(chs[max(i - 1, 0)], chs[i], cfg.layers_per_block, g, downsample=i < n - 1) for i in range(n)
        )
        self.mid_block = MidBlock(chs[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, chs[-1], eps=VAE_EPS)
        self.conv_out = nn.Conv2d(chs[-1], 2 * cfg.latent_channels, 3, padding=1)  # mean and logvar

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 2L, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chs, g, n = cfg.block_out_channels[::-1], cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.latent_channels, chs[0], 3, padding=1)
        self.mid_block = MidBlock(chs[0], g)
        self.up_blocks = nn.ModuleList(
            DecoderLevel(chs[max(i - 1, 0)], chs[i], cfg.layers_per_block + 1, g, upsample=i < n - 1) for i in range(n)
        )
        self.conv_norm_out = nn.GroupNorm(g, chs[-1], eps=VAE_EPS)
        self.conv_out = nn.Conv2d(chs[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        L = cfg.latent_channels
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1)
        self.post_quant_conv = nn.Conv2d(L, L, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Image in [-1, 1], (B, C, H, W) with H, W divisible by the downsample factor."""
        f = self.config.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the VAE's factor {f}")
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent (divide diffusion latents by scaling_factor first) -> image, about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior
