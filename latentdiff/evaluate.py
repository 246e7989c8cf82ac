"""How good is a text-to-image model on the shapes world? Generate, parse, compare.

Fidelity = the share of prompts whose generated image satisfies its caption per SHAPES.md: the
object count and every named colour, shape, size, relation and background (data.shapes.caption_holds).
The prompts come from a seed no training run uses, so they are fresh scenes, not memorised ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data.shapes import caption_holds, sample_scene
from .pipeline import last_images, txt2img

FIDELITY_SEED = 20_261_124  # the prompts of the fidelity bar: never a training seed


def shapes_prompts(n: int, seed: int = FIDELITY_SEED, canvas: int = 64) -> list[str]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, canvas).caption for _ in range(n)]


@dataclasses.dataclass
class Fidelity:
    score: float  # share of prompts whose image holds
    held: list[bool]
    prompts: list[str]
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]


@torch.no_grad()
def fidelity(model, prompts: list[str], steps: int = 20, guidance_scale: float = 2.5, sampler: str = "euler",
             seed: int = 0, batch: int = 50) -> Fidelity:  # fmt: skip
    """Generate one image per prompt (seed + i each) and check it against its caption."""
    chunks = []
    for start in range(0, len(prompts), batch):
        states = txt2img(model, prompts[start : start + batch], steps=steps, guidance_scale=guidance_scale,
                         sampler=sampler, seed=seed + start)  # fmt: skip
        chunks.append(last_images(states).float().cpu())
    images = torch.cat(chunks)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    held = [caption_holds(p, c) for p, c in zip(pixels, prompts, strict=True)]
    return Fidelity(sum(held) / len(held), held, prompts, images)
