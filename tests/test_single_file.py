"""The single-file key table against diffusers' own converters, and its strictness.

to_single_file turns the diffusers/transformers twins' state dicts into the original layout;
diffusers' converters, written independently from the original side, must turn that back into
the very same tensors. Full-size tables are checked the same way on meta tensors (shapes only).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from latentdiff.config import SDConfig, preset
from latentdiff.weights.errors import WeightsError
from latentdiff.weights.single_file import (
    TRAINING_STATE,
    detect_text_layout,
    from_single_file,
    infer_config,
    text_key_table,
    to_single_file,
    unet_key_table,
    vae_key_table,
)
from tests.tiny import clip_text_pair, sd_config, unet_pair, vae_pair

OPENCLIP = "cond_stage_model.model."


def _layout(sd2: bool) -> str:
    return "openclip" if sd2 else "openai"


@functools.cache
def _twins(sd2: bool):
    """(unet, vae, text) reference models; the text encoder uses GELU like OpenCLIP for SD 2."""
    _, unet = unet_pair(sd2)
    _, vae = vae_pair()
    _, text = clip_text_pair("gelu" if sd2 else "quick_gelu")
    return unet, vae, text


def _config(sd2: bool) -> SDConfig:
    cfg = sd_config(sd2)
    text = _twins(sd2)[2].config  # the twin's tiny 1000-token vocabulary
    text_cfg = dataclasses.replace(cfg.text, vocab_size=text.vocab_size, eos_token_id=text.eos_token_id)
    return dataclasses.replace(cfg, text=text_cfg)


def _states(sd2: bool) -> tuple[dict, dict, dict]:
    return tuple(model.state_dict() for model in _twins(sd2))


def _single(sd2: bool) -> dict[str, torch.Tensor]:
    return to_single_file(*_states(sd2), _config(sd2), _layout(sd2))


def _with_openclip_extras(single: dict, n_layers: int) -> dict:
    """What a real SD 2.x file holds beyond the 23 used layers: the 24th resblock (here a copy of
    the last used one), the text projection and the contrastive temperature."""
    last = f"{OPENCLIP}transformer.resblocks.{n_layers - 1}."
    extra = {k.replace(last, f"{OPENCLIP}transformer.resblocks.{n_layers}."): v for k, v in single.items()
             if k.startswith(last)}  # fmt: skip
    width = single[OPENCLIP + "token_embedding.weight"].shape[1]
    extra[OPENCLIP + "text_projection"] = torch.zeros(width, width, device=single[last + "ln_1.weight"].device)
    extra[OPENCLIP + "logit_scale"] = torch.zeros((), device=single[last + "ln_1.weight"].device)
    return {**single, **extra}


def _assert_equal_state(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def _assert_same_shapes(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}


def _diffusers_convert(single: dict, unet, vae, text, sd2: bool) -> tuple[dict, dict, dict]:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    theirs_text = convert_open_clip_checkpoint(text, single) if sd2 else convert_ldm_clip_checkpoint(single)
    # diffusers keeps transformers 4.x's `text_model.` level; transformers 5.x state dicts drop it.
    theirs_text = {k.removeprefix("text_model."): v for k, v in theirs_text.items()}
    theirs_text.pop("embeddings.position_ids", None)  # a buffer, not a weight (real SD 1 files have it)
    theirs_unet = convert_ldm_unet_checkpoint(single, dict(unet.config))
    return theirs_unet, convert_ldm_vae_checkpoint(single, dict(vae.config)), theirs_text


# --- against the reference converters ----------------------------------------------------------------


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_diffusers_converters_read_our_single_file_back_to_the_twins(sd2):
    unet, vae, text = _twins(sd2)
    converted = _diffusers_convert(_single(sd2), unet, vae, text, sd2)
    for got, want in zip(converted, _states(sd2), strict=True):
        _assert_equal_state(got, want)


def test_our_ema_key_spelling_is_diffusers_extract_ema():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    single = _single(False)
    ema = {"model_ema." + k.removeprefix("model.").replace(".", ""): v + 1 for k, v in single.items()
           if k.startswith("model.diffusion_model.")}  # fmt: skip
    with_ema = {**single, **ema, "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7)}
    theirs = convert_ldm_unet_checkpoint(with_ema, dict(_twins(False)[0].config), extract_ema=True)
    ours, _, _ = from_single_file(with_ema, _config(False), use_ema=True)
    _assert_equal_state(ours, theirs)
    assert torch.equal(ours["conv_in.weight"], _states(False)[0]["conv_in.weight"] + 1)
    plain, _, _ = from_single_file(with_ema, _config(False))
    _assert_equal_state(plain, _states(False)[0])


@pytest.mark.parametrize("name", ["sd15", "sd2"])
def test_full_size_tables_against_diffusers_on_meta_tensors(name):
    """SD 1.5 / 2.1 at full size: the real files' key counts, diffusers' converters agree on every
    key and shape, infer_config gives the preset back and from_single_file reads it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from latentdiff.weights.diffusers_config import text_to_transformers, unet_to_diffusers, vae_to_diffusers

    cfg, sd2 = preset(name), name == "sd2"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_to_diffusers(cfg.unet))
        vae = AutoencoderKL.from_config(vae_to_diffusers(cfg.vae))
        text = CLIPTextModel(CLIPTextConfig(**text_to_transformers(cfg.text)))
    states = unet.state_dict(), vae.state_dict(), text.state_dict()
    single = to_single_file(*states, cfg, _layout(sd2))
    counts = [sum(k.startswith(p) for k in single) for p in ("model.", "first_stage_model.", "cond_stage_model.")]
    # SD 1: 197 text tensors in the real file, with position_ids. SD 2: 294, with the unused 24th layer (12),
    # text_projection and logit_scale. diffusers' SD 2 converter skips the 24th layer by its index, 23.
    assert counts == [686, 248, 280 if sd2 else 196]
    if sd2:
        single = _with_openclip_extras(single, cfg.text.num_hidden_layers)
    for got, want in zip(_diffusers_convert(single, unet, vae, text, sd2), states, strict=True):
        _assert_same_shapes(got, want)

    got = infer_config(single)
    # SD 2.x presets name heads per level (5, 10, 20, 20); inferred, they are 64 wide: the same heads.
    assert [got.unet.heads(level) for level in range(4)] == [cfg.unet.heads(level) for level in range(4)]
    unet_cfg = dataclasses.replace(cfg.unet, num_heads=got.unet.num_heads, head_dim=got.unet.head_dim)
    assert got == dataclasses.replace(cfg, unet=unet_cfg)
    for part, want in zip(from_single_file(single, got), states, strict=True):
        _assert_same_shapes(part, want)


# --- our own round trip and config inference -------------------------------------------------------


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_round_trip_is_exact(sd2):
    single = _single(sd2)
    assert detect_text_layout(single) == _layout(sd2)
    for got, want in zip(from_single_file(single, _config(sd2)), _states(sd2), strict=True):
        _assert_equal_state(got, want)
    for got, want in zip(from_single_file(single, _config(sd2), text_layout=_layout(sd2)), _states(sd2), strict=True):
        _assert_equal_state(got, want)


def test_older_sd1_files_without_text_model_level_load():
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
           for k, v in _single(False).items()}  # fmt: skip
    old["cond_stage_model.transformer.embeddings.position_ids"] = torch.arange(77)[None]
    assert detect_text_layout(old) == "openai"
    _, _, text = from_single_file(old, _config(False))
    _assert_equal_state(text, _states(False)[2])
    assert infer_config(old).text.num_hidden_layers == 3


def test_openclip_unused_last_layer_is_skipped_only_at_its_own_index():
    cfg = _config(True)
    real = _with_openclip_extras(_single(True), n_layers=3)
    _, _, text = from_single_file(real, cfg)
    _assert_equal_state(text, _states(True)[2])
    # One layer further on is not "the unused last layer" of this config: the file does not fit.
    stray = {k.replace("resblocks.3.", "resblocks.4."): v for k, v in real.items()}
    with pytest.raises(WeightsError, match=r"unexpected: .*resblocks\.4\.attn\.in_proj_bias"):
        from_single_file(stray, cfg)


def _except_uninferable(cfg: SDConfig, got: SDConfig) -> SDConfig:
    """`cfg` with the fields no shape tells taken from `got`: GroupNorm groups (tiny uses 16, SD 32),
    sample sizes, head counts (SD's 8 per level / 64 wide) and CLIP's EOS id."""
    return dataclasses.replace(
        cfg,
        unet=dataclasses.replace(cfg.unet, norm_num_groups=got.unet.norm_num_groups, sample_size=got.unet.sample_size,
                                 num_heads=got.unet.num_heads, head_dim=got.unet.head_dim),
        vae=dataclasses.replace(cfg.vae, norm_num_groups=got.vae.norm_num_groups, sample_size=got.vae.sample_size),
        text=dataclasses.replace(cfg.text, num_attention_heads=got.text.num_attention_heads,
                                 eos_token_id=got.text.eos_token_id),
    )  # fmt: skip


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_infer_config_recovers_the_tiny_architecture(sd2):
    cfg = _config(sd2)
    files = [_single(sd2)] + ([_with_openclip_extras(_single(sd2), 3)] if sd2 else [])
    for single in files:  # SD 2: as we write it (3 used layers) and as Stability does (+ the unused one)
        got = infer_config(single)
        assert got == _except_uninferable(cfg, got)
        assert got.unet.num_heads == (None if sd2 else (8, 8, 8))
        assert got.scheduler.prediction_type == ("v_prediction" if sd2 else "epsilon")
        for part, want in zip(from_single_file(single, got), _states(sd2), strict=True):
            _assert_equal_state(part, want)


# --- strictness --------------------------------------------------------------------------------------


def test_training_state_is_skipped():
    single = _single(False)
    extra = {name: torch.zeros(3) for name in TRAINING_STATE}
    extra |= {
        "first_stage_model.loss.discriminator.main.0.weight": torch.zeros(2),
        "cond_stage_model.model.visual.proj": torch.zeros(2),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
        "model_ema.diffusion_modelinput_blocks00weight": torch.zeros(1),  # an EMA copy: read with use_ema
    }
    for got, want in zip(from_single_file({**single, **extra}, _config(False)), _states(False), strict=True):
        _assert_equal_state(got, want)


def test_missing_unexpected_and_misshaped_keys_are_named():
    cfg, single = _config(False), _single(False)
    gone = "first_stage_model.decoder.up.0.block.2.conv2.weight"
    with pytest.raises(WeightsError, match=rf"1 missing: {gone}$"):
        from_single_file({k: v for k, v in single.items() if k != gone}, cfg)
    for extra in ("model.diffusion_model.extra.weight", "model_ema.not_a_copy", "cond_stage_model.model.x"):
        with pytest.raises(WeightsError, match=rf"1 unexpected: {extra}"):
            from_single_file({**single, extra: torch.zeros(1)}, cfg, text_layout="openai")
    key = "model.diffusion_model.out.2.weight"
    with pytest.raises(WeightsError, match=rf"1 wrong shape: {key} \(4, 32, 3, 1\), expected \(4, 32, 3, 3\)"):
        from_single_file({**single, key: single[key][..., :1]}, cfg)
    many = {k: v for k, v in single.items() if not k.startswith("first_stage_model.encoder.")}
    with pytest.raises(WeightsError, match=r"\d+ missing: .*, \.\.\. and \d+ more"):
        from_single_file(many, cfg)


def test_to_single_file_is_strict_too():
    unet, vae, text = _states(False)
    with pytest.raises(WeightsError, match=r"our vae state dict .* 1 missing: quant_conv.bias"):
        to_single_file(unet, {k: v for k, v in vae.items() if k != "quant_conv.bias"}, text, _config(False), "openai")
    with pytest.raises(WeightsError, match=r"our text state dict .* 1 unexpected: text_model.extra"):
        to_single_file(unet, vae, {**text, "text_model.extra": torch.zeros(1)}, _config(False), "openai")
    with pytest.raises(WeightsError, match="unknown text layout 'clip'"):
        to_single_file(unet, vae, text, _config(False), "clip")


def test_use_ema_needs_every_ema_copy_and_needs_no_raw_weights():
    single = _single(False)
    ema = {"model_ema." + k.removeprefix("model.").replace(".", ""): v for k, v in single.items()
           if k.startswith("model.diffusion_model.")}  # fmt: skip
    partial = {k: v for k, v in ema.items() if k != "model_ema.diffusion_modelout2bias"}
    with pytest.raises(WeightsError, match=r"1 missing: model_ema\.diffusion_modelout2bias$"):
        from_single_file({**single, **partial}, _config(False), use_ema=True)
    ema_only = {k: v for k, v in single.items() if not k.startswith("model.diffusion_model.")} | ema
    unet, _, _ = from_single_file(ema_only, _config(False), use_ema=True)
    _assert_equal_state(unet, _states(False)[0])


def test_detect_text_layout():
    single = _single(False)
    assert detect_text_layout(single) == "openai"
    assert detect_text_layout(_single(True)) == "openclip"
    with pytest.raises(WeightsError, match="no text encoder"):
        detect_text_layout({k: v for k, v in single.items() if not k.startswith("cond_stage_model.")})
    with pytest.raises(WeightsError, match="both OpenAI CLIP and OpenCLIP"):
        detect_text_layout({**single, **_single(True)})


@pytest.mark.parametrize("name", ["sd15", "sd2", "tiny"])
def test_tables_are_one_to_one(name):
    """Every key named once on each side, except OpenCLIP's fused in_proj: its thirds, in q, k, v order."""
    cfg = preset(name)
    for layout in ("openai", "openclip"):
        for table in (unet_key_table(cfg.unet), vae_key_table(cfg.vae), text_key_table(cfg.text, layout)):
            ours = [o for o, _ in table]
            assert len(set(ours)) == len(ours)
            by_theirs: dict[str, list[str]] = {}
            for o, t in table:
                by_theirs.setdefault(t, []).append(o)
            for t, group in by_theirs.items():
                if len(group) > 1:
                    assert t.endswith(("in_proj_weight", "in_proj_bias")), t
                    assert [g.split(".")[-2] for g in group] == ["q_proj", "k_proj", "v_proj"]
