"""Train CLIP on the shapes world, top to bottom: the contrastive objective of Radford et al. 2021.

    latentdiff train clip --recipe recipes/clip_builtin.toml [--set optim.max_steps=2000] [--resume]

Per step: embed a batch of N images and their N captions, take the N x N matrix of scaled cosine
similarities, and apply cross-entropy along both axes so each image picks its caption and each
caption its image (clip.contrastive_loss); the temperature is learned. The text tower is the same
CLIPTextModel that conditions the UNet, so its per-token states can be used there after training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..clip import CLIPModel, contrastive_loss
from ..config import CLIPTextConfig, CLIPVisionConfig
from ..tokenizer import CLIPTokenizer
from .common import (
    DataConfig,
    Metrics,
    OptimConfig,
    device,
    fashion_tensors,
    fit,
    image_tensor,
    pool_tensors,
    shapes_tensors,
    shard,
)


def _text() -> CLIPTextConfig:
    return CLIPTextConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)


def _vision() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, image_size=64, patch_size=8
    )


@dataclasses.dataclass
class CLIPRecipe:
    text: CLIPTextConfig = dataclasses.field(default_factory=_text)
    vision: CLIPVisionConfig = dataclasses.field(default_factory=_vision)
    projection_dim: int = 128
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 128  # more captions per batch: harder negatives, a better-shaped text space
    log_every: int = 50
    ckpt_every: int = 500
    out: str = "runs/clip"


def build(recipe: CLIPRecipe) -> CLIPModel:
    if recipe.vision.image_size != recipe.data.canvas:
        raise ValueError(f"vision.image_size {recipe.vision.image_size} must equal data.canvas {recipe.data.canvas}")
    return CLIPModel(recipe.text, recipe.vision, recipe.projection_dim)


def train(recipe: CLIPRecipe, resume: bool = False, stop_at: int | None = None, quiet: bool = False) -> dict:
    torch.manual_seed(recipe.data.seed)
    dev = device()
    model = build(recipe).to(dev)
    images, captions = pool_tensors(recipe.data)
    ids = CLIPTokenizer.default()(captions).input_ids  # (N, 77); shapes captions never need truncating

    def loss_fn(net, rank: int, world: int) -> torch.Tensor:
        # Under DDP each rank contrasts its own share only (fewer negatives than one process with
        # the whole batch would see; gathering the embeddings across ranks is not done).
        batch = shard(torch.randint(len(images), (recipe.batch_size,)), rank, world)
        return contrastive_loss(net(ids[batch].to(dev), images[batch].to(dev)))

    def report(step: int, ema_state: dict) -> None:  # zero-shot accuracy of the raw and EMA weights
        ema_model = build(recipe).to(dev)
        ema_model.load_state_dict(ema_state)
        scores = {f"{k}_raw": v for k, v in zero_shot_report(model, recipe.data).items()}
        scores |= {f"{k}_ema": v for k, v in zero_shot_report(ema_model, recipe.data).items()}
        model.train()
        Metrics(Path(recipe.out) / "zero_shot.jsonl").log(step, **scores)
        if not quiet:
            print(f"step {step}: zero-shot " + ", ".join(f"{k} {v:.1%}" for k, v in scores.items()), flush=True)

    result = fit(model, loss_fn, recipe, resume, stop_at, quiet, on_checkpoint=report)
    result["ema_model"] = build(recipe).to(dev)
    result["ema_model"].load_state_dict(result["ema"].shadow)
    return result


@torch.no_grad()
def evaluate(model: CLIPModel, data: DataConfig) -> float:
    """Held-out retrieval: how often an image's best-scoring caption among all held-out captions
    is its own (a caption drawn twice counts as right either way). For Fashion-MNIST, whose captions
    are only class names, the zero-shot accuracy on its test split instead."""
    if data.source == "fashion-mnist":
        return zero_shot_report(model, data)["fashion"]
    model.eval()
    dev = next(model.parameters()).device
    images, captions = shapes_tensors(data, heldout=True)
    unique = sorted(set(captions))
    text = model.encode_text(CLIPTokenizer.default()(unique).input_ids.to(dev))
    picks = (model.encode_image(images.to(dev)) @ text.T).argmax(dim=1)
    return sum(unique[p] == c for p, c in zip(picks.tolist(), captions, strict=True)) / len(captions)


@torch.no_grad()
def zero_shot_report(model: CLIPModel, data: DataConfig) -> dict[str, float]:
    """Zero-shot accuracy on held-out one-object scenes (colour among 8, shape among 3, each label
    averaged over templates naming the other attribute) and, when the recipe trains on emoji, how
    often an emoji's own name ranks in the top 5 of all names (training and held-out emoji apart)."""
    from ..data.emoji import load_emoji, split
    from ..data.shapes import COLOURS, SHAPES, parse_caption
    from ..evaluate import emoji_top5
    from ..zero_shot import classify, top_k_accuracy

    model.eval()
    if data.source == "fashion-mnist":
        from ..data.digits import FASHION_CLASSES

        images, _, labels = fashion_tensors(data, heldout=True)
        return {"fashion": top_k_accuracy(classify(model, images, list(FASHION_CLASSES)), labels)}
    images, captions = shapes_tensors(data, heldout=True)
    parsed = [parse_caption(c) for c in captions]
    single = [(i, p["objects"][0]) for i, p in enumerate(parsed) if p["relation"] is None]
    scores = {}
    if single:
        x = images[[i for i, _ in single]]
        colours, shapes = list(COLOURS), list(SHAPES)
        by_colour = classify(model, x, colours, templates=[f"a {{}} {s}" for s in shapes])
        by_shape = classify(model, x, shapes, templates=[f"a {c} {{}}" for c in colours])
        scores["colour"] = top_k_accuracy(by_colour, torch.tensor([colours.index(o[1]) for _, o in single]))
        scores["shape"] = top_k_accuracy(by_shape, torch.tensor([shapes.index(o[2]) for _, o in single]))
    if data.emoji_repeats:
        emoji = load_emoji(data.canvas)
        train_idx, heldout_idx = split(emoji)
        some_train = train_idx[:: max(1, len(train_idx) // 256)]  # about as many as are held out
        for part, idx in (("emoji_train_top5", some_train), ("emoji_heldout_top5", heldout_idx)):
            scores[part] = emoji_top5(
                model, image_tensor(emoji.images[idx]), [emoji.names[i] for i in idx], emoji.names
            )
    return scores
