"""How good is a text-to-image (or text-to-video) model on the shapes world? Generate, parse, compare.

Fidelity = the share of prompts whose generated image satisfies its caption per SHAPES.md: the
object count and every named colour, shape, size, relation and background (data.shapes.caption_holds).
The prompts come from a seed no training run uses, so they are fresh scenes, not memorised ones.

Motion (text-to-video): each generated video is parsed frame by frame (data.moving_shapes.check_video)
and scored on the three bars of the video issue: the named objects' colour and shape per frame, their
direction of travel, and the same set of objects throughout.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data.shapes import MISMATCHES, caption_mismatch, parse_caption, parse_image, region_relation, sample_scene
from .pipeline import last_images, txt2img

FIDELITY_SEED = 20_261_124  # the prompts of the fidelity bar: never a training seed


def shapes_prompts(n: int, seed: int = FIDELITY_SEED, canvas: int = 64) -> list[str]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, canvas).caption for _ in range(n)]


@dataclasses.dataclass
class Fidelity:
    score: float  # share of prompts whose image holds
    held: list[bool]
    prompts: list[str]
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]
    mismatches: list[str | None]  # per prompt: None, or the first thing its image got wrong (caption_mismatch)

    def failures(self) -> dict[str, int]:
        """How many images failed first on each of count, background, colour, shape, size, relation."""
        return {name: self.mismatches.count(name) for name in MISMATCHES}

    def by_objects(self) -> dict[int, tuple[int, int]]:
        """(failed, prompts) for the prompts naming one object, and for those naming two."""
        named = [len(parse_caption(p)["objects"]) for p in self.prompts]
        failed = [n for n, h in zip(named, self.held, strict=True) if not h]
        return {k: (failed.count(k), named.count(k)) for k in (1, 2)}

    def count_misses(self) -> dict[str, int]:
        """The count failures as "<objects found> for <named>" -> images, most common first: "1 for 2"
        is mostly a pair drawn touching (one region), "3 for 2" a pair with an extra object."""
        misses: dict[str, int] = {}
        for i in (i for i, m in enumerate(self.mismatches) if m == "count"):
            pixels = (self.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            key = f"{len(parse_image(pixels)[1])} for {len(parse_caption(self.prompts[i])['objects'])}"
            misses[key] = misses.get(key, 0) + 1
        return dict(sorted(misses.items(), key=lambda kv: -kv[1]))


@torch.no_grad()
def generate(model, prompts: list[str], steps: int, guidance_scale: float, sampler: str, seed: int,
             batch: int = 50, deep_cache: int = 1, sigmas: str = "karras",
             guidance_max_sigma: float | None = None) -> torch.Tensor:  # fmt: skip
    """One image per prompt (seed + i for the i-th), `batch` at a time: (N, 3, H, W) in [0, 1]."""
    chunks = []
    for start in range(0, len(prompts), batch):
        states = txt2img(model, prompts[start : start + batch], steps=steps, guidance_scale=guidance_scale,
                         sampler=sampler, seed=seed + start, deep_cache=deep_cache, sigmas=sigmas,
                         guidance_max_sigma=guidance_max_sigma)  # fmt: skip
        chunks.append(last_images(states).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def fidelity(model, prompts: list[str], steps: int = 20, guidance_scale: float = 2.5, sampler: str = "euler",
             seed: int = 0, batch: int = 50, deep_cache: int = 1, sigmas: str = "karras",
             guidance_max_sigma: float | None = None) -> Fidelity:  # fmt: skip
    """Generate one image per prompt (seed + i each) and check it against its caption.

    The defaults are the built-in model's (cli.DEFAULTS): 20 Euler steps, CFG 2.5, Karras sigmas,
    except that guidance runs at every step unless guidance_max_sigma says otherwise."""
    images = generate(model, prompts, steps, guidance_scale, sampler, seed, batch, deep_cache, sigmas,
                      guidance_max_sigma)  # fmt: skip
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    mismatches = [caption_mismatch(p, c) for p, c in zip(pixels, prompts, strict=True)]
    held = [m is None for m in mismatches]
    return Fidelity(sum(held) / len(held), held, prompts, images, mismatches)


OPPOSITE = {"above": "below", "below": "above", "to the left of": "to the right of",
             "to the right of": "to the left of"}  # fmt: skip


def relation_directions(images: torch.Tensor, prompts: list[str]) -> dict[str, int]:
    """Where a two-object image puts its objects, whatever else is wrong with it: counts of "right"
    (the named relation), "reversed" (its opposite), "other axis", and "unreadable" (not two regions,
    or the named colours not found once each, so which object is which cannot be told)."""
    counts = dict.fromkeys(("right", "reversed", "other axis", "unreadable"), 0)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for image, prompt in zip(pixels, prompts, strict=True):
        want = parse_caption(prompt)
        if want["relation"] is None:
            continue
        _, regions = parse_image(image)
        first = [r for r in regions if r.colour == want["objects"][0][1]]
        second = [r for r in regions if r.colour == want["objects"][1][1]]
        if len(regions) != 2 or len(first) != 1 or len(second) != 1 or first[0] is second[0]:
            counts["unreadable"] += 1
            continue
        got = region_relation(first[0], second[0])
        kind = "right" if got == want["relation"] else "reversed" if got == OPPOSITE[want["relation"]] else "other axis"
        counts[kind] += 1
    return counts


def emoji_name_prompts(names: list[str]) -> list[str]:
    """The base caption of each name ("an emoji of a grinning face"): what the name ranking scores."""
    from .data.emoji import BASE_TEMPLATE, _article

    return [BASE_TEMPLATE.format(a=_article(n), name=n) for n in names]


@torch.no_grad()
def emoji_top5(clip, images: torch.Tensor, names: list[str], all_names: list[str]) -> float:
    """How often CLIP ranks an image's own emoji name in its top 5 among `all_names`.

    images: (N, 3, H, W) in [-1, 1], names[i] the name image i shows (or was prompted with)."""
    from .zero_shot import class_vectors, image_vectors, top_k_accuracy

    labels = sorted(set(all_names))
    vectors = class_vectors(clip, emoji_name_prompts(labels), templates=("{}",))
    scores = (image_vectors(clip, images) @ vectors.T).cpu()
    truth = torch.tensor([labels.index(n) for n in names])
    return top_k_accuracy(scores, truth, k=5)


@dataclasses.dataclass
class EmojiScore:
    train_top5: float  # generated from training emoji names
    heldout_top5: float  # generated from names the model never trained on
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]: the training ones, then the held-out ones


@torch.no_grad()
def emoji_bar(model, clip, n: int = 190, steps: int = 20, guidance_scale: float = 2.5, sampler: str = "euler",
              seed: int = 0, batch: int = 50, sigmas: str = "karras",
              guidance_max_sigma: float | None = None) -> EmojiScore:  # fmt: skip
    """Generate each emoji from its base caption; how often does `clip` rank its name in the top 5?

    Up to n held-out emoji and n training emoji (an evenly spaced pick, fixed) are generated."""
    from .data.emoji import load_emoji, split

    emoji = load_emoji(model.config.vae.sample_size)
    train_idx, heldout_idx = split(emoji)
    picks = [train_idx[np.linspace(0, len(train_idx) - 1, min(n, len(train_idx))).round().astype(int)], heldout_idx[:n]]
    scores, images = [], []
    for idx in picks:
        names = [emoji.names[i] for i in idx]
        prompts = emoji_name_prompts(names)
        generated = generate(model, prompts, steps, guidance_scale, sampler, seed, batch, sigmas=sigmas,
                             guidance_max_sigma=guidance_max_sigma)  # fmt: skip
        scores.append(emoji_top5(clip, generated * 2 - 1, names, emoji.names))
        images.append(generated)
    return EmojiScore(scores[0], scores[1], torch.cat(images))


def motion_prompts(n: int, frames: int = 8, seed: int = FIDELITY_SEED, canvas: int = 64) -> list[str]:
    """n moving-shapes captions from a seed no training run uses (training pools use data.seed)."""
    from .data.moving_shapes import sample_moving_scene

    rng = np.random.default_rng(seed)
    return [sample_moving_scene(rng, frames, canvas).caption for _ in range(n)]


@dataclasses.dataclass
class Motion:
    frames_right: float  # share of (video, named object, frame) where the object shows its colour and shape
    moved_right: float  # share of videos whose named objects all travel in their named directions
    consistent: float  # share of videos showing one set of objects in >= 90% of their frames
    holds: float  # share of videos passing all three
    checks: list  # data.moving_shapes.MotionCheck per video
    prompts: list[str]
    videos: torch.Tensor  # (N, 3, F, H, W) in [0, 1]


@torch.no_grad()
def motion(model, video_unet, prompts: list[str], frames: int = 8, steps: int = 20, guidance_scale: float = 2.5,
           sampler: str = "euler", seed: int = 0, batch: int = 10, progress=None) -> Motion:  # fmt: skip
    """Generate one video per prompt (seed + i for the i-th) and check each against its caption."""
    from .video_pipeline import txt2video

    chunks = []
    for start in range(0, len(prompts), batch):
        states = txt2video(model, video_unet, prompts[start : start + batch], frames, steps=steps,
                           guidance_scale=guidance_scale, sampler=sampler, seed=seed + start)  # fmt: skip
        chunks.append(last_images(states).float().cpu())
        if progress is not None:
            progress(len(chunks[-1]))
    return score_motion(torch.cat(chunks), prompts)


def score_motion(videos: torch.Tensor, prompts: list[str]) -> Motion:
    """Check each video (N, 3, F, H, W) in [0, 1] against its caption, frame by frame."""
    from .data.moving_shapes import check_video

    pixels = (videos.permute(0, 2, 3, 4, 1).numpy() * 255).round().astype(np.uint8)  # (N, F, H, W, 3)
    checks = [check_video(v, p) for v, p in zip(pixels, prompts, strict=True)]
    per_object = [f for c in checks for f in c.frames_right]
    return Motion(
        frames_right=sum(per_object) / len(per_object),
        moved_right=sum(all(c.moved_right) for c in checks) / len(checks),
        consistent=sum(c.consistent for c in checks) / len(checks),
        holds=sum(c.holds for c in checks) / len(checks),
        checks=checks,
        prompts=prompts,
        videos=videos,
    )
