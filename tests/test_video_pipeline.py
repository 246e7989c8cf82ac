"""txt2video: shapes, seeds, and, over an identity-initialised video UNet, exactly the image pipeline per frame."""

from __future__ import annotations

import pytest
import torch

from latentdiff.model import StableDiffusion
from latentdiff.pipeline import initial_noise, last_images, txt2img
from latentdiff.samplers import SharedFrameNoise, noise_like
from latentdiff.video_pipeline import txt2video
from latentdiff.video_unet import VideoUNet


@pytest.fixture(scope="module")
def tiny():
    model = StableDiffusion.from_preset("tiny", seed=2)
    return model, VideoUNet.from_image_unet(model.unet, max_frames=4).eval()


def test_a_video_has_every_frame_and_repeats_with_its_seed(tiny):
    model, video = tiny
    states = list(txt2video(model, video, ["a red circle moving left", "a blue square moving up"], frames=3, steps=2))
    clip = states[-1]
    assert len(states) == 3 and clip.shape == (2, 3, 3, 64, 64) and 0 <= clip.min() and clip.max() <= 1
    again = last_images(txt2video(model, video, ["a red circle moving left", "a blue square moving up"], frames=3,
                                  steps=2))  # fmt: skip
    assert torch.equal(clip, again)


def test_with_identity_temporal_layers_each_frame_is_the_image_pipelines_image(tiny):
    model, video = tiny
    h = model.config.unet.sample_size
    start, _ = initial_noise(model, 1, h, h, seed=7)  # what txt2img starts from with seed 7
    frames = start[:, :, None].expand(-1, -1, 3, -1, -1).contiguous()  # the same noise in all 3 frames
    clip = last_images(txt2video(model, video, "a red circle", frames=3, steps=3, guidance_scale=3.0,
                                 sampler="euler", noise=frames))  # fmt: skip
    image = last_images(txt2img(model, "a red circle", steps=3, guidance_scale=3.0, seed=7, sampler="euler"))
    for f in range(3):
        torch.testing.assert_close(clip[:, :, f], image, atol=1e-5, rtol=0)


def test_bad_frame_counts_and_noise_shapes_are_named(tiny):
    model, video = tiny
    with pytest.raises(ValueError, match="frames must be between 1 and 4"):
        txt2video(model, video, "a red circle", frames=5)
    with pytest.raises(ValueError, match="noise must be"):
        txt2video(model, video, "a red circle", frames=2, noise=torch.zeros(1, 4, 3, 32, 32))


def test_shared_frame_noise_is_standard_normal_with_frames_correlated_by_the_share():
    generators = [torch.Generator().manual_seed(i) for i in range(64)]
    noise = noise_like(torch.empty(64, 4, 6, 8, 8), SharedFrameNoise(generators, 0.5))
    assert noise.std().item() == pytest.approx(1.0, abs=0.02)
    frames = noise.transpose(0, 2).reshape(6, -1)  # one row per frame
    correlation = torch.corrcoef(frames)[~torch.eye(6, dtype=torch.bool)]
    assert correlation.mean().item() == pytest.approx(0.5, abs=0.03)
    again = noise_like(torch.empty(64, 4, 6, 8, 8), SharedFrameNoise([torch.Generator().manual_seed(i) for i in
                                                                      range(64)], 0.5))  # fmt: skip
    assert torch.equal(noise, again)


def test_a_video_unet_trained_with_shared_noise_samples_from_it(tiny):
    model, video = tiny
    shared = VideoUNet.from_image_unet(model.unet, max_frames=4, shared_noise=0.9).eval()
    starts = []
    for net in (video, shared):  # its first call sees the start noise (times the sampler's input scale)
        calls = []
        hook = net.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(args[0][0]))
        list(txt2video(model, net, "a red circle", frames=4, steps=1, guidance_scale=1.0))
        hook.remove()
        starts.append(calls[0])
    independent, correlated = (torch.corrcoef(x.transpose(0, 1).reshape(4, -1)) for x in starts)
    off = ~torch.eye(4, dtype=torch.bool)
    assert correlated[off].min() > 0.8 > 0.3 > independent[off].abs().max()
