"""What `latentdiff serve` is started with: the model, where other models live, the key, the limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (`latentdiff serve --max-*`); past them it gets a 4xx naming the limit."""

    max_width: int = 1024
    max_height: int = 1024
    max_steps: int = 150
    max_images: int = 8  # batch_size * n_iter
    max_body_mb: float = 50.0  # a 1024x1024 PNG in base64 is a few MiB


@dataclass(frozen=True)
class ServeOptions:
    model: Path  # loaded at start; the built-in model unless --model says otherwise
    models_dir: Path | None = None  # more models to switch to (diffusers folders, .safetensors files)
    api_key: str | None = None  # when set, /sdapi/v1 wants it (Bearer, or as the HTTP Basic password)
    limits: Limits = field(default_factory=Limits)
    previews: bool = True  # live previews on /progress, one VAE decode each (preview.py)
