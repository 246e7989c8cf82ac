"""`latentdiff classify` and `latentdiff score`: CLIP on its own, zero-shot (Radford et al. 2021).

    latentdiff classify photo.png --labels "circle,square,triangle"
    latentdiff classify *.png --labels-file labels.txt --template "a photo of a {}" --template "a {}"
    latentdiff score out/*.png                          # each PNG's own prompt, from its parameters
    latentdiff score out/image.png --prompt "a red circle"

The CLIP is the built-in model's own (its image_encoder/), or --clip: a diffusers folder carrying
one, a transformers CLIPModel folder (e.g. openai/clip-vit-base-patch32) or a `train clip` run.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError


def _clip(args):
    from .cli import BUILTIN_MODEL
    from .weights.clip_folder import open_clip_source

    return open_clip_source(args.clip or BUILTIN_MODEL, allow_pickle=args.allow_pickle)


def _images(paths: list[str]) -> list[Image.Image]:
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such image") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: not a readable image ({e})") from None
    return images


def _labels(args) -> list[str]:
    if args.labels_file:
        try:
            text = Path(args.labels_file).read_text()
        except OSError as e:
            raise FileNotFoundError(f"{args.labels_file}: cannot read the labels file ({e.strerror})") from None
        labels = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    else:
        labels = [label.strip() for label in (args.labels or "").split(",") if label.strip()]
    if len(labels) < 2:
        raise ValueError("give at least two labels: --labels 'cat,dog' or --labels-file FILE (one per line)")
    if len(set(labels)) != len(labels):
        raise ValueError(f"a label is listed twice: {sorted({x for x in labels if labels.count(x) > 1})[0]!r}")
    return labels


def cmd_classify(args) -> None:
    from .zero_shot import DEFAULT_TEMPLATES, rank_labels

    labels, images = _labels(args), _images(args.images)
    templates = tuple(args.template) if args.template else DEFAULT_TEMPLATES
    results = []
    for path, ranked in zip(args.images, rank_labels(_clip(args), images, labels, templates), strict=True):
        ranked = ranked[: args.top]
        results.append({"image": path, "labels": [{"label": k, "probability": round(v, 4)} for k, v in ranked]})
        if not args.json:
            print(f"{path}: " + ", ".join(f"{k} {v:.1%}" for k, v in ranked))
    if args.json:
        print(json.dumps(results, indent=2))


def cmd_score(args) -> None:
    from .metadata import read_png_parameters
    from .zero_shot import clip_score, preprocess

    images = _images(args.images)
    prompts = []
    for path in args.images:
        prompt = args.prompt if args.prompt is not None else read_png_parameters(path).get("prompt")
        if not prompt:
            raise ValueError(f"{path}: no prompt in its PNG parameters; pass --prompt")
        prompts.append(prompt)
    clip = _clip(args)
    scores = clip_score(clip.model, preprocess(images, clip.norm), prompts, tokenizer=clip.tokenizer)
    for path, prompt, score in zip(args.images, prompts, scores.tolist(), strict=True):
        print(f"{path}: CLIP score {score:.2f} ({prompt!r})")
    if len(scores) > 1:
        print(f"mean CLIP score {scores.mean().item():.2f} over {len(scores)} images")


def add_parsers(sub) -> None:
    p = sub.add_parser("classify", help="zero-shot: rank text labels for each image with CLIP")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--labels", default=None, help="comma-separated, e.g. 'circle,square,triangle'")
    p.add_argument("--labels-file", default=None, help="one label per line (# starts a comment)")
    p.add_argument("--template", action="append", default=None, metavar="TEXT",
                   help="a prompt with {} for the label; repeat to average (default: 4 photo templates)")  # fmt: skip
    p.add_argument("--top", type=int, default=5, help="how many labels to print per image")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    _add_clip_args(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("score", help="CLIP score (100 x cosine) of images with their prompts")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--prompt", default=None, help="default: each PNG's own prompt from its parameters")
    _add_clip_args(p)
    p.set_defaults(func=cmd_score)


def _add_clip_args(p) -> None:
    p.add_argument("--clip", default=None, help="a CLIP: diffusers folder with image_encoder/, transformers "
                   "CLIPModel folder or train-clip run (default: the built-in model's)")  # fmt: skip
    p.add_argument("--allow-pickle", action="store_true", help="allow a pytorch_model.bin (pickle) CLIP")
