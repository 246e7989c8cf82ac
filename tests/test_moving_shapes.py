"""Moving shapes (text-to-video data): generator and checker agree, objects stay inside and apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff.data.moving_shapes import (
    DIRECTIONS,
    check_video,
    make_video_dataset,
    parse_motion_caption,
    render_video,
    reverse_caption,
    sample_moving_scene,
)
from latentdiff.data.shapes import _apart
from latentdiff.evaluate import motion_prompts, score_motion


def test_generator_and_checker_agree_on_300_videos():
    videos, captions = make_video_dataset(seed=0, n=300, frames=8)
    assert videos.shape == (300, 8, 64, 64, 3) and videos.dtype == np.uint8
    failed = [c for v, c in zip(videos, captions, strict=True) if not check_video(v, c).holds]
    # The shapes parser now and then misreads a small circle as a square (1 frame of these 2,400);
    # with 8 frames one misread fails the 90%-of-frames rule, so allow it in 1% of videos.
    assert len(failed) <= 3, failed
    assert {len(parse_motion_caption(c)["objects"]) for c in captions} == {1, 2}


def test_objects_stay_inside_and_apart_in_every_frame():
    rng = np.random.default_rng(1)
    for _ in range(200):
        moving = sample_moving_scene(rng, frames=12)
        for f in range(12):
            objects = moving.at(f).objects
            for obj in objects:
                x0, y0, x1, y1 = obj.box()
                assert 0 < x0 and 0 < y0 and x1 < 64 and y1 < 64
            if len(objects) == 2:
                assert _apart(*objects, 1.0)


def test_a_video_played_backwards_moves_the_wrong_way():
    rng = np.random.default_rng(2)
    moving = sample_moving_scene(rng, frames=8)
    video = render_video(moving, frames=8)
    assert check_video(video, moving.caption).holds
    reverse = check_video(video[::-1], moving.caption)
    assert not any(reverse.moved_right) and reverse.consistent


def test_a_video_played_backwards_is_its_reversed_caption():
    rng = np.random.default_rng(4)
    pairs = 0
    for _ in range(100):
        moving = sample_moving_scene(rng, frames=8)
        backwards = reverse_caption(moving.caption)
        assert reverse_caption(backwards) == moving.caption and backwards != moving.caption
        if check_video(render_video(moving, frames=8), moving.caption).holds:  # the checker's rare misread aside
            assert check_video(render_video(moving, frames=8)[::-1], backwards).holds
            pairs += 1
    assert pairs >= 95
    assert reverse_caption("a red circle moving left while a small blue square moves up on a white background") == (
        "a red circle moving right while a small blue square moves down on a white background"
    )


def test_a_frozen_or_recoloured_video_fails():
    rng = np.random.default_rng(3)
    moving = sample_moving_scene(rng, frames=8)
    video = render_video(moving, frames=8)
    still = np.repeat(video[:1], 8, axis=0)
    assert not any(check_video(still, moving.caption).moved_right)
    mixed = video.copy()
    mixed[4:] = 255 - mixed[4:]  # colours change half way: the named objects vanish from those frames
    result = check_video(mixed, moving.caption)
    assert not result.consistent and max(result.frames_right) <= 0.5


def test_captions_parse_and_bad_ones_are_named():
    parsed = parse_motion_caption("a small red circle moving left while a blue square moves up on a black background")
    assert parsed == {"objects": [("small", "red", "circle", "left"), (None, "blue", "square", "up")],
                      "background": "black"}  # fmt: skip
    assert set(DIRECTIONS) == {"left", "right", "up", "down"}
    with pytest.raises(ValueError, match="not a moving-shapes caption"):
        parse_motion_caption("a red circle above a blue square")


def test_motion_scores_count_frames_directions_and_consistency():
    videos, captions = make_video_dataset(seed=5, n=20, frames=8)
    clips = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 255  # (N, 3, F, H, W) in [0, 1]
    truth = score_motion(clips, captions)
    assert truth.frames_right >= 0.95 and truth.moved_right >= 0.95 and truth.consistent >= 0.95
    assert truth.holds >= 0.9 and len(truth.checks) == 20
    backwards = score_motion(clips.flip(2), captions)  # right objects, wrong way
    assert backwards.moved_right == 0 and backwards.frames_right >= 0.95 and backwards.holds == 0
    blank = score_motion(torch.zeros_like(clips), captions)  # a black canvas, nothing drawn
    assert blank.frames_right == 0 and blank.moved_right == 0 and blank.holds == 0


def test_motion_prompts_are_fresh_and_fixed():
    prompts = motion_prompts(50)
    assert prompts == motion_prompts(50) and len(set(prompts)) > 40
    assert {len(parse_motion_caption(p)["objects"]) for p in prompts} == {1, 2}
    _, training = make_video_dataset(seed=0, n=50, frames=8)
    assert prompts != training
