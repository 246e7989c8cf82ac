"""Are the attention maps right? On two-object shapes prompts, does each word's map land on its object?

For a prompt like "a red circle above a blue square" the model draws an image; the shapes parser
finds its objects and their pixel masks. Where the drawn objects match the named ones (colour and
shape), each colour and shape word's map (attention.py, summed over layers, heads and steps) should
hold at least twice as much mass inside its own object as inside the other one. Prompts use two
different colours and two different shapes, so every word names exactly one object.

Images whose objects do not match the prompt cannot be scored (there is no "own object"); they are
counted and reported, and sampling goes on until `n` prompts could be scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.shapes import parse_caption, parse_objects, sample_scene
from ..model import StableDiffusion
from ..pipeline import last_images, txt2img
from .attention import CrossAttentionRecorder, word_map, words

ALIGNMENT_SEED = 20_261_125  # prompts never used in training
RATIO = 2.0  # own-object mass must be at least this multiple of the other object's


@dataclass
class Alignment:
    prompts_scored: int
    prompts_drawn: int  # including those whose image did not show the two named objects
    words_right: int  # colour/shape words whose own-object mass >= RATIO x the other's
    words_scored: int
    prompts_all_right: int  # prompts whose four words are all right
    by_kind: dict = field(default_factory=dict)  # "colour" / "shape" -> [right, scored]
    # The same test on mean attention per pixel instead of total mass. Total mass favours the larger
    # object whatever the word; if every word had the same map, by density at most half the words of
    # a prompt could pass (one object is denser than the other for all four), so a rate far below
    # the mass one says the word maps hardly differ and the mass rate comes from object sizes.
    words_right_by_density: int = 0

    @property
    def word_rate(self) -> float:
        return self.words_right / max(self.words_scored, 1)

    @property
    def density_rate(self) -> float:
        return self.words_right_by_density / max(self.words_scored, 1)

    @property
    def prompt_rate(self) -> float:
        return self.prompts_all_right / max(self.prompts_scored, 1)


def two_object_prompts(n: int, seed: int = ALIGNMENT_SEED, canvas: int = 64) -> list[str]:
    """Captions of generated two-object scenes whose objects differ in both colour and shape."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        scene = sample_scene(rng, canvas)
        if len(scene.objects) == 2:
            a, b = scene.objects
            if a.colour != b.colour and a.shape != b.shape:
                out.append(scene.caption)
    return out


def word_masses(word_maps: dict[str, torch.Tensor], masks: list[np.ndarray], named: list[tuple]) -> list[tuple]:
    """(kind, own mass, other mass) for the colour and shape word of each of the two named objects.

    word_maps: word -> (H, W) map; masks: the two objects' masks in the order of `named`.
    """
    out = []
    for i, (_, colour, shape) in enumerate(named):
        own, other = torch.from_numpy(masks[i]), torch.from_numpy(masks[1 - i])
        for kind, word in (("colour", colour), ("shape", shape)):
            m = word_maps[word]
            out.append((kind, float(m[own].sum()), float(m[other].sum())))
    return out


def _matched_masks(image: np.ndarray, named: list[tuple]) -> list[np.ndarray] | None:
    """The two drawn objects' masks in the order named, or None unless exactly those two are drawn."""
    _, found = parse_objects(image)
    if len(found) != 2:
        return None
    masks = []
    for _, colour, shape in named:
        hits = [mask for region, mask in found if region.colour == colour and region.shape == shape]
        if len(hits) != 1:
            return None
        masks.append(hits[0])
    return masks


@torch.no_grad()
def attention_alignment(model: StableDiffusion, n: int = 100, steps: int = 20, guidance_scale: float = 2.5,
                        sampler: str = "euler", batch: int = 16, max_prompts: int = 2000,
                        seed: int = ALIGNMENT_SEED) -> Alignment:  # fmt: skip
    """Draw two-object prompts until `n` images show both named objects, and score their words."""
    size = (model.config.unet.sample_size * model.config.vae.downsample_factor,) * 2
    result = Alignment(0, 0, 0, 0, 0, {"colour": [0, 0], "shape": [0, 0]})
    prompts = two_object_prompts(max_prompts, seed)
    for start in range(0, max_prompts, batch):
        chunk = prompts[start : start + batch]
        with CrossAttentionRecorder(model.unet, prompts=len(chunk), size=size) as recorder:
            images = last_images(txt2img(model, chunk, steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                         seed=seed + start))  # fmt: skip
        pixels = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        for i, prompt in enumerate(chunk):
            result.prompts_drawn += 1
            named = parse_caption(prompt)["objects"]
            masks = _matched_masks(pixels[i], named)
            if masks is None:
                continue
            maps = {w.text: word_map(recorder.heat[i].cpu(), w) for w in words(model.tokenizer, prompt)}
            scored = word_masses(maps, masks, named)
            right = [own >= RATIO * other for _, own, other in scored]
            areas = [int(m.sum()) for m in masks]  # scored lists object 0's two words, then object 1's
            result.words_right_by_density += sum(
                own / areas[j // 2] >= RATIO * other / areas[1 - j // 2] for j, (_, own, other) in enumerate(scored)
            )
            for (kind, _, _), ok in zip(scored, right, strict=True):
                result.by_kind[kind][0] += ok
                result.by_kind[kind][1] += 1
            result.words_right += sum(right)
            result.words_scored += len(right)
            result.prompts_all_right += all(right)
            result.prompts_scored += 1
            if result.prompts_scored == n:
                return result
    return result
