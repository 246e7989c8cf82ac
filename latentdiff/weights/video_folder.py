"""A text-to-video model on disk: a diffusers folder (text encoder, VAE, the spatial UNet, scheduler)
plus `video_unet/`, which holds only the temporal layers and their settings.

    folder/model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/   the image model
    folder/video_unet/config.json                  {"max_frames": 16, "causal": false, "shared_noise": 0.5,
                                                    "frame_position": true, "temporal_text": true,
                                                    "space_time_conv": false}
    folder/video_unet/temporal.safetensors         the temporal attention layers (keys "temporal.*")

The image part loads as an image model too (its UNet is the video model's spatial half).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..cpu_kernels import accelerate
from ..model import StableDiffusion
from ..video_unet import VideoUNet
from .errors import WeightsError
from .io import load_into, read_state_dict, write_json, write_state_dict


def has_video(folder: str | Path) -> bool:
    return (Path(folder) / "video_unet" / "config.json").exists()


def save_video(model: StableDiffusion, video: VideoUNet, folder: str | Path, dtype: torch.dtype | None = None,
               max_shard_bytes: int | None = None) -> None:  # fmt: skip
    """The image model (with `video`'s spatial UNet), then video_unet/; each file written atomically."""
    from . import save

    model.unet.load_state_dict(video.unet.state_dict())
    options = {"dtype": dtype} if dtype else {}
    save(model, folder, **options, **({"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}))
    temporal = {k: v for k, v in video.state_dict().items() if k.startswith("temporal.")}
    if dtype is not None:
        temporal = {k: v.to(dtype) for k, v in temporal.items()}
    write_state_dict(temporal, Path(folder) / "video_unet" / "temporal.safetensors")
    settings = {
        "max_frames": video.max_frames,
        "causal": video.causal,
        "shared_noise": video.shared_noise,
        "frame_position": video.frame_position,
        "temporal_text": video.temporal_text,
        "space_time_conv": video.space_time_conv,
    }
    write_json(settings, Path(folder) / "video_unet" / "config.json")


def load_video(folder: str | Path) -> tuple[StableDiffusion, VideoUNet]:
    from . import load

    folder = Path(folder)
    if not has_video(folder):
        raise WeightsError(f"{folder}: not a video model (no video_unet/config.json); make one: latentdiff train video")
    model = load(folder)
    settings = json.loads((folder / "video_unet" / "config.json").read_text())
    # The settings after causal are absent from folders written before them: those used none of them.
    video = VideoUNet(model.config.unet, int(settings["max_frames"]), bool(settings["causal"]),
                      float(settings.get("shared_noise", 0.0)),
                      bool(settings.get("frame_position", False)),
                      bool(settings.get("temporal_text", False)),
                      bool(settings.get("space_time_conv", False)))  # fmt: skip
    temporal, _ = read_state_dict(folder / "video_unet" / "temporal.safetensors")
    spatial = {f"unet.{k}": v for k, v in model.unet.state_dict().items()}
    load_into(video, spatial | temporal, str(folder / "video_unet"))
    return model, accelerate(video.to(model.device, model.dtype).eval(), release=True)  # as StableDiffusion
