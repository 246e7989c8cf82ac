"""DeepCache (unet.DeepFeatures): the cheap pass on features kept from the same input equals the full pass."""

from __future__ import annotations

import pytest
import torch

from latentdiff.model import StableDiffusion
from latentdiff.pipeline import last_images, txt2img
from latentdiff.unet import DeepFeatures


@pytest.fixture(scope="module")
def model():
    return StableDiffusion.from_preset("tiny")


def _inputs(model, batch=2):
    gen = torch.Generator().manual_seed(0)
    cfg = model.config.unet
    x = torch.randn(batch, cfg.in_channels, 8, 8, generator=gen)
    return x, torch.tensor(400.0), torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)


@torch.no_grad()
def test_the_top_level_pass_on_its_own_kept_features_is_the_full_pass(model):
    x, t, context = _inputs(model)
    full = model.unet(x, t, context)
    cache = DeepFeatures(model.unet, interval=2)
    assert torch.equal(cache(x, t, context), full) and not cache.reuse  # call 1: the whole UNet, features kept
    again = cache(x, t, context)  # call 2: only the top level runs, on call 1's deep features
    assert cache.reuse
    torch.testing.assert_close(again, full, atol=1e-5, rtol=0)
    moved = cache(x + 0.1, t - 50, context)  # call 3: whole again
    assert not cache.reuse and torch.equal(moved, model.unet(x + 0.1, t - 50, context))
    cheap = cache(x, t, context)  # call 4: stale deep features (from call 3's input): an approximation
    assert cache.reuse and not torch.allclose(cheap, full, atol=1e-5)


@torch.no_grad()
def test_interval_one_is_exact_and_the_pipeline_runs_cached(model):
    exact = last_images(txt2img(model, "a red circle", steps=4, sampler="euler", height=32, width=32))
    same = last_images(txt2img(model, "a red circle", steps=4, sampler="euler", height=32, width=32, deep_cache=1))
    assert torch.equal(exact, same)
    calls = []
    unet_forward = model.unet.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["deep"].reuse)
        return unet_forward(*args, **kwargs)

    model.unet.forward = counting
    try:
        cached = last_images(txt2img(model, "a red circle", steps=4, sampler="euler", height=32, width=32,
                                     deep_cache=2))  # fmt: skip
    finally:
        del model.unet.forward
    assert calls == [False, True, False, True] and cached.shape == exact.shape and torch.isfinite(cached).all()
    with pytest.raises(ValueError, match="interval must be 1 or more"):
        DeepFeatures(model.unet, 0)
    with pytest.raises(ValueError, match="after_layer"):
        model.unet(*_inputs(model), after_layer=lambda h, i: h, deep=DeepFeatures(model.unet, 2))
