"""The diffusers folder layout: model_index.json plus one subfolder per component.

```
model_index.json
unet/config.json          unet/diffusion_pytorch_model.safetensors
vae/config.json           vae/diffusion_pytorch_model.safetensors
text_encoder/config.json  text_encoder/model.safetensors
tokenizer/vocab.json      tokenizer/merges.txt   (+ special_tokens_map.json)
scheduler/scheduler_config.json
```
Weights may also come as fp16 variants (`*.fp16.safetensors`), sharded (`*.safetensors.index.json`)
or as pickles (`*.bin`, only with allow_pickle).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import ConfigError, SDConfig
from ..model import StableDiffusion
from ..tokenizer import CLIPTokenizer
from . import diffusers_config as dc
from .errors import WeightsError
from .io import current_umask, load_into, read_state_dict, write_json, write_state_dict

# The pipelines whose folders hold an SD 1.x/2.x model (the inpaint one has a 9-channel UNet).
_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")
_WEIGHT_NAMES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing (is this a diffusers Stable Diffusion folder?)") from None
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from None


def _component_weights(folder: Path, name: str, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Read one component's state dict, whichever of the usual file arrangements it uses."""
    base = _WEIGHT_NAMES[folder.name]
    for candidate in (f"{base}.safetensors", f"{base}.fp16.safetensors"):
        if (folder / candidate).exists():
            return read_state_dict(folder / candidate)[0]
    for index in (f"{base}.safetensors.index.json", f"{base}.fp16.safetensors.index.json"):
        if (folder / index).exists():
            shards = sorted(set(_read_json(folder / index)["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(read_state_dict(folder / shard)[0])
            return sd
    for candidate in (f"{base}.bin", f"{base}.fp16.bin"):
        if (folder / candidate).exists():
            return read_state_dict(folder / candidate, allow_pickle=allow_pickle)[0]
    raise WeightsError(f"{folder}: no {base}.safetensors (or .fp16 / sharded / .bin variant) for the {name}")


def read_config(folder: str | Path) -> SDConfig:
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    pipeline = index.get("_class_name", "")
    if pipeline not in _PIPELINES:
        raise WeightsError(f"{folder / 'model_index.json'}: {pipeline!r} is not an SD 1.x/2.x pipeline")
    try:
        return SDConfig(
            text=dc.text_from_transformers(_read_json(folder / "text_encoder" / "config.json")),
            vae=dc.vae_from_diffusers(_read_json(folder / "vae" / "config.json")),
            unet=dc.unet_from_diffusers(_read_json(folder / "unet" / "config.json")),
            scheduler=dc.scheduler_from_diffusers(_read_json(folder / "scheduler" / "scheduler_config.json")),
        )
    except (ConfigError, KeyError, TypeError) as e:
        raise WeightsError(f"{folder}: {e}") from None


def load_diffusers(folder: str | Path, allow_pickle: bool = False) -> StableDiffusion:
    folder = Path(folder)
    config = read_config(folder)
    tokenizer = CLIPTokenizer.from_folder(folder / "tokenizer") if (folder / "tokenizer").is_dir() else None
    model = StableDiffusion(config, tokenizer)
    for name in ("unet", "vae", "text_encoder"):
        sd = _component_weights(folder / name, name, allow_pickle)
        load_into(getattr(model, name), sd, str(folder / name))
    return model.eval()


def save_diffusers(model: StableDiffusion, folder: str | Path, dtype: torch.dtype | None = None,
                   max_shard_bytes: int | None = None) -> None:  # fmt: skip
    """Write the folder complete or not at all: built beside the target, then moved into place.

    dtype: store the floating-point weights as this (torch.float16 halves the size); None keeps them.
    max_shard_bytes: split a component's weights into files of at most this size, with the
    `*.safetensors.index.json` map diffusers and transformers read.
    """
    folder = Path(folder)
    if folder.exists() and not (folder / "model_index.json").exists() and any(folder.iterdir()):
        raise WeightsError(f"{folder}: exists and is not a diffusers folder; refusing to overwrite it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700, made what mkdir() gives
    try:
        _write_folder(model, tmp, dtype, max_shard_bytes)
        if (folder / "README.md").exists():  # the model card is its author's: carried over, not lost
            shutil.copy2(folder / "README.md", tmp / "README.md")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_folder(model: StableDiffusion, out: Path, dtype: torch.dtype | None, max_shard_bytes: int | None) -> None:
    c = model.config
    write_json(
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.42.1",
            "feature_extractor": [None, None],
            "safety_checker": [None, None],
            "requires_safety_checker": False,
            "image_encoder": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        out / "model_index.json",
    )
    write_json(dc.unet_to_diffusers(c.unet), out / "unet" / "config.json")
    write_json(dc.vae_to_diffusers(c.vae), out / "vae" / "config.json")
    write_json(dc.text_to_transformers(c.text), out / "text_encoder" / "config.json")
    write_json(dc.scheduler_to_diffusers(c.scheduler), out / "scheduler" / "scheduler_config.json")
    model.tokenizer.save(out / "tokenizer")
    # With the `text_model.` prefix, as SD checkpoints on disk have it: transformers 4.x needs it, 5.x accepts it.
    text = {f"text_model.{k}": v for k, v in model.text_encoder.state_dict().items()}
    for name, sd in (("unet", model.unet.state_dict()), ("vae", model.vae.state_dict()), ("text_encoder", text)):
        if dtype is not None:
            sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        _write_weights(sd, out / name, _WEIGHT_NAMES[name], max_shard_bytes)


def _write_weights(sd: dict[str, torch.Tensor], folder: Path, base: str, max_shard_bytes: int | None) -> None:
    """<base>.safetensors, or <base>-0000i-of-0000n.safetensors + <base>.safetensors.index.json."""
    meta = {"format": "pt"}
    sizes = {k: v.numel() * v.element_size() for k, v in sd.items()}
    if max_shard_bytes is None or sum(sizes.values()) <= max_shard_bytes:
        write_state_dict(sd, folder / f"{base}.safetensors", meta)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    for key, value in sd.items():  # in order, a new shard whenever the next tensor would overflow
        if shards[-1] and sum(sizes[k] for k in shards[-1]) + sizes[key] > max_shard_bytes:
            shards.append({})
        shards[-1][key] = value
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"{base}-{i:05d}-of-{len(shards):05d}.safetensors"
        write_state_dict(shard, folder / name, meta)
        weight_map |= dict.fromkeys(shard, name)
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
    write_json(index, folder / f"{base}.safetensors.index.json")
