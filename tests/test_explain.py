"""The explainer: attention maps equal the reference's, recording changes nothing, every artefact is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.cli import main
from latentdiff.explain import CrossAttentionRecorder, ExplainSettings, explain, record, words
from latentdiff.explain.alignment import two_object_prompts, word_masses
from latentdiff.explain.forward import noise_image
from latentdiff.explain.guidance import default_swap, swap_word
from latentdiff.explain.trajectory import fit_preview, preview
from latentdiff.model import StableDiffusion
from latentdiff.pipeline import last_images, txt2img
from latentdiff.tokenizer import CLIPTokenizer
from latentdiff.unet import UNet2DConditionModel
from tests.tiny import unet_pair


@pytest.fixture(scope="module")
def tiny():
    return StableDiffusion.from_preset("tiny", seed=1)


def test_recording_attention_leaves_the_image_bit_identical(tiny):
    args = dict(prompt=["a red circle", "a blue square"], steps=3, guidance_scale=3.0, seed=4, sampler="euler")
    plain = last_images(txt2img(tiny, **args))
    with CrossAttentionRecorder(tiny.unet, prompts=2, size=(64, 64)) as recorder:
        recorded = last_images(txt2img(tiny, **args))
    assert torch.equal(plain, recorded)
    assert recorder.heat.shape == (2, 77, 64, 64)
    assert recorder.calls == {(32, 32): 3 * 3, (16, 16): 3}  # 3 steps x (1 down + 2 up; 1 mid) transformers
    after = last_images(txt2img(tiny, **args))  # the hooks are gone after the with-block
    assert torch.equal(plain, after) and not tiny.unet.up_blocks[1].attentions[0]._forward_pre_hooks


class _ProbabilityCapture:
    """A diffusers attention processor that keeps softmax(q k^T / sqrt(d)) beside the usual output."""

    def __init__(self, store: list):
        from diffusers.models.attention_processor import AttnProcessor

        self.inner, self.store = AttnProcessor(), store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, None)  # (B * h, N, T)
        self.store.append(probs.view(hidden_states.shape[0], attn.heads, *probs.shape[1:]))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask)


def test_recorded_maps_equal_diffusers_attention_probabilities():
    cfg, ref = unet_pair()
    ours = UNet2DConditionModel(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    store: list = []
    for name, module in ref.named_modules():
        if name.endswith("attn2"):
            module.set_processor(_ProbabilityCapture(store))
    gen = torch.Generator().manual_seed(0)
    x, context, t = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 32, generator=gen), torch.tensor(500.0)
    with torch.no_grad(), CrossAttentionRecorder(ours, prompts=2, size=(16, 16)) as recorder:
        ref(x, t, encoder_hidden_states=context)
        ours(x, t, context)
    expected: dict = {}
    for probs in store:  # (B, h, N, T) per layer call -> mean over heads, summed per resolution
        side = int(probs.shape[2] ** 0.5)
        maps = probs.mean(dim=1).transpose(1, 2).reshape(2, 77, side, side)
        expected[(side, side)] = expected.get((side, side), 0) + maps
    assert set(expected) == set(recorder.sums) == {(16, 16), (8, 8), (4, 4)}
    for size, maps in expected.items():
        torch.testing.assert_close(recorder.sums[size], maps, atol=1e-6, rtol=0)


def test_heat_is_a_distribution_over_the_tokens_at_every_pixel(tiny):
    with CrossAttentionRecorder(tiny.unet, prompts=1, size=(64, 64)) as recorder:
        last_images(txt2img(tiny, "a red circle", steps=2, guidance_scale=1.0, sampler="euler"))
    per_pixel = recorder.heat[0].sum(dim=0)  # each layer call's probabilities sum to 1 over the 77 tokens
    torch.testing.assert_close(per_pixel, torch.full_like(per_pixel, sum(recorder.calls.values())), atol=0.05, rtol=0)


def test_words_group_the_bpe_pieces_of_each_word():
    tok = CLIPTokenizer.default()
    found = words(tok, "a reddish hexagonal, circle")
    assert [w.text for w in found] == ["a", "reddish", "hexagonal", ",", "circle"]
    assert all(w.pieces[-1].endswith("</w>") for w in found)
    flat = [p for w in found for p in w.positions]
    assert flat == list(range(1, len(tok.encode("a reddish hexagonal, circle")) + 1))  # BOS is 0


def test_trajectory_keeps_every_step_and_ends_on_the_pipelines_image(tiny):
    run = record(tiny, "a red circle", seed=2, steps=4, sampler="euler", guidance_scale=3.0)
    C, h = tiny.config.unet.out_channels, tiny.config.unet.sample_size
    assert run.x.shape == (5, C, h, h) and run.x0.shape == run.eps.shape == (4, C, h, h)
    assert run.heat.shape == (77, 64, 64)
    # Euler steps x_next = x + eps * (sigma_next - sigma): holds only if the recorded start and noises
    # are the ones the sampler used.
    step = (run.sigmas[1:] - run.sigmas[:-1])[:, None, None, None]
    torch.testing.assert_close(run.x[1:], run.x[:-1] + run.eps * step, atol=1e-3, rtol=1e-4)
    plain = last_images(txt2img(tiny, "a red circle", steps=4, guidance_scale=3.0, seed=2, sampler="euler"))
    assert torch.equal(run.image, plain[0])


def test_fit_preview_recovers_a_linear_latent_to_rgb_map():
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(4, 8, 8, generator=gen)
    weights = torch.cat([torch.randn(4, 3, generator=gen) * 0.02, torch.full((1, 3), 0.5)])  # stays inside [0, 1]
    image = preview(latent[None], weights)[0]
    assert 0 < image.min() and image.max() < 1
    fitted = fit_preview(latent, torch.nn.functional.interpolate(image[None], scale_factor=4)[0])  # a 4x bigger image
    torch.testing.assert_close(fitted, weights, atol=2e-3, rtol=0)


def test_swap_word_replaces_one_whole_word_and_names_bad_input():
    assert swap_word("a red circle above a red square", "red=blue") == "a blue circle above a red square"
    assert swap_word("a reddish red circle", "red=green") == "a reddish green circle"
    with pytest.raises(ValueError, match="'pink' is not in the prompt"):
        swap_word("a red circle", "pink=blue")
    with pytest.raises(ValueError, match="OLD=NEW"):
        swap_word("a red circle", "red")
    assert default_swap("a large red circle") == "red=green"  # the next colour of the palette
    assert default_swap("a photo of a cat") is None


def test_forward_diffusion_noises_the_latent_by_the_schedule(tiny):
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    z0, examples = noise_image(tiny, image, "a red circle", [0, 500, 999])
    assert [e.t for e in examples] == [0, 500, 999]
    assert examples[0].alpha_bar > examples[1].alpha_bar > examples[2].alpha_bar
    for e in examples:
        expected = e.alpha_bar**0.5 * z0 + (1 - e.alpha_bar) ** 0.5 * e.eps
        torch.testing.assert_close(e.x_t, expected, atol=1e-4, rtol=0)
        assert np.isfinite(e.mse) and e.pixels.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="0..999"):
        noise_image(tiny, image, "a red circle", [1000])


def test_explain_writes_every_artefact_and_a_self_contained_page(tiny, tmp_path):
    settings = ExplainSettings(prompt="a red circle above a blue square", steps=3, sampler="euler", scales=(1.0, 4.0),
                               timesteps=(0, 999), guidance_scale=3.0)  # fmt: skip
    report = explain(tiny, settings, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"trajectory.png", "schedule.png", "attention.png", "guidance.png", "pair.png", "forward.png",
                     "image.png", "denoising.gif", "denoising.mp4", "explain.json", "report.html"}  # fmt: skip
    gif = Image.open(tmp_path / "denoising.gif")
    assert gif.n_frames == 4  # one per step, then the final image
    assert (tmp_path / "denoising.mp4").read_bytes()[4:8] == b"ftyp"
    numbers = json.loads((tmp_path / "explain.json").read_text())
    assert numbers["settings"]["swap"] == "red=green"
    assert [w["word"] for w in numbers["attention"]["words"]] == "a red circle above a blue square".split()
    shares = numbers["attention"]
    assert abs(shares["share_start_token"] + shares["share_words"] + shares["share_end_and_padding"] - 1) < 1e-3
    assert len(numbers["prompt_pair"]["x0_rms_difference"]) == 3
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and page.count("data:image/gif;base64,") == 1
    assert 'src="' not in page.replace('src="data:', "")  # no image outside the page itself
    assert json.loads(json.dumps(report.numbers)) == numbers


def test_explain_cli_runs_and_names_bad_input_in_one_line(tiny, tmp_path, capsys):
    from latentdiff import weights

    folder = tmp_path / "tiny"
    weights.save(tiny, folder)
    base = ["explain", "--model", str(folder), "--prompt", "a red circle", "--steps", "2", "--scales", "1,3"]
    out = tmp_path / "report"
    assert main([*base, "--out", str(out), "--no-mp4", "--timesteps", "10,900"]) == 0
    assert (out / "report.html").exists() and not (out / "denoising.mp4").exists()
    assert "report.html" in capsys.readouterr().out
    for extra, message in (
        (["--swap", "pink=blue"], "'pink' is not in the prompt"),
        (["--timesteps", "5,1000"], "timesteps must lie in 0..999"),
        (["--scales", "1,x"], "comma-separated numbers"),
        (["--out", str(folder / "model_index.json")], "is not a folder"),
    ):
        assert main([*base, "--out", str(tmp_path / "other"), *extra]) == 2  # a later --out wins
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_alignment_scores_each_word_against_its_own_object():
    own = np.zeros((8, 8), bool)
    own[:4] = True
    other = ~own
    hot = torch.zeros(8, 8)
    hot[:4] = 1.0  # all mass on the first object's half
    maps = {"red": hot, "circle": hot, "blue": 1 - hot, "square": torch.full((8, 8), 0.5)}
    named = [(None, "red", "circle"), (None, "blue", "square")]
    scored = word_masses(maps, [own, other], named)
    right = [o >= 2 * x for _, o, x in scored]
    assert [k for k, _, _ in scored] == ["colour", "shape", "colour", "shape"]
    assert right == [True, True, True, False]  # "square" spreads evenly: not on its object
    prompts = two_object_prompts(20)
    from latentdiff.data.shapes import parse_caption

    for p in prompts:
        (_, c1, s1), (_, c2, s2) = parse_caption(p)["objects"]
        assert c1 != c2 and s1 != s2


def test_identical_word_maps_pass_by_mass_on_the_larger_object_only_and_never_by_density(tiny, monkeypatch):
    """The density rate exists to expose this: flat maps score 50% by mass, from object sizes alone."""
    from latentdiff.explain import alignment

    side = tiny.config.unet.sample_size * tiny.config.vae.downsample_factor
    small = np.zeros((side, side), bool)
    small[: side // 4] = True  # object 0 covers a quarter of the image, object 1 the rest
    monkeypatch.setattr(alignment, "_matched_masks", lambda image, named: [small, ~small])
    monkeypatch.setattr(alignment, "word_map", lambda heat, word: torch.ones(heat.shape[1:]))
    a = alignment.attention_alignment(tiny, n=3, steps=2, batch=2)
    assert (a.prompts_scored, a.prompts_drawn, a.words_scored) == (3, 3, 12)
    assert a.word_rate == 0.5 and a.density_rate == 0.0 and a.prompt_rate == 0.0
    assert a.by_kind == {"colour": [3, 6], "shape": [3, 6]}
