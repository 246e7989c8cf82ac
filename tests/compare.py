"""One comparison used by the tiny round trips and the real-weights check: our model and a
diffusers StableDiffusionPipeline must give the same outputs, part by part, on the same inputs."""

from __future__ import annotations

import torch

PROMPTS = ["a photograph of an astronaut riding a horse", "a red circle to the left of a blue square"]


@torch.no_grad()
def assert_same_outputs(ours, pipe, latent: int = 8, atol: float = 1e-5, rtol: float = 0.0) -> None:
    """Tokenizer ids, text encoder, one UNet call (batch 2), VAE decode and encode."""
    ids = ours.tokenizer(PROMPTS).input_ids
    ref_ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(ids, ref_ids.input_ids)
    context = ours.text_encoder(ids).last_hidden_state
    torch.testing.assert_close(context, pipe.text_encoder(ids).last_hidden_state, atol=atol, rtol=rtol)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, latent, latent, generator=gen)
    t = torch.tensor([999.0, 500.0])
    torch.testing.assert_close(ours.unet(x, t, context), pipe.unet(x, t, context).sample, atol=atol, rtol=rtol)

    image = ours.vae.decode(x[:1])
    torch.testing.assert_close(image, pipe.vae.decode(x[:1]).sample, atol=atol, rtol=rtol)
    torch.testing.assert_close(
        ours.vae.encode(image).mean, pipe.vae.encode(image).latent_dist.mean, atol=atol, rtol=rtol
    )
