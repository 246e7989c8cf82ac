"""Figures drawn with PIL alone: image grids with labels, line charts, heatmap overlays.

The lessons and the explainer draw a few kinds of figure; a few dozen lines of PIL, which the
project already depends on, do them all, where matplotlib would be one more install.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Tableau 10 (matplotlib's default cycle): ten hues that stay apart, one per series or class.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
FONT = ImageFont.load_default(size=13)  # Pillow's bundled scalable font (Pillow >= 10.1)
LINE = 16  # pixels per line of text

# Anchors of matplotlib's "inferno" map: dark (no attention) through red to pale yellow (most).
_INFERNO = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
     [252, 255, 164]], dtype=np.float32)  # fmt: skip


def beside(*images: Image.Image, gap: int = 8) -> Image.Image:
    """Images left to right, tops aligned, on white."""
    canvas = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)),
                       "white")  # fmt: skip
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width + gap
    return canvas


def above(*images: Image.Image, gap: int = 8) -> Image.Image:
    """Images top to bottom, left edges aligned, on white."""
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                       "white")  # fmt: skip
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height + gap
    return canvas


def caption(text: str, width: int) -> Image.Image:
    """A line of text as an image strip, to title a figure."""
    strip = Image.new("RGB", (max(width, 1), LINE + 4), "white")
    ImageDraw.Draw(strip).text((4, 2), text, fill="black", font=FONT)
    return strip


def to_image(picture: torch.Tensor | np.ndarray, size: int | None = None) -> Image.Image:
    """(3, H, W) in [0, 1] or (H, W, 3) uint8 -> PIL image, scaled (nearest) to `size` pixels wide."""
    if isinstance(picture, torch.Tensor):
        picture = (picture.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(picture)
    if size and image.width != size:
        # Nearest keeps pixels crisp when enlarging; shrinking averages (LANCZOS) instead of dropping pixels.
        resample = Image.Resampling.NEAREST if size > image.width else Image.Resampling.LANCZOS
        image = image.resize((size, round(size * image.height / image.width)), resample)
    return image


def labelled_grid(rows: list[tuple[str, list[Image.Image]]], column_titles: list[str] | None = None,
                  pad: int = 4) -> Image.Image:  # fmt: skip
    """Rows of equal-sized tiles, each row named on its left, columns optionally titled above."""
    tile_w = max(t.width for _, tiles in rows for t in tiles)
    tile_h = max(t.height for _, tiles in rows for t in tiles)
    label_w = 8 + max((int(FONT.getlength(name)) for name, _ in rows), default=0)
    columns = max(len(tiles) for _, tiles in rows)
    top = LINE + 4 if column_titles else 0
    canvas = Image.new("RGB", (label_w + columns * (tile_w + pad) + pad, top + len(rows) * (tile_h + pad) + pad),
                       "white")  # fmt: skip
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(column_titles or []):
        draw.text((label_w + pad + c * (tile_w + pad), 2), _fit(title, tile_w), fill="black", font=FONT)
    for r, (name, tiles) in enumerate(rows):
        y = top + pad + r * (tile_h + pad)
        draw.text((4, y + tile_h // 2 - LINE // 2), name, fill="black", font=FONT)
        for c, tile in enumerate(tiles):
            canvas.paste(tile, (label_w + pad + c * (tile_w + pad), y))
    return canvas


def _fit(text: str, width: int) -> str:
    """Cut text with an ellipsis so it fits `width` pixels."""
    while len(text) > 1 and FONT.getlength(text) > width:
        text = text[:-3] + ".."
    return text


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, x_label: str = "", log_y: bool = False,
               size: tuple[int, int] = (360, 220)) -> Image.Image:  # fmt: skip
    """Named series of (x, y) points as coloured lines, with the y range and a legend.

    log_y draws log10(y) (values <= 0 are dropped), for noise levels spanning decades.
    """
    w, h = size
    left, right, top, bottom = 56, 10, LINE + 6, LINE + 8
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), title, fill="black", font=FONT)

    def y_of(value: float) -> float:
        return math.log10(value) if log_y else value

    points = {name: [(x, y_of(y)) for x, y in pts if not log_y or y > 0] for name, pts in series.items()}
    xs = [x for pts in points.values() for x, _ in pts]
    ys = [y for pts in points.values() for _, y in pts]
    if not xs:
        return image
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (w - left - right) * (x - x0) / max(x1 - x0, 1e-12),
                h - bottom - (h - top - bottom) * (y - y0) / (y1 - y0))  # fmt: skip

    draw.rectangle((left, top, w - right, h - bottom), outline=(180, 180, 180))
    for value, anchor in ((y1, top), (y0, h - bottom - LINE)):
        label = f"{10**value:.3g}" if log_y else f"{value:.3g}"
        draw.text((4, anchor), label, fill=(90, 90, 90), font=FONT)
    draw.text((left, h - LINE - 2), f"{x0:g}", fill=(90, 90, 90), font=FONT)
    end = f"{x1:g}"
    draw.text((w - right - FONT.getlength(end), h - LINE - 2), end, fill=(90, 90, 90), font=FONT)
    if x_label:
        draw.text(((w - FONT.getlength(x_label)) / 2, h - LINE - 2), x_label, fill=(90, 90, 90), font=FONT)
    legend_x = left + 6
    for i, (name, pts) in enumerate(points.items()):
        colour = PALETTE[i % len(PALETTE)]
        if len(pts) >= 2:
            draw.line([xy(*p) for p in pts], fill=colour, width=2)
        for p in pts if len(pts) < 2 else ():
            cx, cy = xy(*p)
            draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        if len(points) > 1:
            draw.text((legend_x, top + 2), name, fill=colour, font=FONT)
            legend_x += FONT.getlength(name) + 12
    return image


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)) on the inferno map."""
    pos = np.clip(values, 0, 1) * (len(_INFERNO) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_INFERNO) - 2)
    frac = (pos - lo)[..., None]
    return (_INFERNO[lo] * (1 - frac) + _INFERNO[lo + 1] * frac).round().astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """A heatmap (H, W), scaled so its maximum is 1, blended over the image (resized to the map)."""
    heat = heat / max(float(heat.max()), 1e-12)
    coloured = Image.fromarray(colormap(heat)).resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), coloured, alpha)
