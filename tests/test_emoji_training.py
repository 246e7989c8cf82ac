"""Emoji in the training pool, zero-shot scoring, and the model's own CLIP saved beside it.

The real emoji need `latentdiff data prepare emoji`; here a synthetic set stands in: each "emoji" is
a flat colour patch with a distinct name, so tests run offline in seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from latentdiff.clip import CLIPModel, contrastive_loss
from latentdiff.config import CLIPTextConfig, CLIPVisionConfig
from latentdiff.data import emoji as emoji_data
from latentdiff.train.common import DataConfig, OptimConfig, emoji_tensors, pool_tensors
from latentdiff.zero_shot import class_vectors, classify, top_k_accuracy

NAMES = [f"{colour} {thing}" for colour in ("red", "blue", "green", "yellow") for thing in ("apple", "ball", "car")]


def _synthetic_emoji(size: int = 16) -> emoji_data.EmojiSet:
    rng = np.random.default_rng(0)
    images = np.full((len(NAMES), size, size, 3), 255, np.uint8)
    for i in range(len(NAMES)):
        images[i, 4:12, 4:12] = rng.integers(0, 200, 3)
    n = len(NAMES)
    return emoji_data.EmojiSet(images, list(NAMES), ["Objects"] * n, ["household"] * n,
                               [(name.split()[1],) for name in NAMES], [f"{i:X}" for i in range(n)])  # fmt: skip


@pytest.fixture
def fake_emoji(monkeypatch):
    monkeypatch.setattr(emoji_data, "load_emoji", lambda size=16, **_: _synthetic_emoji(size))
    return _synthetic_emoji()


def _tiny_clip(seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=4)  # fmt: skip
    return CLIPModel(text, vision, projection_dim=16).eval()


def test_pool_adds_training_emoji_under_varied_captions_and_never_held_out_ones(fake_emoji):
    data = DataConfig(canvas=16, pool=10, heldout=4, emoji_repeats=3)
    images, captions = pool_tensors(data)
    train_idx, heldout_idx = emoji_data.split(fake_emoji)
    assert images.shape == (10 + 3 * len(train_idx), 3, 16, 16) and len(captions) == len(images)
    assert images.min() >= -1 and images.max() <= 1
    emoji_captions = captions[10:]
    assert all(any(fake_emoji.names[i] in c for i in train_idx) for c in emoji_captions)
    for i in heldout_idx:  # a held-out name never trains ("red apple" is not part of another name here)
        assert not any(fake_emoji.names[i] in c for c in emoji_captions)
    assert len(set(emoji_captions)) > len(train_idx)  # the repeats are captioned differently
    held, held_captions = emoji_tensors(data, heldout=True)
    assert len(held) == len(heldout_idx)
    assert held_captions == [emoji_data.caption(fake_emoji, i) for i in heldout_idx]
    assert pool_tensors(dataclasses.replace(data, emoji_repeats=0))[0].shape[0] == 10


def test_class_vectors_average_the_templates_and_top_k():
    from latentdiff.tokenizer import CLIPTokenizer

    clip = _tiny_clip()
    templates = ("a photo of a {}", "a {}")
    got = class_vectors(clip, ["cat", "dog"], templates)
    with torch.no_grad():
        each = clip.encode_text(CLIPTokenizer.default()(["a photo of a cat", "a cat"]).input_ids)
    torch.testing.assert_close(got[0], torch.nn.functional.normalize(each.mean(0), dim=0))
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert top_k_accuracy(scores, torch.tensor([1, 1, 0])) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, torch.tensor([1, 1, 0]), k=2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one label"):
        class_vectors(clip, [], templates)


def test_zero_shot_picks_the_right_label_after_contrastive_training():
    """Solid red vs solid blue images with the captions "red" and "blue": trivially separable."""
    clip = _tiny_clip().train()
    from latentdiff.tokenizer import CLIPTokenizer

    images = (
        torch.stack([torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, -1, 1])]).view(2, 3, 1, 1).expand(2, 3, 16, 16)
    )
    ids = CLIPTokenizer.default()(["a red square", "a blue square"]).input_ids
    optimizer = torch.optim.AdamW(clip.parameters(), lr=3e-3)
    for _ in range(30):
        loss = contrastive_loss(clip(ids, images))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probs = classify(clip.eval(), images.flip(0), ["blue", "red"], templates=("a {} square",))
    assert probs.argmax(dim=1).tolist() == [0, 1] and torch.allclose(probs.sum(1), torch.ones(2))


def test_clip_training_reports_zero_shot_and_emoji_ranking(fake_emoji, tmp_path):
    from latentdiff.train.clip import CLIPRecipe, train, zero_shot_report

    clip = _tiny_clip()
    recipe = CLIPRecipe(text=clip.text_model.config, vision=clip.vision_model.config, projection_dim=16,
                        optim=OptimConfig(lr=1e-3, warmup_steps=1, max_steps=2),
                        data=DataConfig(canvas=16, pool=8, heldout=16, emoji_repeats=2),
                        batch_size=4, log_every=1, ckpt_every=2, out=str(tmp_path))  # fmt: skip
    train(recipe, quiet=True)
    lines = (tmp_path / "zero_shot.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"emoji_heldout_top5_ema"' in lines[0] and '"colour_raw"' in lines[0]
    scores = zero_shot_report(clip, recipe.data)
    assert set(scores) == {"colour", "shape", "emoji_train_top5", "emoji_heldout_top5"}
    assert all(0 <= v <= 1 for v in scores.values())


def test_vae_init_from_a_run_and_emoji_psnr(fake_emoji, tmp_path):
    from latentdiff.config import VAEConfig
    from latentdiff.train.vae import VAERecipe, evaluate, train

    tiny = VAEConfig(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4)
    base = VAERecipe(model=tiny, optim=OptimConfig(lr=1e-3, warmup_steps=1, max_steps=2, ema_decay=0.0),
                     data=DataConfig(canvas=16, pool=4, heldout=4, emoji_repeats=1), batch_size=2,
                     log_every=1, ckpt_every=2, out=str(tmp_path / "a"))  # fmt: skip
    first = train(base, quiet=True)
    assert np.isfinite(evaluate(first["model"], base.data, "emoji"))
    # lr 0 and no weight decay: a run started from `a` keeps a's (EMA, with decay 0: last) weights
    frozen = dataclasses.replace(base.optim, lr=0.0, weight_decay=0.0)
    second = train(dataclasses.replace(base, optim=frozen, init_from=str(tmp_path / "a"), out=str(tmp_path / "b")),
                   quiet=True)  # fmt: skip
    for key, value in first["model"].state_dict().items():
        torch.testing.assert_close(second["model"].state_dict()[key], value)


def test_the_model_folder_carries_its_clip(tmp_path):
    """save_clip adds image_encoder/ that transformers reads; load_clip gives back the same CLIP."""
    from transformers import CLIPVisionModelWithProjection

    from latentdiff.model import StableDiffusion
    from latentdiff.weights import save
    from latentdiff.weights.clip_folder import has_clip, load_clip, save_clip
    from tests.tiny import clip_vision_config, sd_config

    config = sd_config()
    clip = CLIPModel(config.text, clip_vision_config(), 24)
    model = StableDiffusion(config).eval()
    model.text_encoder.load_state_dict(clip.text_model.state_dict())
    save(model, tmp_path / "m")
    assert not has_clip(tmp_path / "m")
    save_clip(clip, tmp_path / "m")
    back = load_clip(tmp_path / "m")
    for key, value in clip.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value)
    assert not (tmp_path / "m" / "image_encoder" / "clip_text.safetensors").exists()  # the towers are one
    pixels = torch.randn(2, 3, 16, 16)
    theirs = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "m" / "image_encoder").eval()
    with torch.no_grad():
        ours = clip.visual_projection(clip.vision_model(pixels)[1])
        torch.testing.assert_close(theirs(pixel_values=pixels).image_embeds, ours, atol=1e-5, rtol=0)


def test_the_clip_keeps_its_own_text_layers_beside_a_tower_trained_on(tmp_path):
    """After `train unet` with train_text, text_encoder/ (the UNet's) differs from the CLIP's text tower:
    save_clip keeps the CLIP's differing tensors, load_clip gives back the CLIP, the UNet's tower stays."""
    from latentdiff.model import StableDiffusion
    from latentdiff.weights import load, save
    from latentdiff.weights.clip_folder import load_clip, save_clip
    from latentdiff.weights.io import read_state_dict
    from tests.tiny import clip_vision_config, sd_config

    config = sd_config()
    clip = CLIPModel(config.text, clip_vision_config(), 24)
    model = StableDiffusion(config).eval()
    model.text_encoder.load_state_dict(clip.text_model.state_dict())
    with torch.no_grad():
        model.text_encoder.encoder.layers[0].mlp.fc1.weight.add_(0.5)
    save(model, tmp_path / "m")
    save_clip(clip, tmp_path / "m")
    own = read_state_dict(tmp_path / "m" / "image_encoder" / "clip_text.safetensors")[0]
    assert list(own) == ["text_model.encoder.layers.0.mlp.fc1.weight"]
    back = load_clip(tmp_path / "m")
    for key, value in clip.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0, msg=key)
    unet_tower = load(tmp_path / "m").text_encoder.encoder.layers[0].mlp.fc1.weight
    torch.testing.assert_close(unet_tower, model.text_encoder.encoder.layers[0].mlp.fc1.weight, rtol=0, atol=0)


def test_evaluate_reports_the_emoji_bar_with_the_folder_clip(monkeypatch, tmp_path, capsys):
    from latentdiff.cli import main
    from latentdiff.model import StableDiffusion
    from latentdiff.weights import save
    from latentdiff.weights.clip_folder import save_clip

    monkeypatch.setattr(emoji_data, "load_emoji", lambda size=64, **_: _synthetic_emoji(size))
    model = StableDiffusion.from_preset("tiny")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                              image_size=64, patch_size=16)  # fmt: skip
    clip = CLIPModel(model.config.text, vision, 24)
    clip.text_model.load_state_dict(model.text_encoder.state_dict())
    save(model, tmp_path / "m")
    args = ["evaluate", "--model", str(tmp_path / "m"), "--prompts", "2", "--steps", "2"]
    assert main(args) == 0
    assert "emoji name ranking: skipped (the model folder carries no CLIP" in capsys.readouterr().out
    save_clip(clip, tmp_path / "m")
    assert main(args + ["--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "VAE held-out PSNR" in out and "(emoji never trained on)" in out
    assert "emoji: CLIP ranks the prompted name in its top 5 for" in out and (tmp_path / "grid-emoji.png").exists()


def test_fashion_mnist_pool_captions_from_class_names(monkeypatch):
    from latentdiff.data import digits
    from latentdiff.train.clip import zero_shot_report
    from latentdiff.train.common import RecipeError, fashion_tensors

    labels = np.arange(30) % 10
    images = np.zeros((30, 28, 28), np.float32)
    images[:, 10:18, 10:18] = 1.0
    monkeypatch.setattr(digits, "load_fashion_mnist", lambda split="train", **_: digits.Digits(images, labels))
    data = DataConfig(source="fashion-mnist", canvas=16, pool=20, heldout=10)
    x, captions = pool_tensors(data)
    assert x.shape == (20, 3, 16, 16) and x.min() == -1 and x.max() == 1
    assert all(digits.FASHION_CLASSES[i] in c for i, c in zip(labels[:20], captions, strict=False))
    held, _, held_labels = fashion_tensors(data, heldout=True)
    assert len(held) == 10 and held_labels.tolist() == labels[:10].tolist()
    assert set(zero_shot_report(_tiny_clip(), data)) == {"fashion"}
    with pytest.raises(RecipeError, match="data.source must be shapes or fashion-mnist, got 'cifar'"):
        pool_tensors(dataclasses.replace(data, source="cifar"))
