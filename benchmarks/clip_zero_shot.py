"""Our own CLIPs, measured: zero-shot accuracy, a linear probe on the same features, retrieval.

- Fashion-MNIST test (10,000): zero-shot from the class names (4 averaged "a photo of a {}"-style
  templates, none of them a training caption) vs a linear probe (multinomial logistic regression on
  the frozen image features of 10,000 training images), with the CLIP of recipes/clip_fashion.toml.
- Shapes, held-out one-object scenes: colour (8 labels) and shape (3) zero-shot vs a linear probe;
  held-out image<->caption retrieval recall@1/5 over all distinct held-out captions.
- Emoji (held-out names and training ones): the category (zero-shot vs probe) and the name ranked
  among all 1,906 names (recall@1/5), with the built-in model's CLIP.

    .venv/bin/python benchmarks/clip_zero_shot.py [--clip models/shapes-64] [--fashion-clip runs/clip_fashion]

Writes benchmarks/results/clip_zero_shot.json and .md. A CLIP that is absent is skipped with the
command that makes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 steps: int = 300, weight_decay: float = 1e-4) -> float:  # fmt: skip
    """Test accuracy of a logistic-regression classifier on frozen features (full-batch L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    probe = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(train_x), train_y) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (probe(test_x).argmax(1) == test_y).float().mean().item()


def recall(scores: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    from latentdiff.zero_shot import top_k_accuracy

    return {"recall@1": top_k_accuracy(scores, truth, 1), "recall@5": top_k_accuracy(scores, truth, 5)}


def features(clip, images: torch.Tensor) -> torch.Tensor:
    """The image tower's pooled output before the projection: what CLIP's linear probes use."""
    with torch.no_grad():
        return torch.cat([clip.vision_model(x)[1] for x in images.split(256)])


def fashion(path: str) -> dict:
    from latentdiff.data.digits import FASHION_CLASSES
    from latentdiff.train.common import DataConfig, fashion_tensors
    from latentdiff.weights.clip_folder import open_clip_source
    from latentdiff.zero_shot import classify, top_k_accuracy

    clip = open_clip_source(path).model
    data = DataConfig(source="fashion-mnist", canvas=clip.vision_model.config.image_size, pool=10_000, heldout=10_000)
    test_x, _, test_y = fashion_tensors(data, heldout=True)
    train_x, _, train_y = fashion_tensors(data)
    zero_shot = top_k_accuracy(classify(clip, test_x, list(FASHION_CLASSES)), test_y)
    probe = linear_probe(features(clip, train_x), train_y, features(clip, test_x), test_y)
    return {"zero-shot accuracy": zero_shot, "linear probe accuracy": probe, "test images": len(test_y)}


def shapes(clip, tokenizer) -> dict:
    from latentdiff.data.shapes import COLOURS, SHAPES, parse_caption
    from latentdiff.train.common import DataConfig, shapes_tensors
    from latentdiff.zero_shot import class_vectors, classify, image_vectors, top_k_accuracy

    heldout, train = (shapes_tensors(DataConfig(heldout=2000), heldout=True), shapes_tensors(DataConfig(pool=4000)))
    result = {}
    probe_sets = []
    for images, captions in (heldout, train):
        parsed = [parse_caption(c) for c in captions]
        single = [(i, p["objects"][0]) for i, p in enumerate(parsed) if p["relation"] is None]
        probe_sets.append((images[[i for i, _ in single]], [o for _, o in single]))
    (test_x, test_objs), (train_x, train_objs) = probe_sets
    colours, shapes_ = list(COLOURS), list(SHAPES)
    for name, labels, pick, templates in (
        ("colour", colours, 1, [f"a {{}} {s}" for s in shapes_]),
        ("shape", shapes_, 2, [f"a {c} {{}}" for c in colours]),
    ):
        test_y = torch.tensor([labels.index(o[pick]) for o in test_objs])
        train_y = torch.tensor([labels.index(o[pick]) for o in train_objs])
        zero_shot = top_k_accuracy(classify(clip, test_x, labels, templates, tokenizer=tokenizer), test_y)
        probe = linear_probe(features(clip, train_x), train_y, features(clip, test_x), test_y)
        result[name] = {"zero-shot accuracy": zero_shot, "linear probe accuracy": probe, "test images": len(test_y)}
    images, captions = heldout
    unique = sorted(set(captions))
    image_vecs = image_vectors(clip, images)
    text_vecs = class_vectors(clip, unique, templates=("{}",), tokenizer=tokenizer)
    truth_text = torch.tensor([unique.index(c) for c in captions])
    result["retrieval"] = {"image -> caption": recall((image_vecs @ text_vecs.T).cpu(), truth_text),
                           "captions": len(unique), "images": len(images)}  # fmt: skip
    return result


def emoji(clip, tokenizer) -> dict:
    from latentdiff.data import emoji as emoji_data
    from latentdiff.evaluate import emoji_name_prompts
    from latentdiff.train.common import image_tensor
    from latentdiff.zero_shot import class_vectors, classify, image_vectors, top_k_accuracy

    e = emoji_data.load_emoji(clip.vision_model.config.image_size)
    train_idx, heldout_idx = emoji_data.split(e)
    categories = sorted({c.lower() for c in e.categories})
    names = sorted(set(e.names))
    name_vecs = class_vectors(clip, emoji_name_prompts(names), templates=("{}",), tokenizer=tokenizer)
    result = {}
    train_x = image_tensor(e.images[train_idx])
    train_y = torch.tensor([categories.index(e.categories[i].lower()) for i in train_idx])
    for part, idx in (("held-out emoji", heldout_idx), ("training emoji", train_idx)):
        x = image_tensor(e.images[idx])
        y = torch.tensor([categories.index(e.categories[i].lower()) for i in idx])
        templates = ("an emoji of something, from {}", "{} emoji")
        zero_shot = top_k_accuracy(classify(clip, x, categories, templates, tokenizer=tokenizer), y)
        truth = torch.tensor([names.index(e.names[i]) for i in idx])
        result[part] = {"category zero-shot accuracy": zero_shot,
                        "name among all names": recall((image_vectors(clip, x) @ name_vecs.T).cpu(), truth),
                        "images": len(idx)}  # fmt: skip
        if part == "held-out emoji":  # a probe trained on the training emoji's categories
            result[part]["category linear probe accuracy"] = linear_probe(features(clip, train_x), train_y,
                                                                          features(clip, x), y)  # fmt: skip
    result["categories"] = len(categories)
    return result


def markdown(result: dict) -> str:
    lines = [f"# Our CLIPs, zero-shot vs linear probe ({result['machine']})", ""]
    lines += ["| task | zero-shot | linear probe | test images |", "|---|---|---|---|"]
    if "fashion" in result:
        f = result["fashion"]
        lines.append(f"| Fashion-MNIST test, 10 classes | {f['zero-shot accuracy']:.1%} | "
                     f"{f['linear probe accuracy']:.1%} | {f['test images']} |")  # fmt: skip
    if "shapes" in result:
        for name in ("colour", "shape"):
            s = result["shapes"][name]
            lines.append(f"| shapes {name}, held-out one-object scenes | {s['zero-shot accuracy']:.1%} | "
                         f"{s['linear probe accuracy']:.1%} | {s['test images']} |")  # fmt: skip
    if "emoji" in result:
        h = result["emoji"]["held-out emoji"]
        lines.append(f"| emoji category ({result['emoji']['categories']}), held-out emoji | "
                     f"{h['category zero-shot accuracy']:.1%} | {h['category linear probe accuracy']:.1%} | "
                     f"{h['images']} |")  # fmt: skip
    lines += ["", "| retrieval | recall@1 | recall@5 | candidates |", "|---|---|---|---|"]
    if "shapes" in result:
        r = result["shapes"]["retrieval"]
        lines.append(f"| shapes held-out image -> its caption | {r['image -> caption']['recall@1']:.1%} | "
                     f"{r['image -> caption']['recall@5']:.1%} | {r['captions']} captions |")  # fmt: skip
    if "emoji" in result:
        for part in ("training emoji", "held-out emoji"):
            r = result["emoji"][part]["name among all names"]
            lines.append(f"| {part} -> its name | {r['recall@1']:.1%} | {r['recall@5']:.1%} | all names |")
    lines += ["", *[f"- {note}" for note in result["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    from latentdiff.cli import BUILTIN_MODEL
    from latentdiff.weights.clip_folder import has_clip, open_clip_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(BUILTIN_MODEL), help="shapes + emoji CLIP (default: the built-in's)")
    parser.add_argument("--fashion-clip", default=str(ROOT / "runs" / "clip_fashion"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    result = {"machine": f"{args.threads} CPU threads", "notes": []}
    if (Path(args.fashion_clip) / "last.txt").exists() or (Path(args.fashion_clip) / "config.json").exists():
        result["fashion"] = fashion(args.fashion_clip)
        result["notes"].append(f"Fashion-MNIST: the CLIP of {args.fashion_clip} (recipes/clip_fashion.toml)")
    else:
        result["notes"].append("Fashion-MNIST skipped: train its CLIP with "
                               "`latentdiff train clip --recipe recipes/clip_fashion.toml`")  # fmt: skip
    if has_clip(args.clip) or (Path(args.clip) / "last.txt").exists():
        loaded = open_clip_source(args.clip)
        result["shapes"] = shapes(loaded.model, loaded.tokenizer)
        result["emoji"] = emoji(loaded.model, loaded.tokenizer)
        result["notes"].append(f"shapes and emoji: the CLIP of {Path(args.clip).name}")
    result["notes"].append(f"linear probes: logistic regression (L-BFGS) on the image tower's pooled features; "
                           f"{time.perf_counter() - start:.0f} s in all")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clip_zero_shot.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "clip_zero_shot.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
