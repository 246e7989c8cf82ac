"""Building blocks shared by the UNet and the VAE.

Legend: B batch, C channels, H W height width, N = H*W positions, T context tokens,
h heads, d head dim, D width of a token.

Attribute names equal diffusers' (`to_q`, `to_out.0`, `norm1`, `conv_shortcut`, ...) so that
checkpoints load with no renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention (self-attention when no context is given), through PyTorch's SDPA.

    `upcast` computes the scores in fp32: SD 2.1 overflows fp16 in attention otherwise.
    """

    def __init__(
        self, query_dim: int, heads: int, context_dim: int | None = None, bias: bool = False, upcast: bool = False
    ):
        super().__init__()
        assert query_dim % heads == 0, f"{query_dim} channels do not split into {heads} heads"
        context_dim = context_dim or query_dim
        self.heads = heads
        self.upcast = upcast
        self.to_q = nn.Linear(query_dim, query_dim, bias=bias)
        self.to_k = nn.Linear(context_dim, query_dim, bias=bias)
        self.to_v = nn.Linear(context_dim, query_dim, bias=bias)
        # A ModuleList only so the key is `to_out.0`, as in every SD checkpoint (index 1 was dropout).
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim)])

    def probabilities(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) in fp32, (B, h, N, T): what SDPA weighs the values by, which it never
        returns. For the explainer's maps and the grounding loss; forward does not use it."""
        B, N, D = x.shape
        context = x if context is None else context
        q = self.to_q(x).float().view(B, N, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        k = self.to_k(context).float().view(B, context.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, T, d)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        # (B, N or T, D) -> (B, h, N or T, d)
        q, k, v = (t.view(B, -1, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        dtype = q.dtype
        if self.upcast:
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v).to(dtype)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.to_out[0](out)


def timestep_embedding(
    t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in "Attention Is All You Need".

    t: (B,) -> (B, dim). Frequencies run from 1 down to 1/max_period; SD puts cos first.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    angles = t.float()[:, None] * torch.exp(exponent)[None, :]  # (B, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """MLP that lifts the sinusoidal embedding to the width every ResBlock reads."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(emb)))


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv, (+ projected timestep embedding), GroupNorm -> SiLU -> conv, + skip.

    The VAE uses it without a timestep embedding (temb_dim=None) and with eps 1e-6.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int | None, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch) if temb_dim else None
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # A 1x1 conv matches channel counts on the skip path only when they differ.
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # (B, C, 1, 1) broadcast over H, W
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv. The VAE pads right/bottom only (asymmetric), the UNet pads 1 all round."""

    def __init__(self, ch: int, asymmetric_pad: bool = False):
        super().__init__()
        self.asymmetric_pad = asymmetric_pad
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0 if asymmetric_pad else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling then a 3x3 conv.

    `size` lets the UNet hit the exact size of the matching skip connection, so odd latent sizes
    (e.g. 15 -> 8 -> 15) work; without it the size doubles.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)
