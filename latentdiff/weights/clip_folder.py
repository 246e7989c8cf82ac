"""A whole CLIP inside a diffusers folder: the text tower is `text_encoder/`, the rest `image_encoder/`.

The UNet only needs CLIP's text tower, but the model's own CLIP also scores its images (the emoji
bar, `latentdiff score`, zero-shot classification). Writing a second full CLIPModel would store the
text tower twice, so the image side goes into diffusers' standard optional component:

```
image_encoder/config.json        CLIPVisionModelWithProjection (transformers reads it as is)
image_encoder/model.safetensors  vision_model.*, visual_projection.weight
image_encoder/clip_head.safetensors  text_projection.weight, logit_scale (ours; transformers ignores it)
```
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..clip import CLIPModel
from ..config import CLIPVisionConfig
from .diffusers_folder import _component_weights, _read_json, read_config
from .errors import WeightsError
from .io import load_into, read_state_dict, write_json, write_state_dict

_HEAD_KEYS = ("text_projection.weight", "logit_scale")


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
    text_sd = _component_weights(folder / "text_encoder", "text_encoder", allow_pickle=False)
    sd |= {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text_sd.items()}
    load_into(clip, sd, str(folder))
    return clip.eval()
