"""Sample grids: a batch of images in [-1, 1] tiled into one PNG (what a run shows as it trains)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..images import save_png


def make_grid(images: torch.Tensor, columns: int = 8, pad: int = 2) -> Image.Image:
    """(N, 3, H, W) in [-1, 1] -> one RGB image, row-major, with grey gutters."""
    n, _, h, w = images.shape
    rows = -(-n // columns)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    grid = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), (128, 128, 128))
    for i, tile in enumerate(pixels):
        grid.paste(Image.fromarray(tile), (pad + (i % columns) * (w + pad), pad + (i // columns) * (h + pad)))
    return grid


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_png(make_grid(images, columns), path)
