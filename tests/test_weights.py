"""Weights I/O: diffusers folders both ways, single files both ways, and every refusal.

Round trips compare outputs, not only tensors: the same prompt through both text encoders, the
same latent through both UNets and VAEs.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from latentdiff import weights
from latentdiff.config import preset
from latentdiff.model import StableDiffusion
from latentdiff.tokenizer import CLIPTokenizer
from latentdiff.weights import WeightsError
from latentdiff.weights.io import current_umask, load_into, read_state_dict, write_state_dict
from tests.compare import assert_same_outputs
from tests.tiny import diffusers_pipeline, sd_config


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    CLIPTokenizer.default().save(folder)
    return folder


def _heads_per_level(config):
    """diffusers configs list heads per level; ours may say head_dim instead: compare the heads."""
    unet = config.unet
    heads = tuple(unet.heads(i) for i in range(len(unet.block_out_channels)))
    return dataclasses.replace(config, unet=dataclasses.replace(unet, num_heads=heads, head_dim=None))


def _tiny_model(sd2: bool = False, seed: int = 0) -> StableDiffusion:
    torch.manual_seed(seed)
    return StableDiffusion(sd_config(sd2)).eval()


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_diffusers_saved_pipeline_loads_into_ours(tmp_path, tokenizer_folder, sd2):
    pipe = diffusers_pipeline(tokenizer_folder, sd2)
    pipe.save_pretrained(tmp_path / "pipe")
    ours = weights.load(tmp_path / "pipe")
    assert ours.config == _heads_per_level(sd_config(sd2))
    assert_same_outputs(ours, pipe)


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_ours_saved_as_diffusers_loads_into_diffusers(tmp_path, sd2):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    ours = _tiny_model(sd2)
    weights.save(ours, tmp_path / "ours")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "ours")
    assert_same_outputs(ours, pipe)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.prediction_type == ours.config.scheduler.prediction_type
    # ... and it reads back into ours bit for bit, config included.
    again = weights.load(tmp_path / "ours")
    assert again.config == _heads_per_level(ours.config)
    for a, b in zip(again.state_dict().values(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_half_precision_sharded_folder_loads_in_diffusers_and_ours(tmp_path):
    """How the built-in model ships: float16 weights in files of at most max_shard_bytes."""
    from diffusers import StableDiffusionPipeline

    ours = _tiny_model()
    weights.save(ours, tmp_path / "half", dtype=torch.float16, max_shard_bytes=64 * 1024)
    shards = sorted((tmp_path / "half" / "unet").glob("diffusion_pytorch_model-*-of-*.safetensors"))
    index = json.loads((tmp_path / "half" / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == [p.name for p in shards]
    for shard in shards:  # within the limit, unless one tensor alone is larger (tensors are never split)
        tensors = read_state_dict(shard)[0]
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        assert size <= 64 * 1024 or len(tensors) == 1, shard.name
    again = weights.load(tmp_path / "half")
    for (key, a), b in zip(again.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b.half().float()), key  # float16 storage, float32 compute
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "half")
    assert_same_outputs(again, pipe.to(torch.float32))
    (tmp_path / "half" / "README.md").write_text("model card")
    weights.save(ours, tmp_path / "half")  # saving over a folder keeps its model card
    assert (tmp_path / "half" / "README.md").read_text() == "model card"
    with pytest.raises(WeightsError, match="dtype: options of the diffusers layout"):
        weights.save(ours, tmp_path / "x.safetensors", format="single_file", dtype=torch.float16)


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
def test_single_file_round_trip_is_identical(tmp_path, sd2):
    ours = _tiny_model(sd2, seed=3)
    path = tmp_path / "model.safetensors"
    weights.save(ours, path, format="single_file")
    sd, metadata = read_state_dict(path)
    assert any(k.startswith("model.diffusion_model.") for k in sd)
    assert any(k.startswith("cond_stage_model.model." if sd2 else "cond_stage_model.transformer.") for k in sd)
    assert "latentdiff_config" in metadata
    again = weights.load(path)
    assert again.config == ours.config
    assert again.state_dict().keys() == ours.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_diffusers_folder_converts_to_single_file_and_back(tmp_path, tokenizer_folder):
    """The CLI's convert path: diffusers folder -> single file (config inferred) -> same outputs."""
    pipe = diffusers_pipeline(tokenizer_folder)
    pipe.save_pretrained(tmp_path / "pipe")
    model = weights.load(tmp_path / "pipe")
    weights.save(model, tmp_path / "one.safetensors", format="single_file")
    assert_same_outputs(weights.load(tmp_path / "one.safetensors"), pipe)


# --- refusals -----------------------------------------------------------------------------------


def _vae_sd():
    return _tiny_model().vae.state_dict()


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda sd: sd.pop("decoder.conv_out.bias"), r"1 missing \(decoder.conv_out.bias\)"),
        (lambda sd: sd.__setitem__("decoder.extra.weight", torch.zeros(1)), r"1 unexpected \(decoder.extra.weight\)"),
        (
            lambda sd: sd.__setitem__("quant_conv.weight", torch.zeros(8, 8, 3, 3)),
            r"1 wrong shape \(quant_conv.weight: model \(8, 8, 1, 1\), file \(8, 8, 3, 3\)\)",
        ),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_strict_load_names_the_offending_key(edit, expected):
    sd = _vae_sd()
    edit(sd)
    with pytest.raises(WeightsError, match=r"^vae.safetensors: weights do not fit the model: " + expected):
        load_into(_tiny_model().vae, sd, "vae.safetensors")


def test_fp16_and_bf16_weights_load_into_fp32(tmp_path):
    model = _tiny_model()
    for dtype in (torch.float16, torch.bfloat16):
        sd = {k: v.to(dtype) for k, v in model.vae.state_dict().items()}
        target = _tiny_model(seed=9).vae
        load_into(target, sd, "half")
        assert all(p.dtype == torch.float32 for p in target.parameters())
        torch.testing.assert_close(
            target.state_dict()["decoder.conv_out.weight"], sd["decoder.conv_out.weight"].float()
        )


def test_truncated_safetensors_is_refused_with_its_name(tmp_path):
    path = tmp_path / "model.safetensors"
    weights.save(_tiny_model(), path, format="single_file")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"model.safetensors: corrupt or truncated safetensors file"):
        weights.load(path)


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights")
    with pytest.raises(WeightsError, match=r"notes.safetensors: neither a safetensors file nor a PyTorch checkpoint"):
        weights.load(path)
    with pytest.raises(WeightsError, match=r"nowhere: no such file or folder"):
        weights.load(tmp_path / "nowhere")


def test_pickle_needs_the_flag_and_then_loads_weights_only(tmp_path):
    ours = _tiny_model()
    single = tmp_path / "model.safetensors"
    weights.save(ours, single, format="single_file")
    sd, _ = read_state_dict(single)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd, "global_step": 1}, ckpt)
    with pytest.raises(WeightsError, match=r"model.ckpt: is a pickled PyTorch checkpoint.*--allow-pickle"):
        weights.load(ckpt)
    loaded = weights.load(ckpt, allow_pickle=True)  # config inferred from shapes: no metadata in a pickle
    for key, value in ours.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[key], value)

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError, match=r"evil.ckpt: cannot load as a checkpoint"):
        weights.load(tmp_path / "evil.ckpt", allow_pickle=True)


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    write_state_dict({"a": torch.ones(2)}, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not the temp file's private 0600
    monkeypatch.setattr("latentdiff.weights.io.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        write_state_dict({"a": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_failed_folder_save_leaves_the_old_folder_whole(tmp_path, monkeypatch):
    ours = _tiny_model()
    weights.save(ours, tmp_path / "m")
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "m").rglob("*"))
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~current_umask()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("latentdiff.weights.io.save_file", crash)
    with pytest.raises(OSError):
        weights.save(_tiny_model(seed=5), tmp_path / "m")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "m").rglob("*")) == files
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    again = weights.load(tmp_path / "m")
    assert torch.equal(again.unet.conv_in.weight, ours.unet.conv_in.weight)


def test_config_weights_mismatch_names_the_folder(tmp_path):
    ours = _tiny_model()
    weights.save(ours, tmp_path / "m")
    cfg_path = tmp_path / "m" / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["block_out_channels"] = [32, 64, 128]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"m/unet: weights do not fit the model: .*wrong shape"):
        weights.load(tmp_path / "m")


def test_unsupported_pipeline_is_refused(tmp_path):
    weights.save(_tiny_model(), tmp_path / "m")
    index = tmp_path / "m" / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(WeightsError, match=r"'StableDiffusionXLPipeline' is not an SD 1.x/2.x pipeline"):
        weights.load(tmp_path / "m")


def test_presets_build_matching_parts():
    assert StableDiffusion.from_preset("tiny").config == preset("tiny")
