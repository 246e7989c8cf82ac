"""The single-file key table against diffusers' own converters, and its strictness.

Our to_single_file turns the twins' state dicts into the original layout; diffusers' converters
(written independently, from the original side) must turn that back into the very same tensors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentdiff.config import preset
from latentdiff.model import StableDiffusion
from latentdiff.weights import WeightsError
from latentdiff.weights.single_file import (
    detect_text_layout,
    from_single_file,
    infer_config,
    text_key_table,
    to_single_file,
    unet_key_table,
    vae_key_table,
)
from tests.tiny import clip_text_pair, sd_config, unet_pair, vae_pair


def _twins(sd2: bool):
    _, unet = unet_pair(sd2)
    _, vae = vae_pair()
    _, text = clip_text_pair("gelu" if sd2 else "quick_gelu")
    return unet, vae, text


def _config(sd2: bool):
    cfg = sd_config(sd2)
    _, text = clip_text_pair()
    # The twins' text encoder uses the tiny 1000-token vocabulary.
    return dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=text.config.vocab_size))


def _assert_equal_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_diffusers_converters_read_our_single_file_back_to_the_twins(sd2):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    unet, vae, text = _twins(sd2)
    layout = "openclip" if sd2 else "openai"
    single = to_single_file(unet.state_dict(), vae.state_dict(), text.state_dict(), _config(sd2), layout)

    _assert_equal_state(convert_ldm_unet_checkpoint(single, dict(unet.config)), unet.state_dict())
    _assert_equal_state(convert_ldm_vae_checkpoint(single, dict(vae.config)), vae.state_dict())
    if sd2:
        theirs_text = convert_open_clip_checkpoint(text, single)
    else:
        theirs_text = convert_ldm_clip_checkpoint(single)
    # diffusers keeps transformers 4.x's `text_model.` level; transformers 5.x state dicts drop it.
    theirs_text = {k.removeprefix("text_model."): v for k, v in theirs_text.items()}
    _assert_equal_state(theirs_text, text.state_dict())


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_round_trip_is_exact(sd2):
    unet, vae, text = _twins(sd2)
    layout = "openclip" if sd2 else "openai"
    single = to_single_file(unet.state_dict(), vae.state_dict(), text.state_dict(), _config(sd2), layout)
    assert detect_text_layout(single) == layout
    u, v, t = from_single_file(single, _config(sd2))
    _assert_equal_state(u, unet.state_dict())
    _assert_equal_state(v, vae.state_dict())
    _assert_equal_state(t, text.state_dict())


@pytest.mark.parametrize("name", ["sd15", "sd2"])
def test_full_size_tables_have_the_real_key_counts(name):
    """686 UNet and 248 VAE tensors, as in the published SD 1.5 / 2.1 checkpoints; one-to-one."""
    cfg = preset(name)
    layout = "openclip" if name == "sd2" else "openai"
    tables = [unet_key_table(cfg.unet), vae_key_table(cfg.vae), text_key_table(cfg.text, layout)]
    assert [len(t) for t in tables[:2]] == [686, 248]
    for table in tables:
        assert len({r.ours for r in table}) == len(table)
    fused = {r.theirs for r in tables[2] if r.kind}
    assert len({r.theirs for r in tables[2]}) == len(tables[2]) - 2 * len(fused)  # q, k, v share one key


def test_infer_config_recovers_the_architecture():
    for sd2 in (False, True):
        unet, vae, text = _twins(sd2)
        cfg = _config(sd2)
        single = to_single_file(unet.state_dict(), vae.state_dict(), text.state_dict(), cfg,
                                "openclip" if sd2 else "openai")  # fmt: skip
        if sd2:  # real SD 2.x files carry OpenCLIP's last layer, unused; infer_config drops it
            last = {k.replace("resblocks.2.", "resblocks.3."): v for k, v in single.items() if "resblocks.2." in k}
            single.update(last)
        got = infer_config(single)
        # Not in the shapes: GroupNorm group counts, heads (inferred as SD's 8 per level / 64 wide).
        assert got.unet.block_out_channels == cfg.unet.block_out_channels
        assert got.unet.down_block_types == cfg.unet.down_block_types
        assert got.unet.up_block_types == cfg.unet.up_block_types
        assert got.unet.layers_per_block == cfg.unet.layers_per_block
        assert got.unet.cross_attention_dim == cfg.unet.cross_attention_dim
        assert got.unet.use_linear_projection == sd2
        assert got.vae.block_out_channels == cfg.vae.block_out_channels
        assert got.vae.layers_per_block == cfg.vae.layers_per_block
        assert got.vae.latent_channels == cfg.vae.latent_channels
        assert got.text.hidden_size == cfg.text.hidden_size
        assert got.text.num_hidden_layers == cfg.text.num_hidden_layers
        assert got.text.intermediate_size == cfg.text.intermediate_size
        assert got.text.hidden_act == cfg.text.hidden_act
        assert got.scheduler.prediction_type == ("v_prediction" if sd2 else "epsilon")


@pytest.mark.parametrize("name", ["sd15", "sd2"])
def test_infer_config_on_full_size_shapes_gives_the_preset(name):
    cfg = preset(name)
    layout = "openclip" if name == "sd2" else "openai"
    # Shapes are all infer_config reads: meta tensors stand in for a real checkpoint.
    with torch.device("meta"):
        model = StableDiffusion(cfg)
    parts = (model.unet.state_dict(), model.vae.state_dict(), model.text_encoder.state_dict())
    fake = to_single_file(*parts, cfg, layout)
    if name == "sd2":  # the real file's 24th OpenCLIP layer, unused by SD 2.x
        fake.update({k.replace("resblocks.22.", "resblocks.23."): v for k, v in fake.items() if ".resblocks.22." in k})
    got = infer_config(fake)
    assert (got.unet, got.vae, got.text, got.scheduler) == (cfg.unet, cfg.vae, cfg.text, cfg.scheduler)


def test_training_state_is_ignored_and_everything_else_is_strict():
    unet, vae, text = _twins(False)
    cfg = _config(False)
    single = to_single_file(unet.state_dict(), vae.state_dict(), text.state_dict(), cfg)
    extra = {
        "alphas_cumprod": torch.ones(1000),
        "model_ema.decay": torch.tensor(0.9999),
        "first_stage_model.loss.logvar": torch.zeros(()),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
    }
    from_single_file({**single, **extra}, cfg)

    with pytest.raises(WeightsError, match=r"1 unexpected \(model.diffusion_model.extra.weight\)"):
        from_single_file({**single, "model.diffusion_model.extra.weight": torch.zeros(1)}, cfg)
    missing = dict(single)
    del missing["first_stage_model.decoder.up.0.block.2.conv2.weight"]
    with pytest.raises(WeightsError, match=r"1 missing \(first_stage_model.decoder.up.0.block.2.conv2.weight\)"):
        from_single_file(missing, cfg)
    with pytest.raises(WeightsError, match="no text encoder in this file"):
        from_single_file({k: v for k, v in single.items() if not k.startswith("cond_stage_model")}, cfg)


def test_use_ema_takes_the_ema_copies():
    unet, vae, text = _twins(False)
    cfg = _config(False)
    single = to_single_file(unet.state_dict(), vae.state_dict(), text.state_dict(), cfg)
    ema = {
        "model_ema." + k.removeprefix("model.").replace(".", ""): v + 1
        for k, v in single.items()
        if k.startswith("model.diffusion_model.")
    }
    plain, _, _ = from_single_file({**single, **ema}, cfg)
    averaged, _, _ = from_single_file({**single, **ema}, cfg, use_ema=True)
    assert torch.equal(plain["conv_in.weight"], unet.state_dict()["conv_in.weight"])
    assert torch.equal(averaged["conv_in.weight"], unet.state_dict()["conv_in.weight"] + 1)
    with pytest.raises(WeightsError, match="use_ema: .* EMA weights missing"):
        from_single_file(single, cfg, use_ema=True)


def test_older_sd1_files_without_text_model_level_load():
    unet, vae, text = _twins(False)
    cfg = _config(False)
    single = to_single_file(unet.state_dict(), vae.state_dict(), text.state_dict(), cfg)
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
           for k, v in single.items()}  # fmt: skip
    _, _, t = from_single_file(old, cfg)
    _assert_equal_state(t, text.state_dict())
