"""Token grounding: the right words, the right masks, a loss that is 0 exactly when attention sits inside."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentdiff.data.shapes import coverage, scenes
from latentdiff.tokenizer import CLIPTokenizer
from latentdiff.train import unet
from latentdiff.train.common import DataConfig, shapes_tensors
from latentdiff.train.grounding import grounded_words, grounding_loss, grounding_targets
from latentdiff.unet import CrossAttentionMaps
from tests.test_train_unet import _recipe, frozen  # noqa: F401 (the fixture)


def test_each_size_colour_and_shape_word_belongs_to_its_object():
    tok = CLIPTokenizer.default()
    caption = "a small red circle above a large red square on a black background"
    pieces = [tok.decoder[i] for i in tok.encode(caption)]
    found = [(pieces[p - 1], obj) for p, obj in grounded_words(tok, caption)]
    assert found == [("small</w>", 0), ("red</w>", 0), ("circle</w>", 0),
                     ("large</w>", 1), ("red</w>", 1), ("square</w>", 1)]  # fmt: skip


def test_targets_hold_each_objects_mask_at_latent_size():
    data = DataConfig(canvas=64, pool=12, seed=3)
    positions, masks = grounding_targets(data, CLIPTokenizer.default(), latent_side=8, extra_rows=2)
    assert positions.shape == (14, 6) and masks.shape == (14, 6, 8, 8)
    assert (positions[12:] == -1).all()  # the extra (emoji) rows ground nothing
    for i, scene in enumerate(scenes(3, 12, 64)):
        n_words = int((positions[i] >= 0).sum())
        assert n_words == len(grounded_words(CLIPTokenizer.default(), scene.caption))
        first = torch.from_numpy(coverage(scene.objects[0], 64)).view(8, 8, 8, 8).mean(dim=(1, 3))
        torch.testing.assert_close(masks[i, 0], first)  # word 0 names object 0, area-averaged to 8x8


def test_loss_is_zero_inside_and_grows_with_the_attention_outside():
    masks = torch.zeros(1, 1, 4, 4)
    masks[0, 0, :2] = 1.0  # the object fills the top half
    positions = torch.tensor([[3]])
    inside = torch.zeros(1, 16, 77)
    inside[0, :8, 3] = 1.0  # all of token 3's attention in the top half
    uniform = torch.full((1, 16, 77), 1 / 77)
    assert grounding_loss([(inside, (4, 4))], positions, masks).item() == 0.0
    torch.testing.assert_close(grounding_loss([(uniform, (4, 4))], positions, masks), torch.tensor(0.25))
    assert grounding_loss([(uniform, (4, 4))], torch.tensor([[-1]]), masks).item() == 0.0  # nothing grounded


# the UNet alone; and with the text tower's layers and the layout loss in the same forward pass
@pytest.mark.parametrize("mode", [{}, {"train_text": True, "layout_weight": 1.0}], ids=["unet", "with_layout"])
def test_training_with_grounding_pulls_word_attention_onto_the_objects(frozen, tmp_path, mode):  # noqa: F811
    recipe = _recipe(frozen, tmp_path / "run", max_steps=40, lr=3e-3)
    recipe = dataclasses.replace(recipe, grounding_weight=1.0, caption_dropout=0.0, **mode,
                                 data=dataclasses.replace(recipe.data, canvas=32, pool=8))  # fmt: skip
    setup = unet.setup(recipe)  # the untrained UNet: train() starts from the same seeded init
    before = _grounding_on_the_pool(setup, recipe, setup.model)
    after = _grounding_on_the_pool(setup, recipe, unet.train(recipe, quiet=True)["model"])
    assert after < 0.7 * before, (before, after)


@torch.no_grad()
def _grounding_on_the_pool(setup, recipe, model) -> float:
    """The grounding loss over the whole pool at t = 300 (no noise draw: x_t = the scaled latent)."""
    images, captions = shapes_tensors(recipe.data)
    tok = CLIPTokenizer.default()
    x0 = setup.vae.encode(images).mean * setup.scale
    text_encoder, unet_ = (model.text_encoder, model.unet) if recipe.train_text else (setup.text_encoder, model)
    context = text_encoder.encode(tok(captions).input_ids)
    positions, masks = grounding_targets(recipe.data, tok, x0.shape[-1], extra_rows=0)
    maps = []
    with CrossAttentionMaps(unet_, lambda probs, hw: maps.append((probs, hw))):
        unet_(x0, torch.full((len(x0),), 300), context)
    return grounding_loss(maps, positions, masks).item()
