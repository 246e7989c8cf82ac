"""Layout supervision for the text tower: make its states say which object goes where.

A CLIP text tower trained contrastively on shapes captions reads them as bags of words. Measured on
the round-three built-in tower (`benchmarks/text_relations.py`, its probe): a linear probe on its end
and padding states names the top (or left) object of a two-object caption no better than a coin
toss between the two objects the caption names, so the UNet, which reads those states, cannot know
which one to draw on top, and draws relations the wrong way round half the time. The same probe
with the tower's layers training reaches 100% within 150 steps: the tower can say it, nothing
asked it to.

So a UNet recipe can add this loss (`layout_weight`, with `train_text`): a linear head reads every
state from the end token on (the padding states the UNet attends to most) and must name, for a
two-object caption, the colour and shape of the object that comes first along the relation's axis
(top for above/below, left for left/right) and of the other one:
    L = mean over those positions and both objects of CE(head(state), colour * 3 + shape)
The head only trains the tower; it is not part of the shipped model. One-object captions, emoji and
captions dropped for guidance add nothing.

Legend: P pool size, B batch, L tokens (77), D text width, C = colours x shapes classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.shapes import COLOURS, SHAPES, Scene
from .common import DataConfig, pool_scenes

CLASSES = len(COLOURS) * len(SHAPES)
FIRST_ON_AXIS = ("above", "to the left of")  # objects[0] <relation> objects[1] puts objects[0] first
IGNORE = -100  # F.cross_entropy's ignore_index


def object_class(obj) -> int:
    return list(COLOURS).index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)


def layout_target(scene: Scene) -> tuple[int, int]:
    """(class of the object first along the relation's axis, class of the other); IGNORE for one object."""
    if len(scene.objects) != 2:
        return IGNORE, IGNORE
    a, b = scene.objects
    first, second = (a, b) if scene.relation in FIRST_ON_AXIS else (b, a)
    return object_class(first), object_class(second)


def layout_targets(data: DataConfig, extra_rows: int) -> torch.Tensor:
    """(P + extra_rows, 2) targets for the shapes pool, then `extra_rows` rows without one (the emoji)."""
    rows = [layout_target(s) for s in pool_scenes(data)]
    return torch.tensor(rows + [(IGNORE, IGNORE)] * extra_rows, dtype=torch.long).view(-1, 2)


class LayoutHead(torch.nn.Module):
    """Linear read-out of both objects' classes from each text state: (B, L, D) -> (B, L, 2, C)."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = torch.nn.Linear(width, 2 * CLASSES)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.proj(states).unflatten(-1, (2, CLASSES))


def end_and_after(input_ids: torch.Tensor, end_id: int) -> torch.Tensor:
    """(B, L) mask of the end token and every position after it (SD 1.x pads with the end token)."""
    is_end = input_ids == end_id
    first = torch.where(is_end.any(-1), is_end.int().argmax(-1), input_ids.shape[-1] - 1)
    return torch.arange(input_ids.shape[-1], device=input_ids.device) >= first[:, None]


def layout_loss(logits: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor, end_id: int,
                count: float | None = None) -> torch.Tensor:  # fmt: skip
    """logits (B, L, 2, C) from LayoutHead, targets (B, 2) with IGNORE rows; 0 when nothing is labelled.

    The mean cross-entropy over the labelled states, or, with `count`, their sum over `count`: under
    DDP each process passes the global batch's labelled count / processes, so the average of the
    processes' losses (and gradients) is the global batch's mean, whatever each shard holds.
    """
    where = labelled(input_ids, targets, end_id)  # (B, L)
    if not where.any():
        return logits.sum() * 0  # zero, but still part of the graph (DDP wants every rank's graph alike)
    picked = logits[where]  # (n, 2, C)
    wanted = targets[:, None, :].expand(-1, input_ids.shape[-1], -1)[where]  # (n, 2)
    if count is None:
        return F.cross_entropy(picked.flatten(0, 1), wanted.flatten())
    return F.cross_entropy(picked.flatten(0, 1), wanted.flatten(), reduction="sum") / (2 * count)


def labelled(input_ids: torch.Tensor, targets: torch.Tensor, end_id: int) -> torch.Tensor:
    """(B, L): the states the layout loss reads, the end and padding states of labelled captions."""
    return end_and_after(input_ids, end_id) & (targets[:, :1] != IGNORE)
