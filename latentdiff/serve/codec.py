"""Images in and out of JSON: base64 (raw, or a data: URL as browsers make them) <-> PIL images."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, PngImagePlugin, UnidentifiedImageError

# Decoding allocates width * height * 4 bytes whatever the file size; a tiny PNG can claim 50k x 50k.
MAX_INPUT_PIXELS = 4096 * 4096


class RequestError(ValueError):
    """Bad input from a client: answered with HTTP 422 and this message."""


def decode_image(data: str, field: str) -> Image.Image:
    """A base64 image -> a loaded PIL image; `field` names it in the error message."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field}: not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise RequestError(f"{field}: {image.width}x{image.height} is over the {MAX_INPUT_PIXELS} pixels accepted")
        image.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise RequestError(f"{field}: not a readable image ({e.__class__.__name__})") from None
    return image


def encode_png(image: Image.Image, text: dict[str, str] | None = None) -> str:
    """A PIL image -> base64 PNG, with `text` as tEXt chunks (A1111 stores `parameters` there)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
