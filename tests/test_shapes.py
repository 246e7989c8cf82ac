"""The shapes world: generator and parser agree, scenes keep SHAPES.md's rules, wrong captions fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff.data.shapes import (
    GAP,
    MIN_OFFSET,
    SIZES,
    caption_holds,
    caption_mismatch,
    make_dataset,
    parse_caption,
    parse_image,
    render,
    sample_scene,
    scenes,
)


def _true_relation(a, b) -> str:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) > abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def test_generator_and_parser_agree_on_1000_scenes():
    rng = np.random.default_rng(2026)
    for _ in range(1000):
        scene = sample_scene(rng)
        image = render(scene)
        assert caption_holds(image, scene.caption), scene.caption
        background, regions = parse_image(image)
        assert background == scene.background
        truth = sorted((o.colour, o.shape, o.size) for o in scene.objects)
        assert sorted((r.colour, r.shape, r.size) for r in regions) == truth, scene.caption


def test_scenes_keep_the_rules():
    rng = np.random.default_rng(7)
    counts = {"size": 0, "sizes": 0, "background": 0, "two": 0}
    n = 1000
    for _ in range(n):
        scene = sample_scene(rng)
        for obj in scene.objects:
            lo, hi = SIZES[obj.size]
            assert lo <= obj.side <= hi
            x0, y0, x1, y1 = obj.box()
            assert 0 < x0 and 0 < y0 and x1 < 64 and y1 < 64
        if scene.relation:
            a, b = scene.objects
            counts["two"] += 1
            assert _true_relation(a, b) == scene.relation
            main = max(abs(b.cx - a.cx), abs(b.cy - a.cy))
            assert main >= MIN_OFFSET
        named = parse_caption(scene.caption)
        counts["sizes"] += len(named["objects"])
        counts["size"] += sum(size is not None for size, _, _ in named["objects"])
        counts["background"] += named["background"] is not None
    assert 0.4 < counts["two"] / n < 0.6
    assert 0.4 < counts["size"] / counts["sizes"] < 0.6  # optional parts kept about half the time
    assert 0.4 < counts["background"] / n < 0.6


def _box_gap(a, b) -> float:
    ax0, ay0, ax1, ay1 = a.box()
    bx0, by0, bx1, by1 = b.box()
    return max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)


def test_a_training_pool_can_ask_for_more_room_and_more_pairs():
    spec = scenes(11, 2000)
    roomy = scenes(11, 2000, gap=6, two_share=0.7)
    spec_gaps = [_box_gap(*s.objects) for s in spec if len(s.objects) == 2]
    roomy_gaps = [_box_gap(*s.objects) for s in roomy if len(s.objects) == 2]
    assert min(spec_gaps) >= GAP and min(spec_gaps) < 4  # the spec's pairs do come close
    assert min(roomy_gaps) >= 6
    assert 0.45 < len(spec_gaps) / 2000 < 0.55 and 0.65 < len(roomy_gaps) / 2000 < 0.75
    # Still the spec's scenes (the parser reads a small triangle as another shape about once in 2,000).
    assert sum(caption_holds(render(s), s.caption) for s in roomy[:300]) >= 299
    assert all(len(s.objects) == 2 for s in scenes(1, 100, two_share=1.0))
    assert all(len(s.objects) == 1 for s in scenes(1, 100, two_share=0.0))
    with pytest.raises(ValueError, match="could not place two objects 60 px apart"):
        scenes(1, 50, gap=60, two_share=1.0)


def test_datasets_are_reproducible_from_their_seed():
    a, captions_a = make_dataset(seed=3, n=16)
    b, captions_b = make_dataset(seed=3, n=16)
    c, _ = make_dataset(seed=4, n=16)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and captions_a == captions_b and not np.array_equal(a, c)


def test_wrong_captions_are_rejected():
    rng = np.random.default_rng(11)
    checked = 0
    while checked < 50:
        scene = sample_scene(rng)
        if scene.relation is None:
            continue
        image, caption = render(scene), scene.caption
        a, b = scene.objects
        other_colour = "red" if a.colour != "red" else "blue"
        other_shape = "circle" if a.shape != "circle" else "square"
        flipped = {"to the left of": "to the right of", "to the right of": "to the left of",
                   "above": "below", "below": "above"}[scene.relation]  # fmt: skip
        wrong = [
            caption.replace(f"{a.colour} {a.shape}", f"{other_colour} {a.shape}", 1),
            caption.replace(f"{a.colour} {a.shape}", f"{a.colour} {other_shape}", 1),
            caption.replace(scene.relation, flipped),
            f"a {a.colour} {a.shape}",  # one object named, two drawn
            caption.split(" on a ")[0] + f" on a {'black' if scene.background == 'white' else 'white'} background",
        ]
        other_size = "large" if a.size == "small" else "small"
        unsized = caption.replace(f"a {a.size} {a.colour} {a.shape}", f"a {a.colour} {a.shape}", 1)
        wrong.append(unsized.replace(f"a {a.colour} {a.shape}", f"a {other_size} {a.colour} {a.shape}", 1))
        assert caption_mismatch(image, caption) is None
        for text, what in zip(wrong, ("colour", "shape", "relation", "count", "background", "size"), strict=True):
            if text != caption and parse_caption(text) != parse_caption(caption):
                # A swapped relation with swapped objects is the same scene: only count real changes.
                if not (a.colour == b.colour and a.shape == b.shape):
                    assert not caption_holds(image, text), (caption, text)
                    assert caption_mismatch(image, text) == what, (caption, text)
        checked += 1


def test_larger_canvases_scale_and_bad_captions_fail():
    rng = np.random.default_rng(5)
    for _ in range(50):
        scene = sample_scene(rng, canvas=128)
        assert caption_holds(render(scene, canvas=128), scene.caption), scene.caption
    with pytest.raises(ValueError, match="not a shapes-world caption: 'a red hexagon'"):
        parse_caption("a red hexagon")


def test_relation_directions_tells_right_reversed_and_other_axis():
    from latentdiff.evaluate import relation_directions

    images, captions = make_dataset(5, 200)
    pairs = [(image, c) for image, c in zip(images, captions, strict=True) if parse_caption(c)["relation"]]
    images, captions = np.stack([p[0] for p in pairs]), [p[1] for p in pairs]

    def count(pixels: np.ndarray) -> dict[str, int]:
        return relation_directions(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, captions)

    truth = count(images)
    assert truth["right"] > 0 and truth["reversed"] == truth["other axis"] == 0
    vertical = np.array([parse_caption(c)["relation"] in ("above", "below") for c in captions])
    mirrored = np.where(vertical[:, None, None, None], images[:, ::-1], images[:, :, ::-1])
    assert count(mirrored) == {**truth, "right": 0, "reversed": truth["right"]}
    assert count(images.transpose(0, 2, 1, 3)) == {**truth, "right": 0, "other axis": truth["right"]}
    assert count(np.zeros_like(images))["unreadable"] == len(captions)


def test_count_misses_say_how_many_objects_were_found_for_how_many_named():
    from latentdiff.evaluate import Fidelity

    drawn = scenes(9, 40)
    ones = [s for s in drawn if len(s.objects) == 1][:3]
    pairs = [s for s in drawn if len(s.objects) == 2][:2]
    # Images of one object under two-object captions and the other way round, and one that holds.
    cases = [(ones[0], pairs[0].caption), (ones[1], pairs[1].caption), (pairs[0], ones[2].caption), (ones[2], None)]
    images = torch.from_numpy(np.stack([render(s) for s, _ in cases])).permute(0, 3, 1, 2).float() / 255
    prompts = [caption or s.caption for s, caption in cases]
    mismatches = [caption_mismatch(render(s), p) for (s, _), p in zip(cases, prompts, strict=True)]
    result = Fidelity(0.25, [m is None for m in mismatches], prompts, images, mismatches)
    assert mismatches == ["count", "count", "count", None]
    assert result.count_misses() == {"1 for 2": 2, "2 for 1": 1}
    assert result.by_objects() == {1: (1, 2), 2: (2, 2)}
