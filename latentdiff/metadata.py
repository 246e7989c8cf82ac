"""Generation settings stored in a PNG the way AUTOMATIC1111 does: one `parameters` text chunk.

    a red circle to the left of a blue square
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15

Every A1111-aware tool (sd-parsers, civitai, image browsers) reads it back; so does `latentdiff info`.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

# Our sampler names -> A1111's, whose names the readers know.
A1111_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M",
    "ddim": "DDIM",
    "ddpm": "DDPM",
}


def format_parameters(prompt: str, negative_prompt: str, settings: dict[str, object]) -> str:
    """settings: ordered "Key: value" pairs (Steps, Sampler, CFG scale, Seed, Size, Model, ...)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    # A1111 quotes values that contain its separators.
    values = (f'"{v}"' if any(c in str(v) for c in ',:"') else str(v) for v in settings.values())
    lines.append(", ".join(f"{k}: {v}" for k, v in zip(settings, values, strict=True)))
    return "\n".join(lines)


def image_parameters(prompt: str, negative_prompt: str, *, steps: int, sampler: str, karras: bool, cfg_scale: float,
                     seed: int, size: tuple[int, int], model: str, strength: float | None = None,
                     mask: bool = False, cfg_max_sigma: float | None = None) -> str:  # fmt: skip
    """The `parameters` text of one generated image, in A1111's order: what the CLI and the server write.

    cfg_max_sigma (ours, no A1111 key): guidance ran only at noise levels up to it."""
    settings: dict[str, object] = {"Steps": steps, "Sampler": A1111_SAMPLERS[sampler]}
    if karras:
        settings["Schedule type"] = "Karras"
    settings["CFG scale"] = cfg_scale
    if cfg_max_sigma is not None:
        settings["CFG max sigma"] = cfg_max_sigma
    settings |= {"Seed": seed, "Size": f"{size[0]}x{size[1]}", "Model": model}
    if strength is not None:
        settings["Denoising strength"] = strength
    if mask:
        settings["Mask"] = "yes"
    settings["Version"] = "latentdiff"
    return format_parameters(prompt, negative_prompt, settings)


def parse_parameters(text: str) -> dict[str, str]:
    """The inverse of format_parameters: {"prompt", "negative_prompt", and each setting}."""
    lines = text.strip("\n").split("\n")
    settings_line = lines.pop() if lines and re.match(r"^\w[\w ]*: ", lines[-1]) and "Steps: " in lines[-1] else ""
    negative = [i for i, line in enumerate(lines) if line.startswith("Negative prompt: ")]
    prompt_lines = lines[: negative[0]] if negative else lines
    result = {"prompt": "\n".join(prompt_lines), "negative_prompt": ""}
    if negative:
        result["negative_prompt"] = "\n".join(lines[negative[0] :]).removeprefix("Negative prompt: ")
    for key, value in re.findall(r'\s*([\w ]+): ("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)', settings_line):
        result[key.strip()] = value.strip().strip('"')
    return result


def read_png_parameters(path: str | Path) -> dict[str, str]:
    try:
        with Image.open(path) as image:
            text = image.text.get("parameters") if hasattr(image, "text") else None
    except OSError as e:
        raise ValueError(f"{path}: cannot read as an image ({e})") from None
    if text is None:
        raise ValueError(f"{path}: has no generation parameters (no 'parameters' text chunk)")
    return parse_parameters(text)
