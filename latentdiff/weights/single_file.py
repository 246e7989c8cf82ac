"""The original Stable Diffusion single-file layout (CompVis / Stability checkpoints) as one key table.

    model.diffusion_model.*                    UNet    input_blocks / middle_block / output_blocks / out
    first_stage_model.*                        VAE     encoder.down.i / decoder.up.i (numbered reversed)
    cond_stage_model.transformer.text_model.*  SD 1.x  OpenAI CLIP, transformers' names ("openai")
    cond_stage_model.model.*                   SD 2.x  OpenCLIP ViT-H text tower, fused qkv ("openclip")

Our state dicts use diffusers' names (UNet, VAE) and transformers 5.x's (CLIP text). One walk over
the architecture a config describes pairs each of our keys with its original key (without the
prefix above), knows the tensor's shape, and says how the tensor changes on the way (`kind`):

    ""          the same tensor
    "conv1x1"   our Linear weight (C, C) is a 1x1 conv weight (C, C, 1, 1) there (VAE attention)
    "q" "k" "v" our separate projection is a third of OpenCLIP's fused in_proj: rows [q; k; v]

Every original key is named once, except a fused in_proj, named by its thirds in q, k, v order,
so the table reads both ways. Both directions are strict: a missing, unexpected or mis-shaped key
is an error that names it. The keys a load skips, and why, are in `_skipped_keys`.

Legend: C channels, L layers per block, z latent channels, D text width, I text MLP width,
V vocabulary size, P positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..config import CLIPTextConfig, SchedulerConfig, SDConfig, UNetConfig, VAEConfig
from .errors import WeightsError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = {"openai": "cond_stage_model.transformer.text_model.", "openclip": "cond_stage_model.model."}
OLD_OPENAI_PREFIX = "cond_stage_model.transformer."  # some older SD 1.x files: no `text_model.` level

# LatentDiffusion's state beside the weights: the noise schedule's buffers (recomputed from the
# SchedulerConfig), the EMA's bookkeeping and the loss's learned log-variance; training state only.
TRAINING_STATE = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "model_ema.decay",
        "model_ema.num_updates",
        "logvar",
        "lvlb_weights",
    }
)
# Whole sub-models outside SD's inference graph: the VAE's training loss (LPIPS and a patch
# discriminator) and OpenCLIP's image tower, which some SD 2.x files keep.
UNUSED_PREFIXES = ("first_stage_model.loss.", "cond_stage_model.model.visual.")


class _Param(NamedTuple):
    ours: str
    theirs: str  # without the part's prefix
    shape: tuple[int, ...]  # our shape
    kind: str = ""  # "", "conv1x1", "q", "k", "v" (see the module docstring)


def _weight_bias(ours: str, theirs: str, weight_shape: tuple[int, ...], bias: bool = True) -> list[_Param]:
    params = [_Param(f"{ours}.weight", f"{theirs}.weight", weight_shape)]
    if bias:
        params.append(_Param(f"{ours}.bias", f"{theirs}.bias", weight_shape[:1]))
    return params


def _conv(ours: str, theirs: str, c_out: int, c_in: int, k: int = 3) -> list[_Param]:
    return _weight_bias(ours, theirs, (c_out, c_in, k, k))


def _linear(ours: str, theirs: str, c_out: int, c_in: int, bias: bool = True) -> list[_Param]:
    return _weight_bias(ours, theirs, (c_out, c_in), bias)


def _norm(ours: str, theirs: str, c: int) -> list[_Param]:
    """GroupNorm or LayerNorm: a (C,) scale and a (C,) shift."""
    return _weight_bias(ours, theirs, (c,))


# --- UNet ------------------------------------------------------------------------------------------


def _unet_resnet(ours: str, theirs: str, c_in: int, c_out: int, c_time: int) -> list[_Param]:
    """ResnetBlock2D; the original's in_layers = (norm, SiLU, conv), out_layers = (norm, SiLU, dropout, conv)."""
    params = (
        _norm(f"{ours}.norm1", f"{theirs}.in_layers.0", c_in)
        + _conv(f"{ours}.conv1", f"{theirs}.in_layers.2", c_out, c_in)
        + _linear(f"{ours}.time_emb_proj", f"{theirs}.emb_layers.1", c_out, c_time)
        + _norm(f"{ours}.norm2", f"{theirs}.out_layers.0", c_out)
        + _conv(f"{ours}.conv2", f"{theirs}.out_layers.3", c_out, c_out)
    )
    if c_in != c_out:  # the residual needs its channels changed too
        params += _conv(f"{ours}.conv_shortcut", f"{theirs}.skip_connection", c_out, c_in, k=1)
    return params


def _unet_transformer(ours: str, theirs: str, c: int, cfg: UNetConfig) -> list[_Param]:
    """Transformer2DModel (the original's SpatialTransformer): the same names on both sides."""

    def pair(name: str) -> tuple[str, str]:
        return f"{ours}.{name}", f"{theirs}.{name}"

    proj = (c, c) if cfg.use_linear_projection else (c, c, 1, 1)  # SD 2.x: Linear, SD 1.x: 1x1 conv
    params = _norm(*pair("norm"), c) + _weight_bias(*pair("proj_in"), proj)
    for b in range(cfg.transformer_layers_per_block):
        block = f"transformer_blocks.{b}"
        # attn1 attends to the image itself, attn2 to the text (keys and values from the context).
        for attn, c_kv in (("attn1", c), ("attn2", cfg.cross_attention_dim)):
            params += _linear(*pair(f"{block}.{attn}.to_q"), c, c, bias=False)
            params += _linear(*pair(f"{block}.{attn}.to_k"), c, c_kv, bias=False)
            params += _linear(*pair(f"{block}.{attn}.to_v"), c, c_kv, bias=False)
            params += _linear(*pair(f"{block}.{attn}.to_out.0"), c, c)
        for norm in ("norm1", "norm2", "norm3"):
            params += _norm(*pair(f"{block}.{norm}"), c)
        # GEGLU: one Linear makes both the 4C-wide value and its gate.
        params += _linear(*pair(f"{block}.ff.net.0.proj"), 8 * c, c) + _linear(*pair(f"{block}.ff.net.2"), c, 4 * c)
    return params + _weight_bias(*pair("proj_out"), proj)


def _unet_down(cfg: UNetConfig) -> tuple[list[_Param], list[int]]:
    """input_blocks: 0 is conv_in, then per level L (resnet, transformer?) blocks and a downsampler
    block (not at the last level). Also returns each input block's output channels: the skips."""
    C, c_time = cfg.block_out_channels, cfg.time_embed_dim
    params = _conv("conv_in", "input_blocks.0.0", C[0], cfg.in_channels)
    skips, c_in, block = [C[0]], C[0], 1
    for level, c in enumerate(C):
        for j in range(cfg.layers_per_block):
            ours, theirs = f"down_blocks.{level}", f"input_blocks.{block}"
            params += _unet_resnet(f"{ours}.resnets.{j}", f"{theirs}.0", c_in, c, c_time)
            if cfg.has_attention(level):
                params += _unet_transformer(f"{ours}.attentions.{j}", f"{theirs}.1", c, cfg)
            skips.append(c)
            c_in, block = c, block + 1
        if level < len(C) - 1:
            params += _conv(f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{block}.0.op", c, c)
            skips.append(c)
            block += 1
    return params, skips


def _unet_mid(cfg: UNetConfig) -> list[_Param]:
    c, c_time = cfg.block_out_channels[-1], cfg.time_embed_dim
    return (
        _unet_resnet("mid_block.resnets.0", "middle_block.0", c, c, c_time)
        + _unet_transformer("mid_block.attentions.0", "middle_block.1", c, cfg)
        + _unet_resnet("mid_block.resnets.1", "middle_block.2", c, c, c_time)
    )


def _unet_up(cfg: UNetConfig, skips: list[int]) -> list[_Param]:
    """output_blocks: L+1 (resnet, transformer?, upsampler?) blocks per level, lowest resolution
    first; each resnet takes the last unused skip concatenated to its input."""
    C, L, c_time = cfg.block_out_channels, cfg.layers_per_block, cfg.time_embed_dim
    params, skips, c_in = [], list(skips), C[-1]
    for i, c in enumerate(reversed(C)):
        attention = cfg.up_block_types[i] == "CrossAttnUpBlock2D"
        for j in range(L + 1):
            ours, theirs = f"up_blocks.{i}", f"output_blocks.{i * (L + 1) + j}"
            params += _unet_resnet(f"{ours}.resnets.{j}", f"{theirs}.0", c_in + skips.pop(), c, c_time)
            if attention:
                params += _unet_transformer(f"{ours}.attentions.{j}", f"{theirs}.1", c, cfg)
            c_in = c
        if i < len(C) - 1:  # in the level's last block, after its resnet and transformer
            params += _conv(f"{ours}.upsamplers.0.conv", f"{theirs}.{2 if attention else 1}.conv", c, c)
    return params


def _unet_params(cfg: UNetConfig) -> list[_Param]:
    C, c_time = cfg.block_out_channels, cfg.time_embed_dim
    down, skips = _unet_down(cfg)
    return (
        _linear("time_embedding.linear_1", "time_embed.0", c_time, C[0])
        + _linear("time_embedding.linear_2", "time_embed.2", c_time, c_time)
        + down
        + _unet_mid(cfg)
        + _unet_up(cfg, skips)
        + _norm("conv_norm_out", "out.0", C[0])
        + _conv("conv_out", "out.2", cfg.out_channels, C[0])
    )


# --- VAE -------------------------------------------------------------------------------------------


def _vae_resnet(ours: str, theirs: str, c_in: int, c_out: int) -> list[_Param]:
    params = (
        _norm(f"{ours}.norm1", f"{theirs}.norm1", c_in)
        + _conv(f"{ours}.conv1", f"{theirs}.conv1", c_out, c_in)
        + _norm(f"{ours}.norm2", f"{theirs}.norm2", c_out)
        + _conv(f"{ours}.conv2", f"{theirs}.conv2", c_out, c_out)
    )
    if c_in != c_out:
        params += _conv(f"{ours}.conv_shortcut", f"{theirs}.nin_shortcut", c_out, c_in, k=1)
    return params


def _vae_mid(ours: str, theirs: str, c: int) -> list[_Param]:
    """Two resnets around one single-head self-attention, whose projections are 1x1 convs there."""
    params = _vae_resnet(f"{ours}.resnets.0", f"{theirs}.block_1", c, c)
    params += _norm(f"{ours}.attentions.0.group_norm", f"{theirs}.attn_1.norm", c)
    for mine, original in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        weight, bias = _linear(f"{ours}.attentions.0.{mine}", f"{theirs}.attn_1.{original}", c, c)
        params += [weight._replace(kind="conv1x1"), bias]
    return params + _vae_resnet(f"{ours}.resnets.1", f"{theirs}.block_2", c, c)


def _vae_encoder(cfg: VAEConfig) -> list[_Param]:
    C, z = cfg.block_out_channels, cfg.latent_channels
    params, c_in = _conv("encoder.conv_in", "encoder.conv_in", C[0], cfg.in_channels), C[0]
    for i, c in enumerate(C):
        for j in range(cfg.layers_per_block):
            params += _vae_resnet(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", c_in, c)
            c_in = c
        if i < len(C) - 1:
            params += _conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", c, c)
    return (
        params
        + _vae_mid("encoder.mid_block", "encoder.mid", C[-1])
        + _norm("encoder.conv_norm_out", "encoder.norm_out", C[-1])
        + _conv("encoder.conv_out", "encoder.conv_out", 2 * z, C[-1])  # mean and log-variance
        + _conv("quant_conv", "quant_conv", 2 * z, 2 * z, k=1)
    )


def _vae_decoder(cfg: VAEConfig) -> list[_Param]:
    C, z, n = cfg.block_out_channels, cfg.latent_channels, len(cfg.block_out_channels)
    params = _conv("post_quant_conv", "post_quant_conv", z, z, k=1)
    params += _conv("decoder.conv_in", "decoder.conv_in", C[-1], z)
    params += _vae_mid("decoder.mid_block", "decoder.mid", C[-1])
    c_in = C[-1]
    for i, c in enumerate(reversed(C)):
        # diffusers counts the decoder's levels in the order they run; the original by resolution.
        ours, theirs = f"decoder.up_blocks.{i}", f"decoder.up.{n - 1 - i}"
        for j in range(cfg.layers_per_block + 1):
            params += _vae_resnet(f"{ours}.resnets.{j}", f"{theirs}.block.{j}", c_in, c)
            c_in = c
        if i < n - 1:
            params += _conv(f"{ours}.upsamplers.0.conv", f"{theirs}.upsample.conv", c, c)
    return (
        params
        + _norm("decoder.conv_norm_out", "decoder.norm_out", C[0])
        + _conv("decoder.conv_out", "decoder.conv_out", cfg.out_channels, C[0])
    )


# --- text encoder ----------------------------------------------------------------------------------

_OPENCLIP_NAMES = {"layer_norm1": "ln_1", "self_attn.out_proj": "attn.out_proj", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}  # fmt: skip


def _text_layer(i: int, cfg: CLIPTextConfig, layout: str) -> list[_Param]:
    D, I = cfg.hidden_size, cfg.intermediate_size
    openclip = layout == "openclip"
    ours = f"encoder.layers.{i}"
    theirs = f"transformer.resblocks.{i}" if openclip else ours

    def pair(name: str) -> tuple[str, str]:
        return f"{ours}.{name}", f"{theirs}.{_OPENCLIP_NAMES[name] if openclip else name}"

    params = _norm(*pair("layer_norm1"), D)
    if openclip:  # nn.MultiheadAttention keeps one in_proj: q, k, v stacked along dim 0
        params += [_Param(f"{ours}.self_attn.{x}_proj.{p}", f"{theirs}.attn.in_proj_{p}", shape, kind=x)
                   for x in "qkv" for p, shape in (("weight", (D, D)), ("bias", (D,)))]  # fmt: skip
    else:
        for x in "qkv":
            params += _linear(*pair(f"self_attn.{x}_proj"), D, D)
    params += _linear(*pair("self_attn.out_proj"), D, D) + _norm(*pair("layer_norm2"), D)
    return params + _linear(*pair("mlp.fc1"), I, D) + _linear(*pair("mlp.fc2"), D, I)


def _text_params(cfg: CLIPTextConfig, layout: str) -> list[_Param]:
    if layout not in TEXT_PREFIX:
        raise WeightsError(f"unknown text layout {layout!r}; choose openai (SD 1.x) or openclip (SD 2.x)")
    V, P, D = cfg.vocab_size, cfg.max_position_embeddings, cfg.hidden_size
    openclip = layout == "openclip"
    tokens, positions = "embeddings.token_embedding.weight", "embeddings.position_embedding.weight"
    params = [
        _Param(tokens, "token_embedding.weight" if openclip else tokens, (V, D)),
        # OpenCLIP's positions are a bare Parameter: no `.weight`.
        _Param(positions, "positional_embedding" if openclip else positions, (P, D)),
    ]
    for i in range(cfg.num_hidden_layers):
        params += _text_layer(i, cfg, layout)
    return params + _norm("final_layer_norm", "ln_final" if openclip else "final_layer_norm", D)


def detect_text_layout(sd: dict[str, torch.Tensor]) -> str:
    """Which text encoder layout the file holds: "openclip" (SD 2.x) or "openai" (SD 1.x)."""
    openclip = any(k.startswith(TEXT_PREFIX["openclip"]) and not k.startswith(UNUSED_PREFIXES) for k in sd)
    openai = any(k.startswith(OLD_OPENAI_PREFIX) for k in sd)
    if openclip and openai:
        raise WeightsError("this file has both OpenAI CLIP and OpenCLIP text keys: not an SD 1.x/2.x checkpoint")
    if not (openclip or openai):
        raise WeightsError("no text encoder in this file (no cond_stage_model.* keys): is it an SD 1.x/2.x checkpoint?")
    return "openclip" if openclip else "openai"


# --- the tables --------------------------------------------------------------------------------------


def unet_key_table(cfg: UNetConfig) -> list[tuple[str, str]]:
    """(our key, original key without `model.diffusion_model.`) for every UNet tensor."""
    return [(p.ours, p.theirs) for p in _unet_params(cfg)]


def vae_key_table(cfg: VAEConfig) -> list[tuple[str, str]]:
    """(our key, original key without `first_stage_model.`) for every VAE tensor."""
    return [(p.ours, p.theirs) for p in _vae_encoder(cfg) + _vae_decoder(cfg)]


def text_key_table(cfg: CLIPTextConfig, layout: str) -> list[tuple[str, str]]:
    """(our key, original key without TEXT_PREFIX[layout]); OpenCLIP's in_proj appears three times."""
    return [(p.ours, p.theirs) for p in _text_params(cfg, layout)]


def _parts(cfg: SDConfig, layout: str) -> list[tuple[str, str, list[_Param]]]:
    """(name, prefix, params) of the three networks, in the order from_single_file returns them."""
    text = _text_params(cfg.text, layout)  # first: it checks the layout
    return [
        ("unet", UNET_PREFIX, _unet_params(cfg.unet)),
        ("vae", VAE_PREFIX, _vae_encoder(cfg.vae) + _vae_decoder(cfg.vae)),
        ("text", TEXT_PREFIX[layout], text),
    ]


def _their_shape(p: _Param) -> tuple[int, ...]:
    if p.kind == "conv1x1":
        return (*p.shape, 1, 1)
    if p.kind:
        return (3 * p.shape[0], *p.shape[1:])
    return p.shape


# --- conversion ------------------------------------------------------------------------------------


def to_single_file(
    unet: dict[str, torch.Tensor],
    vae: dict[str, torch.Tensor],
    text: dict[str, torch.Tensor],
    cfg: SDConfig,
    text_layout: str,
) -> dict[str, torch.Tensor]:
    """Our three state dicts -> one state dict in the original layout. Strict: keys and shapes."""
    ours = {"unet": unet, "vae": vae, "text": text}
    out: dict[str, torch.Tensor] = {}
    for name, prefix, params in _parts(cfg, text_layout):
        _check_state(ours[name], {p.ours: p.shape for p in params}, f"our {name} state dict")
        thirds: dict[str, dict[str, torch.Tensor]] = {}
        for p in params:
            tensor = ours[name][p.ours]
            if p.kind == "conv1x1":
                out[prefix + p.theirs] = tensor[:, :, None, None]
            elif p.kind:
                thirds.setdefault(prefix + p.theirs, {})[p.kind] = tensor
            else:
                out[prefix + p.theirs] = tensor
        out.update({key: torch.cat([qkv["q"], qkv["k"], qkv["v"]]) for key, qkv in thirds.items()})
    return out


def from_single_file(
    sd: dict[str, torch.Tensor], cfg: SDConfig, text_layout: str | None = None, use_ema: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One original-layout state dict -> our (unet, vae, text) state dicts. Strict: keys and shapes.

    text_layout: "openai" (SD 1.x) or "openclip" (SD 2.x); None reads it off the keys.
    use_ema: read the UNet from the EMA copy that training checkpoints keep beside the raw weights.
    """
    layout = text_layout or detect_text_layout(sd)
    if layout == "openai":
        sd = _with_text_model_level(sd)
    parts = _parts(cfg, layout)
    # Where each original tensor is read from: the UNet's from its EMA copy when asked for.
    source = {prefix + p.theirs: prefix + p.theirs for _, prefix, params in parts for p in params}
    if use_ema:
        source.update({key: _ema_key(key) for key in source if key.startswith(UNET_PREFIX)})
    expected = {source[prefix + p.theirs]: _their_shape(p) for _, prefix, params in parts for p in params}
    skipped = _skipped_keys(cfg, layout, [key for key in source if key.startswith(UNET_PREFIX)], use_ema)
    kept = {k: v for k, v in sd.items() if k not in skipped and not k.startswith(UNUSED_PREFIXES)}
    _check_state(kept, expected, "single-file checkpoint")
    out = []
    for _, prefix, params in parts:
        part = {}
        for p in params:
            tensor = sd[source[prefix + p.theirs]]
            if p.kind == "conv1x1":
                tensor = tensor[:, :, 0, 0]
            elif p.kind:  # own storage: safetensors refuses to save tensors that share memory
                tensor = tensor.chunk(3)["qkv".index(p.kind)].clone()
            part[p.ours] = tensor
        out.append(part)
    return out[0], out[1], out[2]


def _skipped_keys(cfg: SDConfig, layout: str, unet_keys: list[str], use_ema: bool) -> set[str]:
    """Keys a real checkpoint may hold that are not weights of the model `cfg` describes."""
    skipped = set(TRAINING_STATE)
    # LitEma keeps a copy of every UNet weight; exactly one of the two copies is read.
    skipped |= set(unet_keys) if use_ema else {_ema_key(key) for key in unet_keys}
    prefix = TEXT_PREFIX[layout]
    if layout == "openai":
        # A buffer holding arange(P): the model makes positions itself, there is nothing to load.
        skipped.add(prefix + "embeddings.position_ids")
    else:
        # SD 2.x conditions on OpenCLIP's penultimate layer, so its last resblock, the projection
        # into the joint image-text space and the contrastive temperature never reach the UNet;
        # diffusers-format SD 2.x text encoders have 23 of the 24 layers. Only the one layer right
        # after ours is skipped: a resblock at any other index means the config does not fit.
        last = _text_layer(cfg.text.num_hidden_layers, cfg.text, layout)
        skipped |= {prefix + p.theirs for p in last} | {prefix + "text_projection", prefix + "logit_scale"}
    return skipped


def _ema_key(key: str) -> str:
    """LitEma's name for the copy of `model.<name>`: buffer names may not contain dots, so it drops
    them (model.diffusion_model.out.0.weight -> model_ema.diffusion_modelout0weight)."""
    return "model_ema." + key.removeprefix("model.").replace(".", "")


def _with_text_model_level(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Some older SD 1.x files keep the text encoder one level up, without `text_model.`."""
    new = TEXT_PREFIX["openai"]
    if any(k.startswith(new) for k in sd):
        return sd
    return {new + k[len(OLD_OPENAI_PREFIX) :] if k.startswith(OLD_OPENAI_PREFIX) else k: v for k, v in sd.items()}


def _check_state(sd: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(expected.keys() - sd.keys())
    unexpected = sorted(sd.keys() - expected.keys())
    wrong = [
        f"{k} {tuple(sd[k].shape)}, expected {expected[k]}"
        for k in sorted(expected.keys() & sd.keys())
        if tuple(sd[k].shape) != expected[k]
    ]
    problems = [_listing(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                           ("wrong shape", wrong)) if keys]  # fmt: skip
    if problems:
        raise WeightsError(f"{what} does not fit the config: " + "; ".join(problems))


def _listing(label: str, items: list[str], limit: int = 10) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {label}: {', '.join(items[:limit])}{more}"


# --- config inference ------------------------------------------------------------------------------


def infer_config(sd: dict[str, torch.Tensor]) -> SDConfig:
    """An SDConfig read off a single file's keys and shapes (the original files carry no config).

    What shapes cannot tell comes from SD itself; override it when you know better: GroupNorm
    groups (32), attention heads (SD 1.x UNet: 8 per level; SD 2.x UNet and CLIP: 64 wide), the
    sample size (64 latents for SD 1.x's 512 pixels, 96 for SD 2.x-768) and the prediction type.
    """
    if UNET_PREFIX + "input_blocks.0.0.weight" not in sd:
        raise WeightsError("no UNet in this file (no model.diffusion_model.* keys): is it an SD 1.x/2.x checkpoint?")
    layout = detect_text_layout(sd)
    if layout == "openai":
        sd = _with_text_model_level(sd)
    try:
        unet, vae, text = _infer_unet(sd), _infer_vae(sd), _infer_text(sd, layout)
    except KeyError as e:
        raise WeightsError(f"cannot read the architecture: no {e.args[0]} in this file") from None
    # SD 2.x-768 predicts v and SD 2.x-base eps, with the same shapes: v is the guess for SD 2.x
    # (linear proj_in) UNets, and a caller loading SD 2.x-base overrides it.
    prediction = "v_prediction" if unet.use_linear_projection else "epsilon"
    return SDConfig(text=text, vae=vae, unet=unet, scheduler=SchedulerConfig(prediction_type=prediction))


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children `<prefix>N.` the keys have."""
    return len({k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix)})


def _infer_unet(sd: dict[str, torch.Tensor]) -> UNetConfig:
    u, mid = UNET_PREFIX, UNET_PREFIX + "middle_block.1."
    n = 1 + sum(k.startswith(u + "input_blocks.") and k.endswith(".0.op.weight") for k in sd)  # downsamplers + 1
    L = (_count(sd, u + "input_blocks.") - 1 - (n - 1)) // n  # blocks: conv_in, L per level, n-1 downsamplers
    first = [1 + level * (L + 1) for level in range(n)]  # each level's first input block
    C = tuple(sd[f"{u}input_blocks.{b}.0.out_layers.3.weight"].shape[0] for b in first)
    attention = [f"{u}input_blocks.{b}.1.proj_in.weight" in sd for b in first]
    linear = sd[mid + "proj_in.weight"].ndim == 2
    return UNetConfig(
        in_channels=sd[u + "input_blocks.0.0.weight"].shape[1],
        out_channels=sd[u + "out.2.weight"].shape[0],
        sample_size=96 if linear else 64,
        block_out_channels=C,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        layers_per_block=L,
        transformer_layers_per_block=_count(sd, mid + "transformer_blocks."),
        cross_attention_dim=sd[mid + "transformer_blocks.0.attn2.to_k.weight"].shape[1],
        num_heads=None if linear else (8,) * n,
        # 64-wide heads; a UNet narrower than that (a test model) gets one head at its narrowest level.
        head_dim=min(64, *C) if linear else None,
        use_linear_projection=linear,
        upcast_attention=linear,  # SD 2.1 needs fp32 attention scores under fp16; exact either way in fp32
    )


def _infer_vae(sd: dict[str, torch.Tensor]) -> VAEConfig:
    v = VAE_PREFIX
    n = _count(sd, v + "encoder.down.")
    return VAEConfig(
        in_channels=sd[v + "encoder.conv_in.weight"].shape[1],
        out_channels=sd[v + "decoder.conv_out.weight"].shape[0],
        latent_channels=sd[v + "post_quant_conv.weight"].shape[0],
        block_out_channels=tuple(sd[f"{v}encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(n)),
        layers_per_block=_count(sd, v + "encoder.down.0.block."),
    )


def _infer_text(sd: dict[str, torch.Tensor], layout: str) -> CLIPTextConfig:
    prefix, openclip = TEXT_PREFIX[layout], layout == "openclip"
    tokens, positions = (
        ("token_embedding.weight", "positional_embedding")
        if openclip
        else ("embeddings.token_embedding.weight", "embeddings.position_embedding.weight")
    )
    layers = prefix + ("transformer.resblocks." if openclip else "encoder.layers.")
    V, D = sd[prefix + tokens].shape
    n = _count(sd, layers)
    if openclip and prefix + "text_projection" in sd:
        # The whole OpenCLIP text tower as trained. SD 2.x conditions on its penultimate layer, so
        # the last one is not part of the model (as in diffusers' SD 2.x text encoders: 23 of 24).
        # Files without the projection (converted from diffusers' format) hold only the used layers.
        n -= 1
    return CLIPTextConfig(
        vocab_size=V,
        hidden_size=D,
        intermediate_size=sd[f"{layers}0.{'mlp.c_fc' if openclip else 'mlp.fc1'}.weight"].shape[0],
        num_hidden_layers=n,
        num_attention_heads=max(D // 64, 1),  # CLIP's heads are 64 wide
        max_position_embeddings=sd[prefix + positions].shape[0],
        hidden_act="gelu" if openclip else "quick_gelu",
    )
