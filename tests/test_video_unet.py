"""The space-time UNet: identity over a 2D UNet at init, per-frame spatial layers, causal temporal mixing."""

from __future__ import annotations

import pytest
import torch

from latentdiff.unet import UNet2DConditionModel
from latentdiff.video_unet import VideoUNet
from tests.tiny import unet_config


def _inputs(frames: int, batch: int = 2, seed: int = 0):
    """Video latents (B, 4, F, 16, 16), timesteps (B,) and a text context (B, 77, 32)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, 16, 16, generator=g)
    context = torch.randn(batch, 77, 32, generator=g)
    return x, torch.tensor([10.0, 700.0])[:batch], context


def _per_frame(unet: UNet2DConditionModel, x, t, context) -> torch.Tensor:
    B, C, frames, H, W = x.shape
    out = unet(x.transpose(1, 2).reshape(B * frames, C, H, W), t.repeat_interleave(frames),
               context.repeat_interleave(frames, dim=0))  # fmt: skip
    return out.view(B, frames, -1, H, W).transpose(1, 2)


def _randomise_temporal(video: VideoUNet) -> None:
    torch.manual_seed(1)
    for layer in video.temporal:
        torch.nn.init.normal_(layer.to_out.weight, std=0.2)
        torch.nn.init.normal_(layer.relative_bias, std=0.5)
        if layer.space_time is not None:
            torch.nn.init.normal_(layer.space_time.pointwise.weight, std=0.2)


@pytest.mark.parametrize("frames", [1, 5])
@pytest.mark.parametrize(
    "options",
    [{}, {"frame_position": True}, {"frame_position": True, "temporal_text": True}, {"space_time_conv": True}],
)
def test_at_init_it_computes_the_image_unet_on_every_frame(frames, options):
    torch.manual_seed(0)
    image = UNet2DConditionModel(unet_config()).eval()
    video = VideoUNet.from_image_unet(image, max_frames=8, **options).eval()
    x, t, context = _inputs(frames)
    with torch.no_grad():
        out = video(x, t, context)
        expected = _per_frame(image, x, t, context)
    assert out.shape == (2, 4, frames, 16, 16)
    assert torch.equal(out, expected)  # the temporal layers add exactly zero


def test_spatial_layers_keep_frames_apart_and_temporal_layers_mix_them():
    video = VideoUNet(unet_config(), max_frames=8).eval()
    x, t, context = _inputs(6)
    changed = x.clone()
    changed[:, :, 3] += 1.0  # touch frame 3 only
    with torch.no_grad():
        a, b = video(x, t, context), video(changed, t, context)
        assert torch.equal(a[:, :, :3], b[:, :, :3]) and torch.equal(a[:, :, 4:], b[:, :, 4:])  # identity temporal
        _randomise_temporal(video)
        a, b = video(x, t, context), video(changed, t, context)
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-4  # now frame 0 hears of frame 3


@pytest.mark.parametrize("frame_position", [False, True])
def test_only_the_frame_position_tells_frames_with_equal_contents_apart(frame_position):
    # Why frame_position exists: softmax weights over equal values give equal outputs, so a
    # relative-position bias alone cannot make frame 0 of a still input differ from frame 5.
    video = VideoUNet(unet_config(), max_frames=8, frame_position=frame_position).eval()
    _randomise_temporal(video)
    x, t, context = _inputs(1)
    still = x.repeat(1, 1, 6, 1, 1)  # six equal frames
    with torch.no_grad():
        out = video(still, t, context)
    spread = (out - out[:, :, :1]).abs().max()
    if frame_position:
        assert spread > 1e-3
    else:
        assert spread < 1e-5


def test_the_frame_position_keeps_the_state_dict_keys():
    plain = VideoUNet(unet_config(), max_frames=8)
    positioned = VideoUNet(unet_config(), max_frames=8, frame_position=True)
    assert plain.state_dict().keys() == positioned.state_dict().keys()


@pytest.mark.parametrize("temporal_text", [False, True])
def test_temporal_text_lets_the_temporal_layers_read_the_caption(temporal_text):
    # Two captions, the same video: with identity spatial cross-attention the only way the caption
    # can change the output is through the temporal layers, and only when they read it.
    torch.manual_seed(0)
    video = VideoUNet(unet_config(), max_frames=8, temporal_text=temporal_text).eval()
    _randomise_temporal(video)
    for block in video.unet.modules():
        if hasattr(block, "attn2"):  # silence the spatial layers' text path
            torch.nn.init.zeros_(block.attn2.to_out[0].weight)
            torch.nn.init.zeros_(block.attn2.to_out[0].bias)
    x, t, context = _inputs(4, batch=1)
    with torch.no_grad():
        a, b = video(x, t, context), video(x, t, context + 1.0)
    if temporal_text:
        assert (a - b).abs().max() > 1e-4
    else:
        assert torch.equal(a, b)


@pytest.mark.parametrize("space_time_conv", [False, True])
def test_causal_temporal_attention_never_looks_ahead(space_time_conv):
    video = VideoUNet(unet_config(), max_frames=8, causal=True, space_time_conv=space_time_conv).eval()
    _randomise_temporal(video)
    x, t, context = _inputs(6)
    changed = x.clone()
    changed[:, :, 3] += 1.0
    with torch.no_grad():
        a, b = video(x, t, context), video(changed, t, context)
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3], atol=1e-6, rtol=0)  # frames before 3 cannot see it
    assert (a[:, :, 4:] - b[:, :, 4:]).abs().max() > 1e-4  # frames after it can


def test_the_space_time_conv_moves_a_spot_from_frame_to_frame():
    # What it is for: one kernel that copies each pixel from the frame before, one pixel to the
    # left, moves a spot one pixel right per frame; temporal attention alone sees one pixel at a time.
    from latentdiff.video_unet import SpaceTimeConv

    conv = SpaceTimeConv(8, groups=1, causal=True)
    torch.nn.init.zeros_(conv.depthwise.weight)
    conv.depthwise.weight.data[:, 0, 1, 1, 0] = 1.0  # (frame before, same row, column to the left)
    torch.nn.init.zeros_(conv.depthwise.bias)
    conv.pointwise.weight.data[:, :, 0, 0, 0] = torch.eye(8)
    video = torch.zeros(1, 8, 3, 6, 6)  # (B, C, F, H, W): a spot at column 2 in frame 1 only
    video[:, :, 1, 3, 2] = 1.0
    x = video.transpose(1, 2).reshape(3, 8, 6, 6)
    added = (conv(x, frames=3) - x).view(1, 3, 8, 6, 6)
    assert added[0, 2, :, 3].argmax(-1).tolist() == [3] * 8  # frame 2 gets it one column to the right
    assert added[0, 1].abs().max() < added[0, 2].abs().max() / 100  # and frame 1 nothing from frame 0


def test_too_many_frames_is_a_clear_error():
    video = VideoUNet(unet_config(), max_frames=4)
    with pytest.raises(ValueError, match="at most 4"):
        video(*_inputs(5))


def test_a_tiny_video_denoiser_learns():
    torch.manual_seed(0)
    video = VideoUNet(unet_config(), max_frames=4)
    x0, t, context = _inputs(4, batch=2)
    optimizer = torch.optim.AdamW(video.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=g)
    losses = []
    for _ in range(25):  # one fixed noisy batch: the loss must fall as the net fits it
        loss = torch.nn.functional.mse_loss(video(0.6 * x0 + 0.8 * noise, t, context), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in video.temporal.parameters())
