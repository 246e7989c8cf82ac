"""The lessons' figures, drawn with PIL alone.

Scatter plots and labelled image rows are a few dozen lines of PIL, which the project already
depends on; matplotlib would be one more install for three figures.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

# Tableau 10 (matplotlib's default cycle): ten hues that stay apart, one per class.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
FONT = ImageFont.load_default(size=13)  # Pillow's bundled scalable font (Pillow >= 10.1)
LINE = 16  # pixels per line of text


def scatter(codes: torch.Tensor, labels: torch.Tensor, title: str, size: int = 360) -> Image.Image:
    """2-D codes (N, 2) as dots coloured by class, in a square panel with a title above.

    Each axis is drawn as asinh(code / median |code|): linear near 0, logarithmic far out (the
    "symlog" scale), keeping each coordinate's sign and order. A deep autoencoder's code axes can
    span a hundredfold range (MNIST's 1s lie tens of units out, most digits within a few), which
    on linear axes crams nine classes into a corner. Measures use the codes themselves.
    """
    warped = torch.asinh(codes / codes.abs().median(dim=0).values.clamp_min(1e-9))
    lo, hi = warped.min(dim=0).values, warped.max(dim=0).values
    margin = 8
    xy = (warped - lo) / (hi - lo).clamp_min(1e-9) * (size - 2 * margin) + margin
    panel = Image.new("RGB", (size, size + LINE + 4), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((margin, 2), title, fill="black", font=FONT)
    draw.rectangle((0, LINE + 4, size - 1, size + LINE + 3), outline=(160, 160, 160))
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))  # no class always on top
    for i in order.tolist():
        x, y = xy[i].tolist()
        y = size - y + LINE + 4  # the y axis points up
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=PALETTE[int(labels[i]) % len(PALETTE)])
    return panel


def legend(classes: tuple[str, ...]) -> Image.Image:
    """One line per class: its colour, then its name."""
    width = 24 + max(int(FONT.getlength(name)) for name in classes)
    image = Image.new("RGB", (width, LINE * len(classes) + 4), "white")
    draw = ImageDraw.Draw(image)
    for i, name in enumerate(classes):
        draw.rectangle((2, 6 + i * LINE, 12, 16 + i * LINE), fill=PALETTE[i % len(PALETTE)])
        draw.text((18, 2 + i * LINE), name, fill="black", font=FONT)
    return image


def image_rows(rows: list[tuple[str, torch.Tensor]], scale: int = 2, pad: int = 2) -> Image.Image:
    """Each row a name, then its images (n, 784) in [0, 1] as 28x28 tiles drawn `scale` times larger."""
    label_width = 8 + max(int(FONT.getlength(name)) for name, _ in rows)
    tile = 28 * scale
    columns = max(len(images) for _, images in rows)
    canvas = Image.new("RGB", (label_width + columns * (tile + pad) + pad, len(rows) * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, images) in enumerate(rows):
        top = pad + r * (tile + pad)
        draw.text((4, top + tile // 2 - 10), name, fill="black", font=FONT)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).view(-1, 28, 28).numpy()
        for c, image in enumerate(pixels):
            picture = Image.fromarray(image).resize((tile, tile), Image.Resampling.NEAREST)
            canvas.paste(picture, (label_width + pad + c * (tile + pad), top))
    return canvas


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
    strip = Image.new("RGB", (width, LINE + 4), "white")
    ImageDraw.Draw(strip).text((4, 2), text, fill="black", font=FONT)
    return strip
