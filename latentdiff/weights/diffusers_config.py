"""Translation between diffusers/transformers config.json files and our config dataclasses.

Reading fails with a one-line message when a config asks for a feature we do not build (SDXL's
extra embeddings, other block types...), so an unsupported model is refused before any weights
are read. Keys that do not change the architecture are ignored.
"""

from __future__ import annotations

from typing import Any

from ..config import CLIPTextConfig, ConfigError, SchedulerConfig, UNetConfig, VAEConfig

# Architecture switches of diffusers' UNet2DConditionModel that SD 1.x/2.x leave at these values.
_UNET_FIXED = {
    "act_fn": "silu",
    "center_input_sample": False,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "num_class_embeds": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "mid_block_only_cross_attention": None,
    "attention_type": "default",
    "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
}
_VAE_FIXED = {
    "act_fn": "silu",
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
}


def _check_fixed(cfg: dict, fixed: dict, what: str) -> None:
    for key, value in fixed.items():
        given = cfg.get(key, value)
        # Per-level lists (e.g. only_cross_attention=[false, false, ...]) are fine when uniform.
        if isinstance(given, list) and not isinstance(value, list) and given and set(given) == {value}:
            continue
        if given != value:
            raise ConfigError(f"{what}: {key}={cfg[key]!r} is not supported (latentdiff builds {key}={value!r})")


def _one_value(value: Any, key: str, what: str) -> Any:
    """diffusers allows per-level lists for some keys; SD 1.x/2.x use one value everywhere."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ConfigError(f"{what}: per-level {key}={value} is not supported")
        return value[0]
    return value


def unet_from_diffusers(cfg: dict) -> UNetConfig:
    what = "unet config"
    _check_fixed(cfg, _UNET_FIXED, what)
    n = len(cfg["block_out_channels"])
    # diffusers' attention_head_dim is the number of heads for these models (diffusers issue 2011);
    # num_attention_heads, when present, says the same thing under its right name.
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    heads = tuple(heads) if isinstance(heads, (list, tuple)) else (heads,) * n
    return UNetConfig(
        in_channels=cfg.get("in_channels", 4),
        out_channels=cfg.get("out_channels", 4),
        sample_size=_one_value(cfg.get("sample_size", 64), "sample_size", what),
        block_out_channels=tuple(cfg["block_out_channels"]),
        down_block_types=tuple(cfg["down_block_types"]),
        up_block_types=tuple(cfg["up_block_types"]),
        layers_per_block=_one_value(cfg.get("layers_per_block", 2), "layers_per_block", what),
        transformer_layers_per_block=_one_value(
            cfg.get("transformer_layers_per_block", 1), "transformer_layers_per_block", what
        ),
        cross_attention_dim=_one_value(cfg.get("cross_attention_dim", 1280), "cross_attention_dim", what),
        num_heads=heads,
        use_linear_projection=cfg.get("use_linear_projection", False),
        upcast_attention=cfg.get("upcast_attention", False),
        norm_num_groups=cfg.get("norm_num_groups", 32),
        norm_eps=cfg.get("norm_eps", 1e-5),
        flip_sin_to_cos=cfg.get("flip_sin_to_cos", True),
        freq_shift=cfg.get("freq_shift", 0),
    )


def unet_to_diffusers(c: UNetConfig) -> dict:
    heads = [c.heads(level) for level in range(len(c.block_out_channels))]
    return {
        "_class_name": "UNet2DConditionModel",
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "sample_size": c.sample_size,
        "block_out_channels": list(c.block_out_channels),
        "down_block_types": list(c.down_block_types),
        "up_block_types": list(c.up_block_types),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": c.layers_per_block,
        "transformer_layers_per_block": c.transformer_layers_per_block,
        "cross_attention_dim": c.cross_attention_dim,
        # Written under diffusers' misnomer because that is the key every SD 1.x/2.x config uses.
        "attention_head_dim": heads,
        "use_linear_projection": c.use_linear_projection,
        "upcast_attention": c.upcast_attention,
        "norm_num_groups": c.norm_num_groups,
        "norm_eps": c.norm_eps,
        "flip_sin_to_cos": c.flip_sin_to_cos,
        "freq_shift": c.freq_shift,
        "act_fn": "silu",
    }


def vae_from_diffusers(cfg: dict) -> VAEConfig:
    what = "vae config"
    _check_fixed(cfg, _VAE_FIXED, what)
    n = len(cfg["block_out_channels"])
    for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        if list(cfg.get(key, [kind] * n)) != [kind] * n:
            raise ConfigError(f"{what}: {key}={cfg[key]} is not supported (only {kind})")
    return VAEConfig(
        in_channels=cfg.get("in_channels", 3),
        out_channels=cfg.get("out_channels", 3),
        latent_channels=cfg.get("latent_channels", 4),
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg.get("layers_per_block", 1),
        norm_num_groups=cfg.get("norm_num_groups", 32),
        sample_size=_one_value(cfg.get("sample_size", 512), "sample_size", what),
        scaling_factor=cfg.get("scaling_factor", 0.18215),
    )


def vae_to_diffusers(c: VAEConfig) -> dict:
    n = len(c.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "latent_channels": c.latent_channels,
        "block_out_channels": list(c.block_out_channels),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "layers_per_block": c.layers_per_block,
        "norm_num_groups": c.norm_num_groups,
        "sample_size": c.sample_size,
        "scaling_factor": c.scaling_factor,
        "act_fn": "silu",
    }


def text_from_transformers(cfg: dict) -> CLIPTextConfig:
    arch = cfg.get("architectures") or ["CLIPTextModel"]
    if arch != ["CLIPTextModel"]:
        raise ConfigError(f"text_encoder config: architecture {arch} is not supported (only CLIPTextModel)")
    defaults = CLIPTextConfig()
    fields = CLIPTextConfig.__dataclass_fields__
    return CLIPTextConfig(**{k: cfg.get(k, getattr(defaults, k)) for k in fields})


def text_to_transformers(c: CLIPTextConfig) -> dict:
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        **{k: getattr(c, k) for k in CLIPTextConfig.__dataclass_fields__},
        "bos_token_id": c.eos_token_id - 1,  # CLIP's <|startoftext|> sits just before <|endoftext|>
        "pad_token_id": 1,
        "torch_dtype": "float32",
    }


def scheduler_from_diffusers(cfg: dict) -> SchedulerConfig:
    if cfg.get("trained_betas") is not None:
        raise ConfigError("scheduler config: explicit trained_betas are not supported")
    defaults = SchedulerConfig()
    return SchedulerConfig(**{k: cfg.get(k, getattr(defaults, k)) for k in SchedulerConfig.__dataclass_fields__})


def scheduler_to_diffusers(c: SchedulerConfig) -> dict:
    # The sampler settings SD 1.x/2.x ship with, so diffusers samples our folders as it samples theirs.
    return {
        "_class_name": "DDIMScheduler",
        **{k: getattr(c, k) for k in SchedulerConfig.__dataclass_fields__},
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }
