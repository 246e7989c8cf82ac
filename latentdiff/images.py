"""Image files in and out: PNGs written atomically, with the generation settings as text chunks."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, PngImagePlugin

from .weights.io import atomic_path


def save_png(image: Image.Image, path: str | Path, text: dict[str, str] | None = None) -> None:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(Path(path)) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
