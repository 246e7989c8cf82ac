"""Weights I/O: one `load` for every layout a user may hold, one `save` for each we write.

- a diffusers folder (model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/)
- an original single-file checkpoint (.safetensors; .ckpt only with allow_pickle)
"""

from __future__ import annotations

from pathlib import Path

from .errors import WeightsError

__all__ = ["WeightsError", "load", "save"]


def load(path: str | Path, allow_pickle: bool = False, prediction_type: str | None = None, use_ema: bool = False):
    """A StableDiffusion from a diffusers folder or a single-file checkpoint."""
    path = Path(path)
    if path.is_dir():
        from .diffusers_folder import load_diffusers

        model = load_diffusers(path, allow_pickle=allow_pickle)
    elif path.is_file():
        from .single_file_io import load_single_file

        model = load_single_file(path, allow_pickle=allow_pickle, use_ema=use_ema)
    else:
        raise WeightsError(f"{path}: no such file or folder")
    if prediction_type is not None:
        model.set_prediction_type(prediction_type)
    return model


def save(model, path: str | Path, format: str = "diffusers", **options) -> None:
    """options (diffusers only): dtype=torch.float16 to store half precision, max_shard_bytes=N to shard."""
    if format == "diffusers":
        from .diffusers_folder import save_diffusers

        save_diffusers(model, path, **options)
    elif format == "single_file":
        from .single_file_io import save_single_file

        if options:
            raise WeightsError(f"{', '.join(options)}: options of the diffusers layout, not of single files")

        save_single_file(model, path)
    else:
        raise WeightsError(f"unknown weights format {format!r}; choose diffusers or single_file")
