"""Loading a whole CLIP, and keeping one inside a diffusers folder.

A diffusers folder's text tower is `text_encoder/`; the rest of its CLIP goes to `image_encoder/`.

The UNet only needs CLIP's text tower, but the model's own CLIP also scores its images (the emoji
bar, `latentdiff score`, zero-shot classification). Writing a second full CLIPModel would store the
text tower twice, so the image side goes into diffusers' standard optional component:

```
image_encoder/config.json        CLIPVisionModelWithProjection (transformers reads it as is)
image_encoder/model.safetensors  vision_model.*, visual_projection.weight
image_encoder/clip_head.safetensors  text_projection.weight, logit_scale (ours; transformers ignores it)
image_encoder/preprocessor_config.json  input size and normalisation (our CLIPs read pixels in [-1, 1])
image_encoder/clip_text.safetensors  only where the CLIP's text tower differs from text_encoder/ (ours)
```
The last file is there when the UNet's text tower trained on after the CLIP did (`train unet` with
`train_text`): it holds the CLIP's own text tensors that differ, its layers, so the CLIP still scores
with the tower it was trained with while the UNet reads the one it was trained with.
`open_clip_source` also reads a transformers CLIPModel folder (e.g. openai/clip-vit-base-patch32) and
a `latentdiff train clip` run folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..clip import CLIPModel
from ..config import CLIPVisionConfig
from ..tokenizer import CLIPTokenizer
from . import diffusers_config as dc
from .diffusers_folder import _component_weights, _read_json, read_config
from .errors import WeightsError
from .io import load_into, read_state_dict, write_json, write_state_dict

_HEAD_KEYS = ("text_projection.weight", "logit_scale")
_OWN_TEXT = "clip_text.safetensors"


def _folder_text_tower(folder: Path) -> dict[str, torch.Tensor]:
    """text_encoder/'s weights under the CLIPModel's keys (text_model.*)."""
    text_sd = _component_weights(folder / "text_encoder", "text_encoder", allow_pickle=False)
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text_sd.items()}


def has_clip(folder: str | Path) -> bool:
    return (Path(folder) / "image_encoder" / "clip_head.safetensors").is_file()


def save_clip(clip: CLIPModel, folder: str | Path, dtype: torch.dtype | None = None) -> None:
    """Add `clip`'s image side to the diffusers folder whose text_encoder/ holds its text tower."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    vision: CLIPVisionConfig = clip.vision_model.config
    config = {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        **dataclasses.asdict(vision),
        "projection_dim": clip.visual_projection.out_features,
        "torch_dtype": "float32",
    }
    sd = clip.state_dict()
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    out = folder / "image_encoder"
    image_side = {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}
    write_state_dict(image_side, out / "model.safetensors", {"format": "pt"})
    write_state_dict({k: sd[k] for k in _HEAD_KEYS}, out / "clip_head.safetensors", {"format": "pt"})
    write_json(config, out / "config.json")
    folder_text = _folder_text_tower(folder)
    own_text = {
        k: v
        for k, v in sd.items()
        if k.startswith("text_model.") and k in folder_text and not torch.equal(v, folder_text[k].to(v.dtype))
    }
    if own_text:
        write_state_dict(own_text, out / _OWN_TEXT, {"format": "pt"})
    else:
        (out / _OWN_TEXT).unlink(missing_ok=True)
    # [-1, 1] pixels, in the terms CLIPImageProcessor uses: (x - 0.5) / 0.5
    preprocess = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "do_center_crop": True,
                  "size": {"shortest_edge": vision.image_size},
                  "crop_size": {"height": vision.image_size, "width": vision.image_size},
                  "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}  # fmt: skip
    write_json(preprocess, out / "preprocessor_config.json")
    index["image_encoder"] = ["transformers", "CLIPVisionModelWithProjection"]
    write_json(index, folder / "model_index.json")


def load_clip(folder: str | Path) -> CLIPModel:
    """The whole CLIP of a diffusers folder written with save_clip, in float32."""
    folder = Path(folder)
    if not has_clip(folder):
        raise WeightsError(f"{folder}: holds no CLIP image side (image_encoder/clip_head.safetensors)")
    text = read_config(folder).text
    cfg = _read_json(folder / "image_encoder" / "config.json")
    vision = CLIPVisionConfig(**{k: cfg[k] for k in CLIPVisionConfig.__dataclass_fields__ if k in cfg})
    clip = CLIPModel(text, vision, cfg["projection_dim"])
    sd = read_state_dict(folder / "image_encoder" / "model.safetensors")[0]
    sd |= read_state_dict(folder / "image_encoder" / "clip_head.safetensors")[0]
    sd |= _folder_text_tower(folder)
    if (folder / "image_encoder" / _OWN_TEXT).is_file():
        sd |= read_state_dict(folder / "image_encoder" / _OWN_TEXT)[0]
    load_into(clip, sd, str(folder))
    return clip.eval()


@dataclasses.dataclass(frozen=True)
class ImageNorm:
    """How a CLIP wants its pixels: a square of `size`, then (x - mean) / std per channel, x in [0, 1]."""

    size: int
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def from_file(cls, path: Path, size: int) -> ImageNorm:
        if not path.is_file():
            return cls(size)
        cfg = _read_json(path)
        crop = cfg.get("crop_size", size)
        side = crop.get("height", size) if isinstance(crop, dict) else int(crop)
        return cls(side, tuple(cfg.get("image_mean", cls.mean)), tuple(cfg.get("image_std", cls.std)))


@dataclasses.dataclass
class LoadedCLIP:
    model: CLIPModel
    tokenizer: CLIPTokenizer
    norm: ImageNorm


def _transformers_clip(folder: Path, allow_pickle: bool) -> LoadedCLIP:
    cfg = _read_json(folder / "config.json")
    text_cfg, vision_cfg = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    text = dc.text_from_transformers({**text_cfg, "architectures": ["CLIPTextModel"]})
    vision = CLIPVisionConfig(**{k: vision_cfg[k] for k in CLIPVisionConfig.__dataclass_fields__ if k in vision_cfg})
    clip = CLIPModel(text, vision, cfg.get("projection_dim", 512))
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            load_into(clip, read_state_dict(folder / name, allow_pickle=allow_pickle)[0], str(folder / name))
            break
    else:
        raise WeightsError(f"{folder}: no model.safetensors (or pytorch_model.bin) beside config.json")
    tokenizer = CLIPTokenizer.from_folder(folder) if (folder / "vocab.json").is_file() else CLIPTokenizer.default()
    return LoadedCLIP(
        clip.eval(), tokenizer, ImageNorm.from_file(folder / "preprocessor_config.json", vision.image_size)
    )


def open_clip_source(path: str | Path, allow_pickle: bool = False) -> LoadedCLIP:
    """A CLIP with its tokenizer and pixel normalisation, from any of the three kinds of folder."""
    folder = Path(path)
    if (folder / "model_index.json").is_file():
        clip = load_clip(folder)
        tokenizer = CLIPTokenizer.from_folder(folder / "tokenizer") if (folder / "tokenizer").is_dir() else None
        norm = ImageNorm.from_file(
            folder / "image_encoder" / "preprocessor_config.json", clip.vision_model.config.image_size
        )
        return LoadedCLIP(clip, tokenizer or CLIPTokenizer.default(), norm)
    if (folder / "config.json").is_file():
        cfg = _read_json(folder / "config.json")
        if "CLIPModel" not in (cfg.get("architectures") or []) and cfg.get("model_type") != "clip":
            raise WeightsError(
                f"{folder / 'config.json'}: not a CLIPModel config (architectures {cfg.get('architectures')})"
            )
        return _transformers_clip(folder, allow_pickle)
    if (folder / "last.txt").is_file():
        from ..train.unet import trained_clip

        clip = trained_clip(str(folder), "raw")
        return LoadedCLIP(clip, CLIPTokenizer.default(), ImageNorm(clip.vision_model.config.image_size))
    raise WeightsError(f"{folder}: not a CLIP (want a diffusers folder with image_encoder/, a transformers CLIPModel "
                       "folder or a `latentdiff train clip` run folder)")  # fmt: skip
