"""A space-time factorised 3D UNet (Ho et al. 2022, "Video Diffusion Models", section 3).

The 2D UNet (unet.py) runs on every frame as if it were an image: frames are folded into the batch,
so its convolutions, self-attention and cross-attention to the text act within a frame. After every
one of its layers a temporal attention layer mixes information across frames, separately at each
pixel, with a learned relative-position bias (T5-style: one bias per head and frame distance) and,
optionally, an absolute frame position (`frame_position`, AnimateDiff's sinusoidal encoding added
to the attention's input). A relative bias alone cannot tell frames apart when their contents
agree: softmax weights over equal values give equal outputs, whatever the weights. At high noise
a video's frames look alike (more so under shared noise), so such a model cannot learn that frame 0
holds the object on the right and frame 7 on the left for "moving left". The absolute position
gives every frame its index from the first layer on.

Optionally (`temporal_text`) the temporal layers read the caption too: its states' mean over the
tokens, projected, is added to their input. Otherwise only the spatial layers see the text, and they
see one frame at a time: "moving left" must reach the temporal layers second-hand.

Optionally (`space_time_conv`) each temporal layer ends with a depthwise 3x3x3 convolution over
(frames, height, width) and a pointwise mix. Attention at one pixel across frames cannot see
that frame 0 holds the object one pixel to the right: moving an object takes a spatial layer and a
temporal one working together. A space-time kernel reads a frame's neighbours in the frames around
it directly, so a shift from frame to frame is one kernel (what moving-shapes motion is).

Each temporal layer's output projection starts at zero, so a new VideoUNet computes exactly what
its 2D UNet computes on each frame: it can start from a trained image model (`from_image_unet`)
and be trained on videos and images together (images are 1-frame videos).

Legend: B batch, C channels, F frames, H W latent height width, h heads, d head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .unet import UNet2DConditionModel


def frame_encoding(frames: int, ch: int) -> torch.Tensor:
    """(frames, ch) sinusoidal encodings of the frame index (Vaswani et al.): sin, cos pairs, wavelengths to 10^4."""
    position = torch.arange(frames, dtype=torch.float32)[:, None]
    inverse_wavelength = torch.exp(torch.arange(0, ch, 2, dtype=torch.float32) * (-math.log(10_000.0) / ch))
    encoding = torch.zeros(frames, ch)
    encoding[:, 0::2] = torch.sin(position * inverse_wavelength)
    encoding[:, 1::2] = torch.cos(position * inverse_wavelength)[:, : ch // 2]
    return encoding


class SpaceTimeConv(nn.Module):
    """A depthwise 3x3x3 convolution over (F, H, W), SiLU and a pointwise mix, plus a residual: (B*F, C, H, W).

    Depthwise keeps it cheap (27 weights a channel, then one C x C mix); the mix starts at zero, so the
    layer starts as identity. Causal: a frame reads itself and the two frames before it."""

    def __init__(self, ch: int, groups: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.depthwise = nn.Conv3d(ch, ch, 3, padding=(0, 1, 1), groups=ch)  # frames padded in forward
        self.pointwise = nn.Conv3d(ch, ch, 1)
        nn.init.zeros_(self.pointwise.weight)
        nn.init.zeros_(self.pointwise.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        BF, C, H, W = x.shape
        h = self.norm(x).view(BF // frames, frames, C, H, W).transpose(1, 2)  # (B, C, F, H, W)
        h = F.pad(h, (0, 0, 0, 0, 2, 0) if self.causal else (0, 0, 0, 0, 1, 1))  # zeros beyond the ends
        h = self.pointwise(F.silu(self.depthwise(h)))
        return x + h.transpose(1, 2).reshape(BF, C, H, W)


class TemporalAttention(nn.Module):
    """Self-attention over the F frames at each position, plus a residual: (B*F, C, H, W) -> same.

    With space_time_conv, a SpaceTimeConv follows (`self.space_time`): it lives inside this layer so
    that video folders keep one set of "temporal.*" weights whichever settings made them."""

    def __init__(self, ch: int, heads: int, max_frames: int, causal: bool, groups: int, frame_position: bool = False,
                 text_dim: int = 0, space_time_conv: bool = False):  # fmt: skip
        super().__init__()
        self.space_time = SpaceTimeConv(ch, groups, causal) if space_time_conv else None
        self.to_text = nn.Linear(text_dim, ch) if text_dim else None  # the pooled caption, added to the input
        self.heads, self.max_frames, self.causal = heads, max_frames, causal
        # A fixed buffer, not a weight: folders keep the same keys with or without it.
        self.register_buffer("position", frame_encoding(max_frames, ch) if frame_position else None, persistent=False)
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.to_qkv = nn.Linear(ch, 3 * ch, bias=False)
        self.to_out = nn.Linear(ch, ch)
        nn.init.zeros_(self.to_out.weight)  # identity at init: the residual alone
        nn.init.zeros_(self.to_out.bias)
        # One learned bias per head for each frame distance -(max_frames-1) .. max_frames-1.
        self.relative_bias = nn.Parameter(torch.zeros(heads, 2 * max_frames - 1))

    def forward(self, x: torch.Tensor, frames: int, text: torch.Tensor | None = None) -> torch.Tensor:
        """x (B*F, C, H, W); text (B, D): the pooled caption of each video, read when built with text_dim."""
        if frames > self.max_frames:
            raise ValueError(f"{frames} frames, but the temporal attention was built for at most {self.max_frames}")
        BF, C, H, W = x.shape
        B = BF // frames
        h = self.norm(x).view(B, frames, C, H * W).permute(0, 3, 1, 2).reshape(B * H * W, frames, C)  # (B*H*W, F, C)
        if self.position is not None:
            h = h + self.position[:frames].to(h.dtype)
        if self.to_text is not None:
            h = h + self.to_text(text.to(h.dtype)).repeat_interleave(H * W, dim=0)[:, None, :]
        q, k, v = (t.view(-1, frames, self.heads, C // self.heads).transpose(1, 2) for t in self.to_qkv(h).chunk(3, -1))
        position = torch.arange(frames, device=x.device)
        distance = position[None, :] - position[:, None] + self.max_frames - 1  # (F, F): key - query, shifted >= 0
        bias = self.relative_bias[:, distance].to(q.dtype)  # (h, F, F)
        if self.causal:  # a frame sees itself and the frames before it
            bias = bias.masked_fill(position[None, :] > position[:, None], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])  # (B*H*W, h, F, d)
        out = self.to_out(out.transpose(1, 2).reshape(-1, frames, C))  # (B*H*W, F, C)
        out = x + out.view(B, H * W, frames, C).permute(0, 2, 3, 1).reshape(BF, C, H, W)
        return out if self.space_time is None else self.space_time(out, frames)


class VideoUNet(nn.Module):
    """(B, C, F, H, W) noisy video latents, t, context -> (B, C_out, F, H, W), one text for all frames."""

    def __init__(self, cfg: UNetConfig, max_frames: int = 16, causal: bool = False, shared_noise: float = 0.0,
                 frame_position: bool = False, temporal_text: bool = False, space_time_conv: bool = False):  # fmt: skip
        super().__init__()
        self.temporal_text, self.space_time_conv = temporal_text, space_time_conv
        if not 0 <= shared_noise < 1:
            raise ValueError(f"shared_noise must be in [0, 1), got {shared_noise}")
        self.config, self.max_frames, self.causal, self.frame_position = cfg, max_frames, causal, frame_position
        # The share of the noise variance common to all frames that the model was trained with
        # (samplers.mix_frame_noise); sampling draws its noise the same way. A setting, not a weight.
        self.shared_noise = shared_noise
        self.unet = UNet2DConditionModel(cfg)
        text_dim = cfg.cross_attention_dim if temporal_text else 0
        self.temporal = nn.ModuleList(
            TemporalAttention(
                ch, heads, max_frames, causal, cfg.norm_num_groups, frame_position, text_dim, space_time_conv
            )
            for ch, heads in self.unet.layer_shapes
        )

    @classmethod
    def from_image_unet(cls, image_unet: UNet2DConditionModel, max_frames: int = 16, causal: bool = False,
                        shared_noise: float = 0.0, frame_position: bool = False,
                        temporal_text: bool = False, space_time_conv: bool = False):  # fmt: skip
        """A VideoUNet whose spatial layers are a copy of a trained 2D UNet; temporal layers start as identity."""
        video = cls(image_unet.config, max_frames, causal, shared_noise, frame_position, temporal_text, space_time_conv)
        video.unet.load_state_dict(image_unet.state_dict())
        return video

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor) -> torch.Tensor:
        B, C, frames, H, W = x_t.shape
        # Frames folded into the batch, in plain NCHW order: cached latents can arrive channels-last,
        # and torch 2.13's CPU GroupNorm backward segfaults on a channels-last input that needs no
        # gradient (what the first ResBlock gets when the image layers are frozen).
        x = x_t.transpose(1, 2).reshape(B * frames, C, H, W).contiguous()
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(B) if t.ndim == 0 else t
        per_frame_t = t.repeat_interleave(frames)  # (B*F,)
        per_frame_context = context.repeat_interleave(frames, dim=0)  # (B*F, T, D)

        pooled = context.mean(1) if self.temporal_text else None  # (B, D): the caption, once per video

        def temporal(h: torch.Tensor, i: int) -> torch.Tensor:
            return self.temporal[i](h, frames, pooled)

        out = self.unet(x, per_frame_t, per_frame_context, after_layer=temporal)  # (B*F, C_out, H, W)
        return out.view(B, frames, -1, H, W).transpose(1, 2)  # (B, C_out, F, H, W)
