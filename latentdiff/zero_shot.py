"""Zero-shot classification with a CLIP model: score an image against a text for every label.

As in Radford et al. 2021 (section 3.1.4), each label is written into several prompt templates
("a photo of a {}", ...); the template embeddings are averaged and re-normalised into one class
vector, and an image's class probabilities are the softmax of its scaled cosines with those vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import CLIPModel
from .tokenizer import CLIPTokenizer

DEFAULT_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a {}")


@torch.no_grad()
def class_vectors(model: CLIPModel, labels: list[str], templates=DEFAULT_TEMPLATES, chunk: int = 256) -> torch.Tensor:
    """(L, E) unit vectors: each label's template embeddings, averaged and re-normalised."""
    if not labels:
        raise ValueError("zero-shot classification needs at least one label")
    tokenizer = CLIPTokenizer.default()
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
def classify(model: CLIPModel, images: torch.Tensor, labels: list[str], templates=DEFAULT_TEMPLATES) -> torch.Tensor:
    """(N, L) probabilities over the labels for each image."""
    logits = model.logit_scale.exp() * image_vectors(model, images) @ class_vectors(model, labels, templates).T
    return logits.softmax(dim=-1).cpu()


def top_k_accuracy(scores: torch.Tensor, truth: torch.Tensor, k: int = 1) -> float:
    """Share of rows whose true column is among its k highest scores."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == truth.view(-1, 1)).any(dim=1).float().mean().item()
