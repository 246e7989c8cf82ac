"""The shipped model: small enough, loadable by us and by diffusers, and it draws what it is asked."""

from __future__ import annotations

import json

import pytest

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
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.latent_channels == 4
    assert isinstance(pipe.image_encoder, CLIPVisionModelWithProjection)


def test_it_carries_the_clip_it_was_trained_with():
    from latentdiff.weights.clip_folder import load_clip

    model, clip = load(BUILTIN_MODEL), load_clip(BUILTIN_MODEL)
    for key, value in model.text_encoder.state_dict().items():
        assert (clip.text_model.state_dict()[key] == value.float()).all()
