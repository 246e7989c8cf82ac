"""Does a model's text tower tell a relation's direction? Cosine between its text states for caption pairs.

For each of the first 60 two-object fidelity prompts without a background ("a red circle above a blue
square"), the mean of the last 10 (padding) states, which take most of the UNet's cross-attention, is
compared with the same for:
- the same scene worded the other way round ("a blue square below a red circle"): same image;
- the relation flipped ("a red circle below a blue square"): the objects swap places.
A tower that reads the direction puts the second pair further apart than the first.

And a linear probe (`probe`): fitted on the tower's end-token state and mean last-10 state for the
two-object captions of 4,000 scenes (seed 1), it must name the object that comes first along the
relation's axis (top, or left; its colour and shape) for those of 1,000 others (seed 2). The caption
names two objects, so a tower that reads it as a bag of words scores about 50%.

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


@torch.no_grad()
def _probe_data(text, tokenizer, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from latentdiff.data.shapes import scenes
    from latentdiff.train.layout import layout_target

    two = [s for s in scenes(seed, n) if len(s.objects) == 2]
    ids = tokenizer([s.caption for s in two]).input_ids
    states = text.encode(ids)  # (n, 77, D)
    end = (ids == text.config.eos_token_id).int().argmax(-1)
    features = torch.cat([states[torch.arange(len(ids)), end], states[:, -10:].mean(1)], -1)
    return features, torch.tensor([layout_target(s)[0] for s in two])


def probe(folder: str, train: int = 4000, test: int = 1000, steps: int = 500) -> float:
    """Held-out share of two-object captions whose first object along the axis a linear probe names."""
    from latentdiff.tokenizer import CLIPTokenizer
    from latentdiff.train.layout import CLASSES
    from latentdiff.weights import load

    text, tokenizer = load(folder).text_encoder.eval(), CLIPTokenizer.default()
    (x, y), (x_test, y_test) = _probe_data(text, tokenizer, 1, train), _probe_data(text, tokenizer, 2, test)
    mean, std = x.mean(0), x.std(0) + 1e-6  # standardised, so one learning rate suits every tower
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], CLASSES)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):  # full batch: the features are computed once
        loss = torch.nn.functional.cross_entropy(head((x - mean) / std), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (head((x_test - mean) / std).argmax(-1) == y_test).float().mean().item()


def main() -> None:
    for folder in sys.argv[1:] or [str(ROOT / "models" / "shapes-64")]:
        same, flipped = cosines(folder)
        print(
            f"{folder}: padding-state cosine, same scene reworded {same:.4f}, relation flipped {flipped:.4f}; "
            f"linear probe names the first object along the axis in {probe(folder):.1%} of held-out captions"
        )


if __name__ == "__main__":
    main()
