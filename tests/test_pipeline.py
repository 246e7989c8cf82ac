"""txt2img against a tiny diffusers StableDiffusionPipeline (DDIM, guidance) on the same weights."""

from __future__ import annotations

import pytest
import torch

from latentdiff import weights
from latentdiff.model import StableDiffusion
from latentdiff.pipeline import Step, to_pil, txt2img
from latentdiff.tokenizer import CLIPTokenizer
from tests.tiny import diffusers_pipeline


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    CLIPTokenizer.default().save(folder)
    return folder


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1-eps", "sd2-v"])
def test_txt2img_matches_diffusers_ddim_with_guidance(tmp_path, tokenizer_folder, sd2):
    pipe = diffusers_pipeline(tokenizer_folder, sd2)
    pipe.save_pretrained(tmp_path / "pipe")
    ours = weights.load(tmp_path / "pipe")
    prompt, steps, scale, seed = "a red circle above a blue square", 4, 5.0, 3

    states = list(txt2img(ours, prompt, steps=steps, guidance_scale=scale, height=32, width=32, seed=seed))
    assert [s.index for s in states[:-1]] == list(range(steps))
    assert [s.t for s in states[:-1]] == [751, 501, 251, 1]  # "leading" spacing, offset 1
    mine = states[-1]

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))  # what txt2img draws
    theirs = pipe(prompt, num_inference_steps=steps, guidance_scale=scale, height=32, width=32, latents=noise,
                  output_type="pt").images  # fmt: skip
    assert mine.shape == theirs.shape == (1, 3, 32, 32)
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_txt2img_is_deterministic_and_checks_its_arguments():
    model = StableDiffusion.from_preset("tiny")
    first = list(txt2img(model, ["a", "b"], steps=2, height=16, width=16, seed=7))
    again = list(txt2img(model, ["a", "b"], steps=2, height=16, width=16, seed=7))
    assert isinstance(first[0], Step) and torch.equal(first[-1], again[-1])
    assert first[-1].shape == (2, 3, 16, 16) and 0 <= first[-1].min() and first[-1].max() <= 1
    assert [im.size for im in to_pil(first[-1])] == [(16, 16), (16, 16)]
    with pytest.raises(ValueError, match="height and width must be multiples of 2, got 15x16"):
        txt2img(model, "a", height=15, width=16)
    with pytest.raises(ValueError, match="steps must be between 1 and 1000, got 0"):
        txt2img(model, "a", steps=0)
