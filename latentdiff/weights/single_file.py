"""The original Stable Diffusion single-file layout (CompVis / Stability checkpoints) as one key table.

    model.diffusion_model.*         the UNet        (input_blocks / middle_block / output_blocks)
    first_stage_model.*             the VAE         (encoder.down.i.block.j / decoder.up.i ...)
    cond_stage_model.transformer.*  SD 1.x text     (OpenAI CLIP, transformers names + text_model.)
    cond_stage_model.model.*        SD 2.x text     (OpenCLIP: resblocks, fused qkv in_proj)

The table is built from a config: every key of our model (diffusers names) paired with its key in
the original layout, plus how the tensor changes on the way (`Rule.kind`):
    ""        the same tensor
    "conv1x1" our Linear (C, C) is the original's 1x1 conv (C, C, 1, 1) (VAE attention)
    "q"/"k"/"v" our separate projection is one third of OpenCLIP's fused in_proj (rows q, k, v)
Each original key appears once (the three thirds share one), so the table is invertible, and
both directions are strict: an unknown, missing or mis-shaped key is an error, except the
training-only state listed in IGNORED, which is never weights of the model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..clip import CLIPTextModel
from ..config import CLIPTextConfig, SchedulerConfig, SDConfig, UNetConfig, VAEConfig
from ..unet import UNet2DConditionModel
from ..vae import AutoencoderKL
from .errors import WeightsError

UNET, VAE = "model.diffusion_model.", "first_stage_model."
OPENAI, OPENCLIP = "cond_stage_model.transformer.text_model.", "cond_stage_model.model."

# What LatentDiffusion saves beside the weights: the diffusion schedule's buffers (recomputed from
# the config), EMA bookkeeping, and the VAE's training loss (LPIPS + discriminator).
IGNORED = re.compile(
    r"^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod"
    r"|log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance"
    r"|posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar|lvlb_weights"
    r"|model_ema\..*|first_stage_model\.loss\..*|cond_stage_model\.transformer\.(text_model\.)?embeddings\.position_ids)$"
)


@dataclass(frozen=True)
class Rule:
    ours: str  # key in our (diffusers / transformers) naming
    theirs: str  # key in the original single file, with its prefix
    kind: str = ""  # "", "conv1x1", "q", "k", "v"


def _meta_keys(module_cls, cfg) -> list[str]:
    """Our model's state-dict keys for a config, without allocating any weights."""
    with torch.device("meta"):
        return list(module_cls(cfg).state_dict())


# --- UNet ------------------------------------------------------------------------------------------

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip


def _unet_key(key: str, cfg: UNetConfig) -> str:
    L = cfg.layers_per_block
    top = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
    for ours, theirs in top.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours) :]
    m = re.match(
        r"(down_blocks|up_blocks|mid_block)\.(?:(\d+)\.)?(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key
    )
    if not m:
        raise WeightsError(f"no single-file name for UNet key {key}")
    where, level, part, j, rest = m.group(1), int(m.group(2) or 0), m.group(3), int(m.group(4)), m.group(5)
    if part == "resnets":
        name, _, param = rest.partition(".")
        rest = f"{_UNET_RESNET[name]}.{param}"
    if where == "mid_block":
        # middle_block.0 = resnet, .1 = transformer, .2 = resnet
        return f"middle_block.{1 if part == 'attentions' else 2 * j}.{rest}"
    if where == "down_blocks":
        if part == "downsamplers":
            return f"input_blocks.{1 + level * (L + 1) + L}.0.op.{rest.removeprefix('conv.')}"
        return f"input_blocks.{1 + level * (L + 1) + j}.{1 if part == 'attentions' else 0}.{rest}"
    if part == "upsamplers":  # after the resnet (and the transformer, when the level has one)
        has_attention = cfg.up_block_types[level] == "CrossAttnUpBlock2D"
        return f"output_blocks.{level * (L + 1) + L}.{2 if has_attention else 1}.{rest}"
    return f"output_blocks.{level * (L + 1) + j}.{1 if part == 'attentions' else 0}.{rest}"


def unet_key_table(cfg: UNetConfig) -> list[Rule]:
    return [Rule(k, UNET + _unet_key(k, cfg)) for k in _meta_keys(UNet2DConditionModel, cfg)]


# --- VAE -------------------------------------------------------------------------------------------

_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_rule(key: str, n_levels: int) -> Rule:
    k = key
    for ours, theirs in (("mid_block.resnets.0.", "mid.block_1."), ("mid_block.resnets.1.", "mid.block_2."),
                         ("conv_norm_out.", "norm_out."), ("conv_shortcut.", "nin_shortcut."),
                         ("downsamplers.0.", "downsample."), ("upsamplers.0.", "upsample."),
                         (".resnets.", ".block.")):  # fmt: skip
        k = k.replace(ours, theirs)
    k = re.sub(r"encoder\.down_blocks\.(\d+)\.", r"encoder.down.\1.", k)
    # The original decoder numbers its levels from the lowest resolution up: reversed.
    k = re.sub(r"decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{n_levels - 1 - int(m.group(1))}.", k)
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", k)
    if m:
        theirs = f"{m.group(1)}.mid.attn_1.{_VAE_ATTENTION[m.group(2)]}.{m.group(3)}"
        # A Linear here is a 1x1 conv there; GroupNorm weights and all biases keep their shape.
        conv = m.group(3) == "weight" and m.group(2) != "group_norm"
        return Rule(key, VAE + theirs, "conv1x1" if conv else "")
    return Rule(key, VAE + k)


def vae_key_table(cfg: VAEConfig) -> list[Rule]:
    return [_vae_rule(k, len(cfg.block_out_channels)) for k in _meta_keys(AutoencoderKL, cfg)]


# --- text encoder ----------------------------------------------------------------------------------

_OPENCLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}  # fmt: skip


def _openclip_rule(key: str) -> Rule:
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",  # a bare Parameter there
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}  # fmt: skip
    if key in fixed:
        return Rule(key, OPENCLIP + fixed[key])
    m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    block, name, param = f"transformer.resblocks.{m.group(1)}", m.group(2), m.group(3)
    qkv = re.match(r"self_attn\.([qkv])_proj$", name)
    if qkv:
        return Rule(key, f"{OPENCLIP}{block}.attn.in_proj_{param}", qkv.group(1))
    return Rule(key, f"{OPENCLIP}{block}.{_OPENCLIP[name]}.{param}")


def text_key_table(cfg: CLIPTextConfig, layout: str) -> list[Rule]:
    keys = _meta_keys(CLIPTextModel, cfg)
    if layout == "openai":
        return [Rule(k, OPENAI + k) for k in keys]
    if layout == "openclip":
        return [_openclip_rule(k) for k in keys]
    raise WeightsError(f"unknown text layout {layout!r}; choose openai or openclip")


def detect_text_layout(sd: dict[str, torch.Tensor]) -> str:
    if any(k.startswith(OPENCLIP) for k in sd):
        return "openclip"
    if any(k.startswith("cond_stage_model.transformer.") for k in sd):
        return "openai"
    raise WeightsError("no text encoder in this file (no cond_stage_model.* keys): is it an SD 1.x/2.x checkpoint?")


def _tables(cfg: SDConfig, text_layout: str) -> Iterator[tuple[str, list[Rule]]]:
    yield "unet", unet_key_table(cfg.unet)
    yield "vae", vae_key_table(cfg.vae)
    yield "text", text_key_table(cfg.text, text_layout)


# --- conversion ------------------------------------------------------------------------------------


def to_single_file(unet: dict, vae: dict, text: dict, cfg: SDConfig, text_layout: str = "openai") -> dict:
    """Our three state dicts -> one original-layout state dict."""
    parts = {"unet": unet, "vae": vae, "text": CLIPTextModel.normalize_state_dict(text)}
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for name, table in _tables(cfg, text_layout):
        _check_keys(parts[name], {r.ours for r in table}, f"our {name} state dict")
        for rule in table:
            tensor = parts[name][rule.ours]
            if rule.kind == "conv1x1":
                out[rule.theirs] = tensor[:, :, None, None]
            elif rule.kind in ("q", "k", "v"):
                fused.setdefault(rule.theirs, {})[rule.kind] = tensor
            else:
                out[rule.theirs] = tensor
    for key, thirds in fused.items():
        out[key] = torch.cat([thirds["q"], thirds["k"], thirds["v"]], dim=0)
    return out


def from_single_file(
    sd: dict[str, torch.Tensor], cfg: SDConfig, text_layout: str | None = None, use_ema: bool = False
) -> tuple[dict, dict, dict]:
    """One original-layout state dict -> our (unet, vae, text) state dicts. Strict both ways."""
    text_layout = text_layout or detect_text_layout(sd)
    sd = _normalize_openai_prefix(sd) if text_layout == "openai" else dict(sd)
    if use_ema:
        sd = _take_ema(sd)
    if text_layout == "openclip":
        # SD 2.x conditions on OpenCLIP's penultimate layer: the last resblock and the projection
        # to the joint image-text space never reach the UNet, so the converted model omits them.
        last = f"{OPENCLIP}transformer.resblocks.{cfg.text.num_hidden_layers}."
        unused = (last, f"{OPENCLIP}text_projection", f"{OPENCLIP}logit_scale")
        sd = {k: v for k, v in sd.items() if not k.startswith(unused)}
    tables = dict(_tables(cfg, text_layout))
    wanted = {r.theirs for table in tables.values() for r in table}
    _check_keys({k: v for k, v in sd.items() if not IGNORED.match(k)}, wanted, "single-file checkpoint")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, table in tables.items():
        part = parts[name] = {}
        for rule in table:
            tensor = sd[rule.theirs]
            if rule.kind == "conv1x1":
                tensor = tensor.reshape(tensor.shape[:2])
            elif rule.kind:
                tensor = tensor.chunk(3, dim=0)["qkv".index(rule.kind)]
            part[rule.ours] = tensor
    return parts["unet"], parts["vae"], parts["text"]


def _normalize_openai_prefix(sd: dict) -> dict:
    """Older SD 1.x files store the text encoder without transformers' `text_model.` level."""
    old = "cond_stage_model.transformer."
    if any(k.startswith(OPENAI) for k in sd):
        return dict(sd)
    return {OPENAI + k[len(old) :] if k.startswith(old) and not IGNORED.match(k) else k: v for k, v in sd.items()}


def _take_ema(sd: dict) -> dict:
    """Replace the UNet weights by their EMA copies, stored as `model_ema.` + the key with its dots
    removed (`model.diffusion_model.out.0.weight` -> `model_ema.diffusion_modelout0weight`)."""
    out = dict(sd)
    missing = []
    for key in sd:
        if key.startswith(UNET):
            ema = "model_ema." + key[len("model.") :].replace(".", "")
            if ema in sd:
                out[key] = sd[ema]
            else:
                missing.append(ema)
    if missing:
        raise WeightsError(f"use_ema: {len(missing)} EMA weights missing, e.g. {missing[0]}")
    return out


def _check_keys(sd: dict, wanted: set[str], what: str) -> None:
    missing = sorted(wanted - sd.keys())
    unexpected = sorted(sd.keys() - wanted)
    if missing or unexpected:
        problems = [f"{len(keys)} {label} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
                    for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
        raise WeightsError(f"{what} does not fit the config: " + ", ".join(problems))


# --- config inference ------------------------------------------------------------------------------


def _count(sd: dict, pattern: str) -> int:
    """How many distinct values the (\\d+) group in `pattern` takes among the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := regex.match(k))})


def infer_config(sd: dict[str, torch.Tensor]) -> SDConfig:
    """An SDConfig read off a single file's keys and shapes (such files carry no config).

    What shapes cannot tell is taken from SD itself: GroupNorm uses 32 groups; SD 1.x has 8 heads
    per level, SD 2.x 64-wide heads; SD 2.x (linear proj_in) predicts v, as SD 2.x-768 does; SD 2.x
    base predicts eps, so callers may override the prediction type.
    """
    u = UNET
    if f"{u}input_blocks.0.0.weight" not in sd:
        raise WeightsError("no UNet in this file (no model.diffusion_model.* keys): is it an SD checkpoint?")
    n_inputs = _count(sd, rf"{re.escape(u)}input_blocks\.(\d+)\.")
    n_levels = _count(sd, rf"{re.escape(u)}input_blocks\.(\d+)\.0\.op\.weight") + 1
    L = (n_inputs - 1 - (n_levels - 1)) // n_levels
    chs = tuple(sd[f"{u}input_blocks.{1 + i * (L + 1)}.0.out_layers.3.weight"].shape[0] for i in range(n_levels))
    attention = [f"{u}input_blocks.{1 + i * (L + 1)}.1.proj_in.weight" in sd for i in range(n_levels)]
    first_attn = next((i for i, a in enumerate(attention) if a), None)
    if first_attn is None:
        raise WeightsError("this UNet has no cross-attention: not a text-conditioned SD UNet")
    attn = f"{u}input_blocks.{1 + first_attn * (L + 1)}.1."
    linear = sd[attn + "proj_in.weight"].ndim == 2
    context_dim = sd[attn + "transformer_blocks.0.attn2.to_k.weight"].shape[1]
    text_layout = detect_text_layout(sd)
    unet = UNetConfig(
        in_channels=sd[f"{u}input_blocks.0.0.weight"].shape[1],
        out_channels=sd[f"{u}out.2.weight"].shape[0],
        sample_size=96 if linear else 64,
        block_out_channels=chs,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        layers_per_block=L,
        transformer_layers_per_block=_count(sd, rf"{re.escape(attn)}transformer_blocks\.(\d+)\."),
        cross_attention_dim=context_dim,
        num_heads=tuple(max(c // 64, 1) if linear else 8 for c in chs),
        use_linear_projection=linear,
        upcast_attention=linear,
    )
    v = VAE
    vae_levels = _count(sd, rf"{re.escape(v)}encoder\.down\.(\d+)\.")
    vae = VAEConfig(
        in_channels=sd[f"{v}encoder.conv_in.weight"].shape[1],
        out_channels=sd[f"{v}decoder.conv_out.weight"].shape[0],
        latent_channels=sd[f"{v}post_quant_conv.weight"].shape[0],
        block_out_channels=tuple(sd[f"{v}encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(vae_levels)),
        layers_per_block=_count(sd, rf"{re.escape(v)}encoder\.down\.0\.block\.(\d+)\."),
    )
    return SDConfig(
        text=_infer_text(sd, text_layout),
        vae=vae,
        unet=unet,
        scheduler=SchedulerConfig(prediction_type="v_prediction" if linear else "epsilon"),
    )


# Where each text layout keeps what infer_config reads, and how many of its layers SD leaves
# unused: SD 2.x reads OpenCLIP's penultimate layer, so the converted model drops the last one.
_TEXT_SHAPES = {
    "openai": (OPENAI, "embeddings.token_embedding.weight", "encoder.layers", "mlp.fc1.weight",
               "embeddings.position_embedding.weight", "quick_gelu", 0),
    "openclip": (OPENCLIP, "token_embedding.weight", "transformer.resblocks", "mlp.c_fc.weight",
                 "positional_embedding", "gelu", 1),
}  # fmt: skip


def _infer_text(sd: dict, layout: str) -> CLIPTextConfig:
    prefix, tokens, layers, fc1, positions, act, unused = _TEXT_SHAPES[layout]
    sd = _normalize_openai_prefix(sd) if layout == "openai" else sd
    vocab, width = sd[prefix + tokens].shape
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=sd[f"{prefix}{layers}.0.{fc1}"].shape[0],
        num_hidden_layers=_count(sd, rf"{re.escape(prefix + layers)}\.(\d+)\.") - unused,
        num_attention_heads=max(width // 64, 1),  # CLIP's heads are 64 wide
        max_position_embeddings=sd[prefix + positions].shape[0],
        hidden_act=act,
    )
