"""Frozen dataclasses, one per component, and the named presets.

Field names follow the references' config.json keys (transformers for CLIP, diffusers for the UNet
and VAE) so a config file translates field for field, with one deliberate exception: diffusers'
`attention_head_dim` is, for SD 1.x/2.x UNets, the number of heads (diffusers issue 2011). Here the
UNet says what it means: `num_heads` (per level) or `head_dim` (one size for all levels).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

UNET_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")


class ConfigError(ValueError):
    """A config that cannot describe a model we build (the message says which field and why)."""


def _check_heads(cfg) -> None:
    """Both CLIP towers split their width evenly across heads."""
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(
            f"{type(cfg).__name__}: hidden_size {cfg.hidden_size} is not divisible by "
            f"num_attention_heads {cfg.num_attention_heads}"
        )


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"  # SD 1.x (OpenAI CLIP); SD 2.x (OpenCLIP) uses "gelu"
    layer_norm_eps: float = 1e-5
    # The pooled output is read at the first EOS token. transformers' legacy configs say
    # eos_token_id=2 and then pool at argmax(ids) instead; we follow the same rule.
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        _check_heads(self)
        if self.hidden_act not in ("quick_gelu", "gelu"):
            raise ConfigError(f"CLIPTextConfig: hidden_act must be quick_gelu or gelu, got {self.hidden_act!r}")


@dataclass(frozen=True)
class CLIPVisionConfig:
    """CLIP's image tower: a ViT over patch_size x patch_size patches plus a class token."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_heads(self)
        if self.image_size % self.patch_size:
            raise ConfigError(f"CLIPVisionConfig: image_size {self.image_size} is not a multiple of {self.patch_size}")


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    sample_size: int = 512
    # Latents are multiplied by this before diffusion so they have roughly unit variance.
    scaling_factor: float = 0.18215

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ConfigError(f"VAEConfig: channels {c} not divisible by norm_num_groups {self.norm_num_groups}")

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel along each side (8 for SD)."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    sample_size: int = 64
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: int = 2
    transformer_layers_per_block: int = 1
    cross_attention_dim: int = 768
    # Exactly one of the two: heads per level (SD 1.x: 8 everywhere, SD 2.x: 5, 10, 20, 20)
    # or one head size for every level (SD 2.x is also "head_dim=64").
    num_heads: tuple[int, ...] | None = (8, 8, 8, 8)
    head_dim: int | None = None
    use_linear_projection: bool = False  # SD 2.x: proj_in/proj_out are Linear, SD 1.x: 1x1 Conv
    upcast_attention: bool = False  # compute attention scores in fp32 (SD 2.1 under fp16)
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0

    def __post_init__(self) -> None:
        for name in ("block_out_channels", "down_block_types", "up_block_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.num_heads is not None:
            heads = self.num_heads
            if isinstance(heads, int):
                heads = (heads,) * len(self.block_out_channels)
            object.__setattr__(self, "num_heads", tuple(heads))
        n = len(self.block_out_channels)
        if (self.num_heads is None) == (self.head_dim is None):
            raise ConfigError("UNetConfig: give exactly one of num_heads (per level) or head_dim")
        if self.num_heads is not None and len(self.num_heads) != n:
            raise ConfigError(f"UNetConfig: num_heads has {len(self.num_heads)} entries for {n} levels")
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ConfigError(f"UNetConfig: need {n} down and {n} up block types, one per level")
        for kind in self.down_block_types:
            if kind not in UNET_DOWN_BLOCKS:
                raise ConfigError(f"UNetConfig: unsupported down block {kind!r} (supported: {UNET_DOWN_BLOCKS})")
        for kind in self.up_block_types:
            if kind not in UNET_UP_BLOCKS:
                raise ConfigError(f"UNetConfig: unsupported up block {kind!r} (supported: {UNET_UP_BLOCKS})")
        for level in range(n):
            c = self.block_out_channels[level]
            if c % self.norm_num_groups:
                raise ConfigError(f"UNetConfig: channels {c} not divisible by norm_num_groups {self.norm_num_groups}")
            if self.has_attention(level) and (self.heads(level) < 1 or c % self.heads(level)):
                raise ConfigError(
                    f"UNetConfig: level {level} has {c} channels, not divisible by {self.heads(level)} heads"
                )

    def heads(self, level: int) -> int:
        """Number of attention heads at a resolution level (0 = highest resolution)."""
        if self.num_heads is not None:
            return self.num_heads[level]
        return self.block_out_channels[level] // self.head_dim

    def has_attention(self, level: int) -> bool:
        return self.down_block_types[level] == "CrossAttnDownBlock2D"

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


@dataclass(frozen=True)
class SchedulerConfig:
    """The training noise schedule a UNet was trained with (what a sampler must know of it).

    diffusers' scheduler_config.json carries more keys, specific to one sampler class; those
    describe how to sample, not the model, and are not kept.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"  # "epsilon", "v_prediction" or "sample"

    def __post_init__(self) -> None:
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise ConfigError(f"SchedulerConfig: unknown beta_schedule {self.beta_schedule!r}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"SchedulerConfig: unknown prediction_type {self.prediction_type!r}")


@dataclass(frozen=True)
class SDConfig:
    """Everything that describes one Stable Diffusion model: its three networks and its schedule."""

    text: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # Which hidden state of the text encoder conditions the UNet: -1 = last layer (SD 1.x).
    # SD 2.x checkpoints on disk already drop OpenCLIP's last layer, so -1 there too.
    clip_skip_layer: int = -1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SDConfig:
        return cls(
            text=CLIPTextConfig(**d["text"]),
            vae=VAEConfig(**d["vae"]),
            unet=UNetConfig(**d["unet"]),
            scheduler=SchedulerConfig(**d["scheduler"]),
            clip_skip_layer=d.get("clip_skip_layer", -1),
        )


def _sd15() -> SDConfig:
    return SDConfig()


def _sd2() -> SDConfig:
    # stabilityai/stable-diffusion-2-1: OpenCLIP ViT-H text tower (24 layers, the last one dropped
    # because SD 2 conditions on the penultimate layer), linear proj_in/out, 64-dim heads.
    return SDConfig(
        text=CLIPTextConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu"
        ),
        unet=UNetConfig(
            sample_size=96,
            cross_attention_dim=1024,
            num_heads=(5, 10, 20, 20),
            use_linear_projection=True,
            upcast_attention=True,
        ),
        scheduler=SchedulerConfig(prediction_type="v_prediction"),
    )


def _tiny() -> SDConfig:
    # A few hundred thousand parameters: for tests and the random-weight demo, runs in a blink on CPU.
    return SDConfig(
        text=CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        vae=VAEConfig(block_out_channels=(32, 64), layers_per_block=1, sample_size=64),
        unet=UNetConfig(
            sample_size=32,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            cross_attention_dim=32,
            num_heads=(2, 4),
        ),
    )


PRESETS = {"sd15": _sd15, "sd2": _sd2, "tiny": _tiny}


def preset(name: str) -> SDConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
