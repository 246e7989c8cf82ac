"""Guidance and wording: one seed at several CFG scales; two prompts one word apart from the same noise.

Classifier-free guidance moves the estimate from the unconditional x0_u towards and past the
conditional x0_c: x0 = x0_u + s (x0_c - x0_u) (Ho & Salimans 2022). s = 1 is the plain
conditional model; larger s follows the text harder, at some cost in variety and colour.
"""

from __future__ import annotations

import re

import torch

from ..data.shapes import COLOURS
from ..model import StableDiffusion
from ..pipeline import last_images, txt2img
from .trajectory import Trajectory


@torch.no_grad()
def cfg_sweep(model: StableDiffusion, prompt: str, scales: list[float], seed: int = 0, steps: int = 20,
              sampler: str = "euler", negative_prompt: str = "") -> torch.Tensor:  # fmt: skip
    """The same prompt and seed at each guidance scale: (len(scales), 3, H, W) in [0, 1]."""
    return torch.cat([
        last_images(txt2img(model, prompt, negative_prompt, steps, scale, seed=seed, sampler=sampler)).cpu()
        for scale in scales
    ])  # fmt: skip


def swap_word(prompt: str, swap: str) -> str:
    """ "red=blue" -> the prompt with its first whole word "red" replaced by "blue"."""
    old, sep, new = swap.partition("=")
    old, new = old.strip(), new.strip()
    if not sep or not old or not new or old == new:
        raise ValueError(f"--swap wants OLD=NEW with two different words, got {swap!r}")
    pattern = re.compile(rf"(?<![\w-]){re.escape(old)}(?![\w-])", re.IGNORECASE)
    if not pattern.search(prompt):
        raise ValueError(f"--swap: the word {old!r} is not in the prompt {prompt!r}")
    return pattern.sub(new, prompt, count=1)


def default_swap(prompt: str) -> str | None:
    """For a prompt naming a shapes-world colour: that colour -> the next one in the palette."""
    names = list(COLOURS)
    for word in re.findall(r"[a-z]+", prompt.lower()):
        if word in COLOURS:
            return f"{word}={names[(names.index(word) + 1) % len(names)]}"
    return None


def divergence(a: Trajectory, b: Trajectory) -> list[float]:
    """Per step, the RMS difference of the two runs' x0 estimates (in latent units)."""
    return [float((xa - xb).pow(2).mean().sqrt()) for xa, xb in zip(a.x0, b.x0, strict=True)]
