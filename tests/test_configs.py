"""Config translation, and the full-size presets against diffusers/transformers built on the meta device.

The real SD 1.5 / 2.1 config.json files are written out below as they ship on the Hub
(runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1), trimmed to the keys that matter.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentdiff.clip import CLIPTextModel
from latentdiff.config import ConfigError, UNetConfig, preset
from latentdiff.unet import UNet2DConditionModel
from latentdiff.vae import AutoencoderKL
from latentdiff.weights import diffusers_config as dc

SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD21_UNET = {
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "sample_size": 96,
    "upcast_attention": True,
    "use_linear_projection": True,
}
SD_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_TEXT = {
    "architectures": ["CLIPTextModel"],
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "vocab_size": 49408,
    "eos_token_id": 2,
    "projection_dim": 768,
}
SD21_TEXT = {
    **SD15_TEXT,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "projection_dim": 512,
}


def test_real_configs_translate_to_presets():
    assert dc.unet_from_diffusers(SD15_UNET) == preset("sd15").unet
    assert dc.unet_from_diffusers(SD21_UNET) == preset("sd2").unet
    assert dc.vae_from_diffusers(SD_VAE) == preset("sd15").vae
    # The real SD 1.5 text config still carries the legacy eos_token_id=2 (pool at argmax).
    assert dc.text_from_transformers(SD15_TEXT) == dataclasses.replace(preset("sd15").text, eos_token_id=2)
    assert dc.text_from_transformers({**SD21_TEXT, "eos_token_id": 49407}) == preset("sd2").text


@pytest.mark.parametrize("name", ["sd15", "sd2", "tiny"])
def test_translation_round_trips(name):
    c = preset(name)
    assert dc.unet_from_diffusers(dc.unet_to_diffusers(c.unet)) == c.unet
    assert dc.vae_from_diffusers(dc.vae_to_diffusers(c.vae)) == c.vae
    assert dc.text_from_transformers(dc.text_to_transformers(c.text)) == c.text
    assert dc.scheduler_from_diffusers(dc.scheduler_to_diffusers(c.scheduler)) == c.scheduler


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", ["sd15", "sd2"])
def test_full_size_presets_have_the_references_keys_and_shapes(name):
    """Every key and shape of the real-size models, built without memory on the meta device."""
    from diffusers import AutoencoderKL as RefVAE
    from diffusers import UNet2DConditionModel as RefUNet
    from transformers import CLIPTextConfig as RefTextConfig
    from transformers import CLIPTextModel as RefText

    c = preset(name)
    with torch.device("meta"):
        unet_cfg = {k: v for k, v in dc.unet_to_diffusers(c.unet).items() if not k.startswith("_")}
        vae_cfg = {k: v for k, v in dc.vae_to_diffusers(c.vae).items() if not k.startswith("_")}
        text_cfg = RefTextConfig(**{k: v for k, v in dc.text_to_transformers(c.text).items() if k != "architectures"})
        assert _shapes(UNet2DConditionModel(c.unet)) == _shapes(RefUNet(**unet_cfg))
        assert _shapes(AutoencoderKL(c.vae)) == _shapes(RefVAE(**vae_cfg))
        assert _shapes(CLIPTextModel(c.text)) == _shapes(RefText(text_cfg))
        n_unet = sum(p.numel() for p in UNet2DConditionModel(c.unet).parameters())
    # The published size of SD 1.x's UNet; SD 2.x's differs only by the 1024-wide context projections.
    assert n_unet == {"sd15": 859_520_964, "sd2": 865_910_724}[name]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"class_embed_type": "timestep"}, "class_embed_type='timestep' is not supported"),
        ({"addition_embed_type": "text_time"}, "addition_embed_type='text_time' is not supported"),
        ({"down_block_types": ["SimpleCrossAttnDownBlock2D"] * 4}, "unsupported down block"),
        ({"attention_head_dim": [8, 8]}, "num_heads has 2 entries for 4 levels"),
        ({"transformer_layers_per_block": [1, 2, 10, 10]}, "per-level transformer_layers_per_block"),
    ],
)
def test_unsupported_unet_configs_fail_with_the_key_named(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        dc.unet_from_diffusers({**SD15_UNET, **change})


def test_unet_config_says_heads_honestly():
    with pytest.raises(ConfigError, match="exactly one of num_heads"):
        UNetConfig(num_heads=(8,) * 4, head_dim=64)
    by_dim = UNetConfig(num_heads=None, head_dim=64)
    assert [by_dim.heads(i) for i in range(4)] == [5, 10, 20, 20]


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'sd9'; choose one of: sd15, sd2, tiny"):
        preset("sd9")
