"""Zero-shot classification with a CLIP model: score an image against a text for every label.

    from latentdiff.weights.clip_folder import open_clip_source
    from latentdiff.zero_shot import rank_labels
    clip = open_clip_source("models/shapes-64")           # or a transformers CLIPModel folder, a run
    rank_labels(clip, [Image.open("a.png")], ["circle", "square", "triangle"])
    # one list per image: [(label, probability), ...], the most likely first

As in Radford et al. 2021 (section 3.1.4), each label is written into several prompt templates
("a photo of a {}", ...); the template embeddings are averaged and re-normalised into one class
vector, and an image's class probabilities are the softmax of its scaled cosines with those vectors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .clip import CLIPModel
from .tokenizer import CLIPTokenizer

DEFAULT_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a {}")


@torch.no_grad()
def class_vectors(model: CLIPModel, labels: list[str], templates=DEFAULT_TEMPLATES, chunk: int = 256,
                  tokenizer: CLIPTokenizer | None = None) -> torch.Tensor:  # fmt: skip
    """(L, E) unit vectors: each label's template embeddings, averaged and re-normalised."""
    if not labels:
        raise ValueError("zero-shot classification needs at least one label")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"a prompt template needs exactly one {{}} where the label goes: {bad[0]!r}")
    tokenizer = tokenizer or CLIPTokenizer.default()
    prompts = [t.format(label) for label in labels for t in templates]
    dev = next(model.parameters()).device
    ids = tokenizer(prompts).input_ids
    per_prompt = torch.cat([model.encode_text(part.to(dev)) for part in ids.split(chunk)])
    per_prompt = per_prompt.view(len(labels), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


@torch.no_grad()
def image_vectors(model: CLIPModel, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N, E) unit vectors of images given as (N, 3, H, W) in [-1, 1]."""
    dev = next(model.parameters()).device
    return torch.cat([model.encode_image(x.to(dev)) for x in images.split(chunk)])


@torch.no_grad()
def classify(model: CLIPModel, images: torch.Tensor, labels: list[str], templates=DEFAULT_TEMPLATES,
             tokenizer: CLIPTokenizer | None = None) -> torch.Tensor:  # fmt: skip
    """(N, L) probabilities over the labels for each image."""
    classes = class_vectors(model, labels, templates, tokenizer=tokenizer)
    logits = model.logit_scale.exp() * image_vectors(model, images) @ classes.T
    return logits.softmax(dim=-1).cpu()


@torch.no_grad()
def clip_score(model: CLIPModel, images: torch.Tensor, prompts: list[str],
               tokenizer: CLIPTokenizer | None = None) -> torch.Tensor:  # fmt: skip
    """(N,) CLIP score of each image with its prompt: 100 * max(cosine, 0), as torchmetrics' CLIPScore
    (Hessel et al. 2021 use 2.5 * max(cosine, 0); the ranking is the same)."""
    tokenizer = tokenizer or CLIPTokenizer.default()
    dev = next(model.parameters()).device
    text = model.encode_text(tokenizer(prompts).input_ids.to(dev))
    return (100 * (image_vectors(model, images) * text).sum(-1).clamp(min=0)).cpu()


def preprocess(images: list[Image.Image], norm) -> torch.Tensor:
    """PIL images -> (N, 3, S, S): the shorter side resized to S (bicubic), centre-cropped, normalised
    per `norm` (a weights.clip_folder.ImageNorm: size, mean, std), as CLIP's image processor does."""
    out = []
    for image in images:
        image = image.convert("RGB")
        scale = norm.size / min(image.size)
        w, h = max(norm.size, round(image.width * scale)), max(norm.size, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - norm.size) // 2, (h - norm.size) // 2
        image = image.crop((left, top, left + norm.size, top + norm.size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        out.append((x - torch.tensor(norm.mean).view(3, 1, 1)) / torch.tensor(norm.std).view(3, 1, 1))
    return torch.stack(out)


def top_k_accuracy(scores: torch.Tensor, truth: torch.Tensor, k: int = 1) -> float:
    """Share of rows whose true column is among its k highest scores."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == truth.view(-1, 1)).any(dim=1).float().mean().item()


def rank_labels(clip, images: list[Image.Image], labels: list[str], templates=DEFAULT_TEMPLATES) -> list[list]:
    """For each PIL image, [(label, probability), ...] from the most to the least likely.

    clip: a weights.clip_folder.LoadedCLIP (model, tokenizer, pixel normalisation)."""
    probs = classify(clip.model, preprocess(images, clip.norm), labels, templates, tokenizer=clip.tokenizer)
    return [sorted(zip(labels, row.tolist(), strict=True), key=lambda pair: -pair[1]) for row in probs]
