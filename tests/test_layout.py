"""The layout loss (train/layout.py): its targets follow the scenes' geometry, its loss reads only the
end and padding states of labelled captions, and a run with it trains the head but never ships it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentdiff.data.shapes import COLOURS, SHAPES, scenes
from latentdiff.tokenizer import CLIPTokenizer
from latentdiff.train.common import DataConfig, RecipeError, shapes_tensors
from latentdiff.train.layout import CLASSES, IGNORE, end_and_after, layout_loss, layout_target, layout_targets


def test_targets_name_the_object_first_along_the_axis_on_1000_scenes():
    checked = 0
    for scene in scenes(5, 1000):
        first, second = layout_target(scene)
        if len(scene.objects) == 1:
            assert (first, second) == (IGNORE, IGNORE)
            continue
        a, b = scene.objects
        axis = "cy" if scene.relation in ("above", "below") else "cx"
        top_or_left, other = (a, b) if getattr(a, axis) < getattr(b, axis) else (b, a)
        for obj, target in ((top_or_left, first), (other, second)):
            assert target == list(COLOURS).index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)
        checked += 1
    assert checked > 300


def test_targets_leave_extra_rows_unlabelled():
    targets = layout_targets(DataConfig(pool=20), extra_rows=3)
    assert targets.shape == (23, 2) and (targets[20:] == IGNORE).all()
    assert (targets[:20] != IGNORE).any() and (targets[:20] < CLASSES).all()


def test_targets_follow_the_pool_scene_options():
    data = DataConfig(pool=60, seed=3, min_gap=6.0, two_object_share=0.9)
    captions = shapes_tensors(data)[1]
    targets = layout_targets(data, extra_rows=0)
    assert [(row != IGNORE).all().item() for row in targets] == [" of " in c or " above " in c or " below " in c
                                                                 for c in captions]  # fmt: skip
    with pytest.raises(RecipeError, match="data.min_gap must be between 3"):
        layout_targets(DataConfig(pool=4, min_gap=1.0), extra_rows=0)
    with pytest.raises(RecipeError, match="data.two_object_share must be between 0 and 1"):
        shapes_tensors(DataConfig(pool=4, two_object_share=1.5))


def test_end_and_after_starts_at_the_end_token():
    tokenizer = CLIPTokenizer.default()
    ids = tokenizer(["a red circle", ""]).input_ids
    mask = end_and_after(ids, tokenizer.eos_token_id)
    assert mask[0].tolist() == [False] * 4 + [True] * 73  # <start> a red circle <end> ...
    assert mask[1].tolist() == [False] + [True] * 76


def test_layout_loss_reads_only_labelled_end_and_padding_states():
    tokenizer = CLIPTokenizer.default()
    ids = tokenizer(["a red circle above a blue square", "a red circle"]).input_ids
    logits = torch.randn(2, 77, 2, CLASSES, requires_grad=True)
    targets = torch.tensor([[3, 7], [IGNORE, IGNORE]])
    where = end_and_after(ids, tokenizer.eos_token_id)[0]
    expected = F.cross_entropy(logits[0, where].flatten(0, 1), targets[0].repeat(int(where.sum())))
    torch.testing.assert_close(layout_loss(logits, ids, targets, tokenizer.eos_token_id), expected)
    nothing = layout_loss(logits, ids, torch.full((2, 2), IGNORE), tokenizer.eos_token_id)
    nothing.backward()
    assert nothing.item() == 0 and logits.grad is not None  # still in the graph, as DDP needs
