"""Tiny configs shared by every parity test: ours and the reference's twin, side by side.

Each `*_pair(...)` returns (our config, reference model with random weights). The reference
configs are written out in full (not derived from ours) so a mistake in our translation of
config.json keys cannot hide itself.
"""

from __future__ import annotations

import torch

from latentdiff.config import CLIPTextConfig, SchedulerConfig, SDConfig, UNetConfig, VAEConfig

TINY_VOCAB = 1000  # our tiny CLIP reads ids < 1000; EOS is the last id, as in the real vocab
TINY_EOS = TINY_VOCAB - 1


def clip_text_pair(hidden_act: str = "quick_gelu", seed: int = 0):
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel as HFModel

    ours = CLIPTextConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        eos_token_id=TINY_EOS,
    )
    torch.manual_seed(seed)
    ref = HFModel(
        HFConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act=hidden_act,
            bos_token_id=TINY_EOS - 1,
            eos_token_id=TINY_EOS,
            pad_token_id=TINY_EOS,
        )
    ).eval()
    return ours, ref


def vae_config() -> VAEConfig:
    return VAEConfig(block_out_channels=(32, 64, 64), layers_per_block=2, norm_num_groups=16, sample_size=32)


def vae_pair(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    ref = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=32,
    ).eval()
    return vae_config(), ref


def unet_config(sd2: bool = False, in_channels: int = 4) -> UNetConfig:
    """SD1-style: conv proj_in/out, heads per level. SD2-style: linear proj, fixed head size.
    in_channels=9 is SD's inpainting UNet (latent + mask + masked-image latent)."""
    return UNetConfig(
        in_channels=in_channels,
        out_channels=4,
        sample_size=16,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        cross_attention_dim=32,
        num_heads=None if sd2 else (2, 4, 4),
        head_dim=16 if sd2 else None,
        use_linear_projection=sd2,
        upcast_attention=sd2,
        norm_num_groups=16,
    )


def unet_pair(sd2: bool = False, seed: int = 0, in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    ref = UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        cross_attention_dim=32,
        # diffusers' misnomer: attention_head_dim is the head count per level.
        attention_head_dim=(2, 4, 4),
        use_linear_projection=sd2,
        upcast_attention=sd2,
        norm_num_groups=16,
    ).eval()
    return unet_config(sd2, in_channels), ref


def sd_config(sd2: bool = False, in_channels: int = 4) -> SDConfig:
    """A whole tiny SD whose three parts match the twins above, with the real CLIP vocabulary size
    (so real tokenizer ids fit) and the text width equal to the UNet's context width."""
    text = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        hidden_act="gelu" if sd2 else "quick_gelu",
    )
    return SDConfig(
        text=text,
        vae=vae_config(),
        unet=unet_config(sd2, in_channels),
        scheduler=SchedulerConfig(prediction_type="v_prediction" if sd2 else "epsilon"),
    )


def diffusers_pipeline(tokenizer_folder, sd2: bool = False, seed: int = 0, in_channels: int = 4):
    """A tiny random diffusers StableDiffusionPipeline matching `sd_config(sd2)`.

    tokenizer_folder: a folder with vocab.json + merges.txt for transformers' CLIPTokenizer.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel as HFModel
    from transformers import CLIPTokenizer as HFTokenizer

    _, unet = unet_pair(sd2, seed, in_channels)
    _, vae = vae_pair(seed + 1)
    torch.manual_seed(seed + 2)
    text = HFModel(
        HFConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            hidden_act="gelu" if sd2 else "quick_gelu",
        )
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction" if sd2 else "epsilon",
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=HFTokenizer.from_pretrained(tokenizer_folder),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def clip_vision_config():
    from latentdiff.config import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4
    )


def clip_model_pair(seed: int = 0):
    """(our text config, our vision config, transformers CLIPModel with projection_dim 24)."""
    from transformers import CLIPConfig, CLIPModel

    text, _ = clip_text_pair()
    vision = clip_vision_config()
    torch.manual_seed(seed)
    ref = CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=TINY_EOS - 1,
                eos_token_id=TINY_EOS, pad_token_id=TINY_EOS,
            ),
            vision_config=dict(
                hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                patch_size=4,
            ),
            projection_dim=24,
        )
    ).eval()  # fmt: skip
    return text, vision, ref
