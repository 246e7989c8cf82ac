"""txt2img / img2img against tiny diffusers pipelines on the same weights and the same seed.

diffusers draws everything from one seeded CPU generator in a fixed order (posterior sample,
initial noise, then each ancestral step's noise); ours draws from a generator seeded with the
same seed for image 0, in the same order, so the images must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff import weights
from latentdiff.model import StableDiffusion
from latentdiff.pipeline import Step, img2img, inpaint, to_pil, txt2img
from latentdiff.tokenizer import CLIPTokenizer
from tests.tiny import diffusers_pipeline

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    CLIPTokenizer.default().save(folder)
    return folder


@pytest.fixture(scope="module", params=[False, True], ids=["sd1-eps", "sd2-v"])
def pair(request, tokenizer_folder, tmp_path_factory):
    """(ours, diffusers pipeline) with identical weights, via diffusers' save_pretrained."""
    pipe = diffusers_pipeline(tokenizer_folder, request.param)
    folder = tmp_path_factory.mktemp("pipe")
    pipe.save_pretrained(folder)
    return weights.load(folder), pipe


def _scheduler(pipe, sampler: str):
    import diffusers

    # Settings as keyword arguments: diffusers drops config keys it marks as defaults.
    leading = {"steps_offset": 1, "timestep_spacing": "leading"}
    if sampler == "ddim":
        return diffusers.DDIMScheduler.from_config(pipe.scheduler.config, **leading)
    if sampler == "euler_ancestral":
        return diffusers.EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, **leading)
    # Karras sigmas over the range SD's leading spacing spans, as our pipeline walks them.
    return diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config, **leading, use_karras_sigmas=True)


@pytest.mark.parametrize(
    "sampler,sigmas,scale",
    [("ddim", "default", 5.0), ("euler_ancestral", "default", 1.0), ("euler", "karras", 7.5)],
)
def test_txt2img_matches_diffusers(pair, sampler, sigmas, scale):
    ours, pipe = pair
    pipe.scheduler = _scheduler(pipe, sampler)
    states = list(txt2img(ours, PROMPT, steps=4, guidance_scale=scale, height=32, width=32, seed=3,
                          sampler=sampler, sigmas=sigmas))  # fmt: skip
    assert [s.index for s in states[:-1]] == [0, 1, 2, 3] and all(isinstance(s, Step) for s in states[:-1])
    generator = torch.Generator().manual_seed(3)
    theirs = pipe(PROMPT, num_inference_steps=4, guidance_scale=scale, height=32, width=32,
                  generator=generator, output_type="pt").images  # fmt: skip
    assert states[-1].shape == theirs.shape == (1, 3, 32, 32)
    torch.testing.assert_close(states[-1], theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler,scale", [("ddim", 4.0), ("euler_ancestral", 1.0)])
def test_img2img_matches_diffusers(pair, sampler, scale):
    from diffusers import StableDiffusionImg2ImgPipeline

    ours, pipe = pair
    ref = StableDiffusionImg2ImgPipeline(**pipe.components)
    ref.scheduler = _scheduler(pipe, sampler)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mine = list(img2img(ours, PROMPT, image, strength=0.6, steps=5, guidance_scale=scale, seed=11, sampler=sampler))
    assert len(mine) == 3 + 1  # int(5 * 0.6) steps, then the image
    theirs = ref(PROMPT, image=image, strength=0.6, num_inference_steps=5, guidance_scale=scale,
                 generator=torch.Generator().manual_seed(11), output_type="pt").images  # fmt: skip
    torch.testing.assert_close(mine[-1], theirs, atol=1e-4, rtol=0)


def test_each_image_of_a_batch_is_its_seed_alone():
    model = StableDiffusion.from_preset("tiny")
    kwargs = dict(steps=3, height=16, width=16, sampler="euler_ancestral")
    batch = list(txt2img(model, "a cat", batch=4, seed=10, **kwargs))[-1]
    singles = [list(txt2img(model, "a cat", seed=10 + i, **kwargs))[-1] for i in range(4)]
    # The noise is the same; batched kernels (oneDNN, BLAS) may round differently, by ~1e-6.
    for i, single in enumerate(singles):
        torch.testing.assert_close(batch[i : i + 1], single, atol=1e-5, rtol=0)
        a, b = (np.asarray(to_pil(im)[0], dtype=int) for im in (batch[i : i + 1], single))
        assert np.abs(a - b).max() <= 1
    again = list(txt2img(model, "a cat", batch=4, seed=10, **kwargs))[-1]
    assert torch.equal(batch, again)


def test_arguments_are_checked_at_the_call():
    model = StableDiffusion.from_preset("tiny")
    with pytest.raises(ValueError, match="height and width must be positive multiples of 2, got 15x16"):
        txt2img(model, "a", height=15, width=16)
    with pytest.raises(ValueError, match="steps must be between 1 and 1000, got 0"):
        txt2img(model, "a", steps=0)
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        txt2img(model, "a", sampler="plms")
    with pytest.raises(ValueError, match="strength must be between 0 and 1, got 1.5"):
        img2img(model, "a", torch.zeros(1, 3, 16, 16), strength=1.5)
    with pytest.raises(ValueError, match=r"image must be \(B, 3, H, W\), got \(3, 16, 16\)"):
        img2img(model, "a", torch.zeros(3, 16, 16))


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 4:20] = 1.0  # repaint a square, keep the rest
    return mask


@pytest.mark.parametrize("sampler,strength", [("ddim", 1.0), ("euler_ancestral", 0.7)])
def test_inpaint_by_latent_blending_matches_diffusers(pair, sampler, strength):
    from diffusers import StableDiffusionInpaintPipeline

    ours, pipe = pair
    ref = StableDiffusionInpaintPipeline(**pipe.components)
    ref.scheduler = _scheduler(pipe, sampler)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mine = list(inpaint(ours, PROMPT, image, _mask(), strength=strength, steps=4, guidance_scale=3.0, seed=5,
                        sampler=sampler))[-1]  # fmt: skip
    theirs = ref(PROMPT, image=image, mask_image=_mask(), strength=strength, num_inference_steps=4, height=32, width=32,
                 guidance_scale=3.0, generator=torch.Generator().manual_seed(5), output_type="pt").images  # fmt: skip
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1-eps", "sd2-v"])
def test_inpaint_with_a_9_channel_unet_matches_diffusers(tokenizer_folder, tmp_path, sd2):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = diffusers_pipeline(tokenizer_folder, sd2, in_channels=9)
    ref = StableDiffusionInpaintPipeline(**pipe.components)
    ref.save_pretrained(tmp_path / "inpaint")
    ours = weights.load(tmp_path / "inpaint")
    assert ours.config.unet.in_channels == 9
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mine = list(inpaint(ours, PROMPT, image, _mask(), steps=3, guidance_scale=6.0, seed=8, sampler="ddim"))[-1]
    ref.scheduler = _scheduler(pipe, "ddim")
    theirs = ref(PROMPT, image=image, mask_image=_mask(), num_inference_steps=3, guidance_scale=6.0, height=32,
                 width=32, generator=torch.Generator().manual_seed(8), output_type="pt").images  # fmt: skip
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_inpaint_checks_the_mask():
    model = StableDiffusion.from_preset("tiny")
    with pytest.raises(ValueError, match=r"mask must be \(B, 1, 16, 16\) like the image, got \(1, 1, 8, 8\)"):
        inpaint(model, "a", torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 8, 8))


def test_long_prompts_warn_naming_the_dropped_words():
    from latentdiff.model import PromptTruncatedWarning

    model = StableDiffusion.from_preset("tiny")
    with pytest.warns(PromptTruncatedWarning, match='15 over the 75-token limit; dropped: "a red circle'):
        txt2img(model, "a red circle " * 30, steps=1, height=16, width=16).__next__()


def test_guidance_interval_runs_the_noisy_steps_unguided(pair):
    """guidance_max_sigma: steps above it run the conditional half alone (batch 1), the rest guided."""
    ours, _ = pair
    run = dict(steps=4, guidance_scale=5.0, height=32, width=32, seed=3, sampler="euler", sigmas="karras")
    sigmas = [s.sigma for s in list(txt2img(ours, PROMPT, **run))[:-1]]
    batches = []
    hook = ours.unet.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    try:
        between = float((sigmas[1] + sigmas[2]) / 2)  # the first two steps above it, the last two below
        mixed = list(txt2img(ours, PROMPT, guidance_max_sigma=between, **run))[-1]
    finally:
        hook.remove()
    assert batches == [1, 1, 2, 2]
    always = list(txt2img(ours, PROMPT, **run))[-1]
    assert torch.equal(list(txt2img(ours, PROMPT, guidance_max_sigma=1e9, **run))[-1], always)
    never = list(txt2img(ours, PROMPT, **{**run, "guidance_scale": 1.0}))[-1]
    assert torch.equal(list(txt2img(ours, PROMPT, guidance_max_sigma=0.0, **run))[-1], never)
    assert not torch.equal(mixed, always) and not torch.equal(mixed, never)
    with pytest.raises(ValueError, match="guidance_max_sigma must be a noise level >= 0"):
        list(txt2img(ours, PROMPT, guidance_max_sigma=-1.0, **run))
