"""The lessons' own figures (scatter plots of codes, rows of 28x28 digits), drawn with PIL.

The general pieces (beside, above, caption, the palette and font) live in latentdiff/figures.py.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from ..figures import FONT, LINE, PALETTE


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
