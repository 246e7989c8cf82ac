"""Token grounding: teach the UNet's cross-attention to look for each word where its object is.

A small UNet trained only to denoise learns to read the caption from wherever is easiest: the end
token and the 60-odd padding tokens after it carry the whole caption, and they take most of the
attention. Its per-word maps then lie flat (measured on models/shapes-64: a colour or shape word
holds as much attention on the other object as on its own), so nothing ties "red" to the circle.

The shapes world knows where every object is, so the UNet recipe can add TokenCompose's token
loss (Wang et al. 2024, "TokenCompose", eq. 4): for each word naming an object (its size, colour,
shape), at every cross-attention layer, the share of the word's attention that falls inside the
object's mask should be 1:
    L = mean over words and layers of (1 - sum_inside A[:, word] / sum_all A[:, word])^2
Emoji and captions dropped for guidance carry no words to ground and add nothing.

Legend: P pool size, K grounded words per caption (at most 6), s latent side, N = H*W positions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.shapes import COLOURS, SHAPES, SIZES, coverage
from ..tokenizer import CLIPTokenizer
from .common import DataConfig, pool_scenes

MAX_WORDS = 6  # "a small red circle above a large blue square": size, colour and shape of two objects


def grounded_words(tokenizer: CLIPTokenizer, caption: str) -> list[tuple[int, int]]:
    """(token position, object index) for each size, colour and shape word of a shapes caption.

    Objects are named in order and each ends with its shape word, so a word belongs to the object
    whose shape word comes next. Words of several BPE pieces are grounded piece by piece.
    """
    from ..explain.attention import words

    out, obj = [], 0
    for word in words(tokenizer, caption):
        if word.text in COLOURS or word.text in SIZES or word.text in SHAPES:
            out += [(p, obj) for p in word.positions]
        if word.text in SHAPES:
            obj += 1
    return out


def grounding_targets(data: DataConfig, tokenizer: CLIPTokenizer, latent_side: int,
                      extra_rows: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """For the shapes pool (then `extra_rows` ungrounded rows, the emoji): positions (P, K) of the
    grounded tokens, -1 where none, and each one's object mask (P, K, s, s), area-averaged."""
    pool = pool_scenes(data)
    positions = torch.full((len(pool) + extra_rows, MAX_WORDS), -1, dtype=torch.long)
    masks = torch.zeros(len(pool) + extra_rows, MAX_WORDS, latent_side, latent_side)
    for i, scene in enumerate(pool):
        cover = torch.from_numpy(np.stack([coverage(o, data.canvas) for o in scene.objects]))  # (objects, H, W)
        small = F.adaptive_avg_pool2d(cover[:, None], latent_side)[:, 0]  # (objects, s, s)
        for k, (position, obj) in enumerate(grounded_words(tokenizer, scene.caption)[:MAX_WORDS]):
            positions[i, k] = position
            masks[i, k] = small[obj]
    return positions, masks


def grounding_loss(maps: list[tuple[torch.Tensor, tuple[int, int]]], positions: torch.Tensor,
                   masks: torch.Tensor, count: float | None = None) -> torch.Tensor:  # fmt: skip
    """maps: (probs (B, N, T), (H, W)) per cross-attention call; positions (B, K), -1 for none;
    masks (B, K, s, s). Returns TokenCompose's token loss, 0 when no word in the batch is grounded.

    The mean over grounded words and layers, or, with `count`, the sum over `count` words (and the
    layers): under DDP each process passes the global batch's grounded words / processes, so the
    average of the processes' losses is the global batch's mean, whatever each shard holds.
    """
    valid = positions >= 0  # (B, K)
    if not maps:
        return torch.zeros((), device=positions.device)
    if not valid.any():
        return maps[0][0].sum() * 0  # zero, but still part of the graph (DDP wants every rank's graph alike)
    B, K = positions.shape
    losses = []
    for probs, (H, W) in maps:
        N = H * W
        inside = F.adaptive_avg_pool2d(masks.flatten(0, 1)[:, None], (H, W)).view(B, K, N)  # (B, K, N)
        a = probs.gather(2, positions.clamp_min(0)[:, None, :].expand(-1, N, -1)).transpose(1, 2)  # (B, K, N)
        share = (a * inside).sum(-1) / a.sum(-1).clamp_min(1e-8)  # (B, K)
        losses.append((1 - share)[valid] ** 2)
    if count is None:
        return torch.cat(losses).mean()
    return torch.cat(losses).sum() / (count * len(maps))
