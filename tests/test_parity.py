"""Our three SD networks against random-initialised diffusers / transformers twins.

The twin's state dict is copied into ours with strict=True (so every key name and shape must
match) and outputs must agree within 1e-5 in fp32 on CPU.
"""

from __future__ import annotations

import pytest
import torch

from latentdiff.clip import CLIPTextModel
from latentdiff.unet import UNet2DConditionModel
from latentdiff.vae import AutoencoderKL
from tests.tiny import TINY_EOS, TINY_VOCAB, clip_text_pair, unet_pair, vae_pair

ATOL = 1e-5


def _load_twin(ours_cls, cfg, ref):
    ours = ours_cls(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours


def _random_ids(batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Token ids as a tokenizer lays them out: BOS, words, EOS, then EOS padding."""
    ids = torch.randint(0, TINY_EOS - 1, (batch, 77), generator=gen)
    ids[:, 0] = TINY_EOS - 1
    for b in range(batch):
        end = 1 + (length + 3 * b) % 70
        ids[b, end:] = TINY_EOS
    return ids


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("batch", [1, 3])
def test_clip_text_matches_transformers(hidden_act, batch):
    cfg, ref = clip_text_pair(hidden_act)
    ours = _load_twin(CLIPTextModel, cfg, ref)
    ids = _random_ids(batch, 9, torch.Generator().manual_seed(batch))
    with torch.no_grad():
        theirs = ref(ids, output_hidden_states=True)
        mine = ours(ids)
    torch.testing.assert_close(mine.last_hidden_state, theirs.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.pooled, theirs.pooler_output, atol=ATOL, rtol=0)
    assert len(mine.hidden_states) == len(theirs.hidden_states) == cfg.num_hidden_layers + 1
    for a, b in zip(mine.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # SD 2.x-style conditioning on the penultimate layer, as diffusers' clip_skip computes it.
    expected = ref.final_layer_norm(theirs.hidden_states[-2])
    torch.testing.assert_close(ours.encode(ids, layer=-2), expected, atol=ATOL, rtol=0)


def test_clip_text_accepts_text_model_prefix_and_position_ids():
    cfg, ref = clip_text_pair()
    on_disk = {f"text_model.{k}": v for k, v in ref.state_dict().items()}
    on_disk["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    ours = CLIPTextModel(cfg)
    ours.load_state_dict(on_disk, strict=True)
    ids = _random_ids(2, 5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, ref(ids).last_hidden_state, atol=ATOL, rtol=0)
    assert TINY_VOCAB == cfg.vocab_size


@pytest.mark.parametrize("batch,size", [(1, (32, 32)), (2, (20, 28))])
def test_vae_matches_diffusers(batch, size):
    cfg, ref = vae_pair()
    ours = _load_twin(AutoencoderKL, cfg, ref)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        theirs = ref.encode(x).latent_dist
        mine = ours.encode(x)
        torch.testing.assert_close(mine.mean, theirs.mean, atol=ATOL, rtol=0)
        torch.testing.assert_close(mine.logvar, theirs.logvar, atol=ATOL, rtol=0)
        torch.testing.assert_close(mine.kl(), theirs.kl(), atol=1e-3, rtol=1e-5)  # a sum of thousands of terms
        # Decode an odd-sized latent too: the decoder has no divisibility constraint.
        for z in (mine.mean, torch.randn(batch, 4, 5, 7, generator=torch.Generator().manual_seed(7))):
            torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, atol=ATOL, rtol=0)


def test_vae_sample_uses_mean_and_std():
    cfg, ref = vae_pair()
    ours = _load_twin(AutoencoderKL, cfg, ref)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        post = ours.encode(x)
        a = post.sample(torch.Generator().manual_seed(3))
        b = ref.encode(x).latent_dist.sample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert not torch.allclose(a, post.mode())


def test_vae_rejects_indivisible_image():
    cfg, _ = vae_pair()
    with pytest.raises(ValueError, match="not divisible by the VAE's factor 4"):
        AutoencoderKL(cfg).encode(torch.zeros(1, 3, 18, 16))


@pytest.mark.parametrize("sd2", [False, True], ids=["sd1", "sd2"])
@pytest.mark.parametrize(
    "batch,size,t",
    [(1, (16, 16), 999), (2, (15, 9), [1, 500]), (3, (8, 12), 37.5)],
    ids=["b1-16x16", "b2-odd15x9", "b3-fractional-t"],
)
def test_unet_matches_diffusers(sd2, batch, size, t):
    cfg, ref = unet_pair(sd2)
    ours = _load_twin(UNet2DConditionModel, cfg, ref)
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 4, *size, generator=gen)
    context = torch.randn(batch, 77, 32, generator=gen)
    t = torch.tensor(t, dtype=torch.float32)
    with torch.no_grad():
        theirs = ref(x, t, encoder_hidden_states=context).sample
        mine = ours(x, t, context)
    assert mine.shape == (batch, 4, *size)
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_clip_vision_matches_transformers(batch):
    from transformers import CLIPVisionModel as RefVision

    from latentdiff.clip import CLIPVisionModel
    from tests.tiny import clip_model_pair

    _, vision, ref_model = clip_model_pair()
    ref = RefVision(ref_model.config.vision_config).eval()
    ours = _load_twin(CLIPVisionModel, vision, ref)
    pixels = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        theirs = ref(pixels)
        last, pooled = ours(pixels)
    torch.testing.assert_close(last, theirs.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, theirs.pooler_output, atol=ATOL, rtol=0)


def test_clip_model_logits_and_contrastive_loss_match_transformers():
    from latentdiff.clip import CLIPModel, contrastive_loss
    from tests.tiny import clip_model_pair

    text, vision, ref = clip_model_pair()
    ours = CLIPModel(text, vision, projection_dim=24).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ids = _random_ids(4, 6, torch.Generator().manual_seed(1))
    pixels = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = ref(input_ids=ids, pixel_values=pixels, return_loss=True)
        logits = ours(ids, pixels)
    torch.testing.assert_close(logits, theirs.logits_per_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(contrastive_loss(logits), theirs.loss, atol=ATOL, rtol=0)
