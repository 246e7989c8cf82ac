"""UNet2DConditionModel: predicts the noise (or v) in a latent, given the timestep and the text.

Down path: ResBlocks (+ spatial transformers at attention levels), a skip saved after each, a
stride-2 conv between levels. Mid: ResBlock, transformer, ResBlock. Up path: each ResBlock reads
the concatenation of the current features and one popped skip. Attribute names equal diffusers'
`UNet2DConditionModel` (SD 1.x / 2.x variants only).

Legend: B batch, C channels, H W latent height width, N = H*W, T context tokens, D context width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .config import UNetConfig
from .nn import Attention, Downsample2D, ResnetBlock2D, TimestepEmbedding, Upsample2D, timestep_embedding

TRANSFORMER_NORM_EPS = 1e-6  # GroupNorm at a transformer's entry; its LayerNorms use 1e-5


class GEGLU(nn.Module):
    """Gated GELU feed-forward input: one projection gives both the value and its gate."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.proj.weight, self.proj.bias
        if cpu_kernels.usable(x, w) and b is not None:  # two products, GELU fused into the gate's: no chunk copies
            inner = w.shape[0] // 2
            return cpu_kernels.linear(x, w[:inner], b[:inner]).mul_(cpu_kernels.linear(x, w[inner:], b[inner:], "gelu"))
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # Indices 0 and 2 are the checkpoint's `ff.net.0` / `ff.net.2`; 1 was a dropout.
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Pre-LN: self-attention over positions, cross-attention to the text, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int, upcast: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, upcast=upcast)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim=context_dim, upcast=upcast)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """Feature map -> tokens -> transformer blocks -> feature map, with a residual around it all.

    proj_in/proj_out are 1x1 convs in SD 1.x and Linear layers in SD 2.x (the same map, another
    weight shape); the conv variant projects before flattening, the linear one after.
    """

    def __init__(self, ch: int, heads: int, context_dim: int, cfg: UNetConfig):
        super().__init__()
        self.linear = cfg.use_linear_projection
        self.norm = nn.GroupNorm(cfg.norm_num_groups, ch, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(ch, ch) if self.linear else nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(ch, heads, context_dim, cfg.upcast_attention)
            for _ in range(cfg.transformer_layers_per_block)
        )
        self.proj_out = nn.Linear(ch, ch) if self.linear else nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, N, C)
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        # contiguous(): a permuted map would drive the convs after it into a slower memory layout.
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
        if not self.linear:
            h = self.proj_out(h)
        return x + h


class CrossAttentionMaps:
    """Calls `on_map(probs, (H, W))` for every cross-attention the UNet runs while inside the block.

        with CrossAttentionMaps(unet, lambda probs, hw: maps.append((probs, hw))):
            unet(x_t, t, context)

    probs: (B, N, T) attention over the text tokens at each of the N = H*W positions, averaged over
    heads (Attention.probabilities). Forward hooks read each layer's inputs, so the UNet's own
    computation, and its output, are untouched. Gradients flow when the caller allows them.
    """

    def __init__(self, unet: nn.Module, on_map):
        self.unet, self.on_map = unet, on_map
        self._handles: list = []
        self._shape: tuple[int, int] | None = None

    def __enter__(self) -> CrossAttentionMaps:
        for module in self.unet.modules():
            if isinstance(module, Transformer2DModel):
                self._handles.append(module.register_forward_pre_hook(self._remember_shape))
            if isinstance(module, BasicTransformerBlock):
                self._handles.append(module.attn2.register_forward_hook(self._call))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _remember_shape(self, module, args) -> None:
        self._shape = tuple(args[0].shape[2:])  # the feature map (B, C, H, W) entering the transformer

    def _call(self, attn, args, output) -> None:
        self.on_map(attn.probabilities(args[0], args[1]).mean(dim=1), self._shape)  # (B, N, T)


class UNetLevel(nn.Module):
    """One resolution level of the down or up path: (ResBlock [+ Transformer]) x n, then resample.

    Named `down_blocks.i` / `up_blocks.i` in checkpoints. `in_chs` gives each ResBlock's input
    channels (on the up path these include the concatenated skip).
    """

    def __init__(
        self,
        in_chs: list[int],
        out_ch: int,
        temb_dim: int,
        attention: bool,
        heads: int,
        cfg: UNetConfig,
        resample: str | None,
    ):
        super().__init__()
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = nn.ModuleList(ResnetBlock2D(c, out_ch, temb_dim, g, eps) for c in in_chs)
        self.attentions = (
            nn.ModuleList(Transformer2DModel(out_ch, heads, cfg.cross_attention_dim, cfg) for _ in in_chs)
            if attention
            else None
        )
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(out_ch)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(out_ch)])

    def layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[i](x, temb)
        if self.attentions is not None:
            x = self.attentions[i](x, context)
        return x


class MidBlock(nn.Module):
    def __init__(self, ch: int, temb_dim: int, heads: int, cfg: UNetConfig):
        super().__init__()
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb_dim, g, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([Transformer2DModel(ch, heads, cfg.cross_attention_dim, cfg)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class UNet2DConditionModel(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        chs, n, temb_dim = cfg.block_out_channels, len(cfg.block_out_channels), cfg.time_embed_dim
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(chs[0], temb_dim)

        skip_chs = [chs[0]]  # channels of every skip the down path saves, in order
        self.down_blocks = nn.ModuleList()
        for i, ch in enumerate(chs):
            in_chs = [chs[max(i - 1, 0)]] + [ch] * (cfg.layers_per_block - 1)
            last = i == n - 1
            self.down_blocks.append(
                UNetLevel(in_chs, ch, temb_dim, cfg.has_attention(i), cfg.heads(i), cfg, None if last else "down")
            )
            skip_chs += [ch] * (cfg.layers_per_block + (0 if last else 1))

        self.mid_block = MidBlock(chs[-1], temb_dim, cfg.heads(n - 1), cfg)

        self.up_blocks = nn.ModuleList()
        prev = chs[-1]
        for i, ch in enumerate(reversed(chs)):
            level = n - 1 - i  # the down level this up level mirrors
            in_chs = []
            for _ in range(cfg.layers_per_block + 1):
                in_chs.append(prev + skip_chs.pop())
                prev = ch
            attention = cfg.up_block_types[i] == "CrossAttnUpBlock2D"
            resample = "up" if level > 0 else None
            self.up_blocks.append(UNetLevel(in_chs, ch, temb_dim, attention, cfg.heads(level), cfg, resample))

        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, chs[0], eps=cfg.norm_eps)
        # Channels and heads after each layer, in after_layer's order (the video UNet sizes its layers by them).
        self.layer_shapes = [(level.resnets[0].conv2.out_channels, cfg.heads(i)) for i, level in
                             enumerate(self.down_blocks) for _ in level.resnets]  # fmt: skip
        self.layer_shapes.append((chs[-1], cfg.heads(n - 1)))
        self.layer_shapes += [(level.resnets[0].conv2.out_channels, cfg.heads(n - 1 - i)) for i, level in
                              enumerate(self.up_blocks) for _ in level.resnets]  # fmt: skip
        self.conv_out = nn.Conv2d(chs[0], cfg.out_channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor,
                after_layer=None, deep: DeepFeatures | None = None) -> torch.Tensor:  # fmt: skip
        """x_t (B, C, H, W) noisy latent, t () or (B,) timestep(s), context (B, T, D) -> (B, C_out, H, W).

        after_layer(h, i): called on the output of the i-th ResBlock(+transformer) layer, counting the
        down path, the mid block and the up path in order; returns the features to continue with.
        The video UNet inserts its temporal attention there (video_unet.py).
        deep: DeepCache's feature store (see DeepFeatures): a full pass keeps the features entering
        the last up level; with deep.reuse only the top level runs, on those kept features.
        """
        if deep is not None and after_layer is not None:
            raise ValueError("the deep feature cache does not combine with after_layer (the video UNet)")
        after_layer = after_layer or (lambda h, i: h)
        n = 0
        B = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(B) if t.ndim == 0 else t
        cfg = self.config
        emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(emb.to(x_t.dtype))  # (B, 4 * C0)

        h = self.conv_in(x_t)
        skips = [h]
        if deep is not None and deep.reuse:
            return self._top_level_only(h, temb, context, deep.features)
        for block in self.down_blocks:
            for i in range(len(block.resnets)):
                h, n = after_layer(block.layer(i, h, temb, context), n), n + 1
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)

        h, n = after_layer(self.mid_block(h, temb, context), n), n + 1

        for block in self.up_blocks:
            if deep is not None and block is self.up_blocks[-1]:
                deep.features = h
            for i in range(len(block.resnets)):
                h, n = after_layer(block.layer(i, torch.cat([h, skips.pop()], dim=1), temb, context), n), n + 1
            if hasattr(block, "upsamplers"):
                # Upsample to the size of the skip this feature map will meet next (odd sizes).
                h = block.upsamplers[0](h, size=skips[-1].shape[-2:])
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    def _top_level_only(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor,
                        deep_features: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """DeepCache's cheap pass: the first down level's layers (their skips are fresh), then the last
        up level on the kept deep features; the levels below and the mid block are skipped."""
        skips = [h]
        first = self.down_blocks[0]
        for i in range(len(first.resnets)):
            h = first.layer(i, h, temb, context)
            skips.append(h)
        h = deep_features
        last = self.up_blocks[-1]
        for i in range(len(last.resnets)):
            h = last.layer(i, torch.cat([h, skips.pop()], dim=1), temb, context)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class DeepFeatures:
    """DeepCache (Ma, Fang and Wang, CVPR 2024), an approximation: the deep levels of the UNet change
    slowly from one sampling step to the next, so every `interval`-th call runs the whole UNet and keeps
    the features entering its last up level, and the calls between run only the top level on them.

    A callable with the UNet's signature, for pipeline._denoise(unet=...). interval 1 = exact (always
    the whole UNet). The cost: measured by benchmarks/sd_cpu.py (PSNR against the exact path) and by
    `latentdiff evaluate --deep-cache N` (fidelity)."""

    def __init__(self, unet: UNet2DConditionModel, interval: int):
        if interval < 1:
            raise ValueError(f"the deep-cache interval must be 1 or more, got {interval}")
        self.unet, self.interval, self.calls = unet, interval, 0
        self.features: torch.Tensor | None = None
        self.reuse = False

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor) -> torch.Tensor:
        fresh = self.features is None or self.features.shape[0] != x_t.shape[0]
        self.reuse = not fresh and self.calls % self.interval != 0
        self.calls += 1
        return self.unet(x_t, t, context, deep=self)
