"""The shipped model: small enough, loadable by us and by diffusers, and it draws what it is asked."""

from __future__ import annotations

import json

import pytest
import torch

from latentdiff.cli import BUILTIN_MODEL
from latentdiff.evaluate import fidelity, shapes_prompts
from latentdiff.weights import load

pytestmark = pytest.mark.skipif(not (BUILTIN_MODEL / "model_index.json").exists(), reason="no built-in model")


def test_it_fits_the_size_budget():
    files = [p for p in BUILTIN_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 48 * 2**20
    assert all(p.stat().st_size <= 16 * 2**20 for p in files if p.suffix == ".safetensors")
    assert (BUILTIN_MODEL / "README.md").exists()  # the model card
    assert json.loads((BUILTIN_MODEL / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_it_draws_prompts_from_a_seed_it_never_saw():
    # 40.0% on 300 prompts (model card); 50 prompts at that rate fall below 20% with p < 0.002.
    result = fidelity(load(BUILTIN_MODEL), shapes_prompts(50, seed=7), steps=20)
    assert result.score >= 0.2, result.score


def test_diffusers_loads_it_with_its_clip_image_encoder():
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPVisionModelWithProjection

    pipe = StableDiffusionPipeline.from_pretrained(BUILTIN_MODEL, safety_checker=None)
    assert pipe.unet.config.sample_size == 8 and pipe.vae.config.latent_channels == 4
    assert isinstance(pipe.image_encoder, CLIPVisionModelWithProjection)


def test_it_carries_the_clip_it_was_trained_with():
    """The image tower beside the text encoder is the one trained with it: zero-shot colour on fresh
    one-object scenes is 100% (benchmarks/clip_zero_shot.py); a mismatched pair would be near 1 in 8."""
    from latentdiff.data.shapes import COLOURS, SHAPES, parse_caption
    from latentdiff.train.common import DataConfig, shapes_tensors
    from latentdiff.weights.clip_folder import open_clip_source
    from latentdiff.zero_shot import classify, top_k_accuracy

    clip = open_clip_source(BUILTIN_MODEL)
    images, captions = shapes_tensors(DataConfig(heldout=100), heldout=True)
    single = [
        (i, parse_caption(c)["objects"][0][1]) for i, c in enumerate(captions) if parse_caption(c)["relation"] is None
    ]
    probs = classify(clip.model, images[[i for i, _ in single]], list(COLOURS), [f"a {{}} {s}" for s in SHAPES])
    assert top_k_accuracy(probs, torch.tensor([list(COLOURS).index(c) for _, c in single])) >= 0.9
