"""Does a model's text tower tell a relation's direction? Cosine between its text states for caption pairs.

For each of the first 60 two-object fidelity prompts without a background ("a red circle above a blue
square"), the mean of the last 10 (padding) states, which take most of the UNet's cross-attention, is
compared with the same for:
- the same scene worded the other way round ("a blue square below a red circle"): same image;
- the relation flipped ("a red circle below a blue square"): the objects swap places.
A tower that reads the direction puts the second pair further apart than the first.

    .venv/bin/python benchmarks/text_relations.py [models/shapes-64 ...]

Prints one line per model folder; writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def phrase(obj: tuple) -> str:
    size, colour, shape = obj
    return f"a {size + ' ' if size else ''}{colour} {shape}"


@torch.no_grad()
def cosines(folder: str, n: int = 60) -> tuple[float, float]:
    from latentdiff.data.shapes import parse_caption
    from latentdiff.evaluate import OPPOSITE, shapes_prompts
    from latentdiff.tokenizer import CLIPTokenizer
    from latentdiff.weights import load

    text, tokenizer = load(folder).text_encoder.eval(), CLIPTokenizer.default()
    prompts = [p for p in shapes_prompts(300) if parse_caption(p)["relation"] and not parse_caption(p)["background"]]
    same, flipped = [], []
    for prompt in prompts[:n]:
        caption = parse_caption(prompt)
        (a, b), relation = caption["objects"], caption["relation"]
        flip = OPPOSITE[relation]
        pair = [prompt, f"{phrase(b)} {flip} {phrase(a)}", f"{phrase(a)} {flip} {phrase(b)}"]
        padding = text.encode(tokenizer(pair).input_ids)[:, -10:].mean(1)  # (3, D)
        same.append(torch.cosine_similarity(padding[0], padding[1], dim=0).item())
        flipped.append(torch.cosine_similarity(padding[0], padding[2], dim=0).item())
    return sum(same) / len(same), sum(flipped) / len(flipped)


def main() -> None:
    for folder in sys.argv[1:] or [str(ROOT / "models" / "shapes-64")]:
        same, flipped = cosines(folder)
        print(f"{folder}: padding-state cosine, same scene reworded {same:.4f}, relation flipped {flipped:.4f}")


if __name__ == "__main__":
    main()
