"""What every training script shares: recipes, the optimizer and LR schedule, EMA, checkpoints, metrics.

- A recipe is a TOML file read into a dataclass; `--set section.key=value` overrides one value.
  Unknown keys and wrong types are errors, so a typo never trains silently with a default.
- Checkpoints carry the recipe, step, model, optimizer, EMA and every RNG state, and are written
  to a temporary file then renamed: a run killed at any moment resumes from the last complete
  one, and continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RecipeError(ValueError):
    """A recipe that cannot be read: the message names the file or key and what is wrong."""


@dataclasses.dataclass
class DataConfig:
    """Training data: a pool made once from `seed`, and a held-out set.

    source "shapes": the shapes world (generated), plus emoji when emoji_repeats > 0;
    source "fashion-mnist": Fashion-MNIST's train split (pool = how many) and test split (heldout),
    captioned from class names (the zero-shot lesson; CLIP only).
    """

    source: str = "shapes"
    canvas: int = 64
    seed: int = 0
    pool: int = 20_000
    heldout_seed: int = 987_654_321  # never used for training
    heldout: int = 256
    # Emoji join the pool when > 0: each training-split emoji (data/emoji.py; the held-out names
    # never train) appears this many times, each time under a caption drawn from the templates.
    emoji_repeats: int = 0
    # The shapes pool's scenes (the held-out set keeps the spec's): free pixels between two objects'
    # boxes, and the share of two-object scenes. At 8x downsampling a 3-pixel gap lies inside one
    # latent cell, and the built-in model's pairs drawn as one joined blob were its largest count
    # failure; a pool with more room between objects, and more pairs, teaches it to keep them apart.
    min_gap: float = 3.0
    two_object_share: float = 0.5


@dataclasses.dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    max_steps: int = 1000
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per optimizer step
    ema_decay: float = 0.999


# --- recipes ---------------------------------------------------------------------------------------


def _coerce(value, kind, where: str, default=None):
    """Check (and gently convert, e.g. int -> float, list -> tuple) a TOML value against a field type."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table, got {value!r}")
        return _build(kind, value, where, default)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(kind)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise RecipeError(f"{where}: expected {len(items)} values, got {len(value)}")
        return tuple(_coerce(v, k, f"{where}[{i}]") for i, (v, k) in enumerate(zip(value, items, strict=True)))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool) and not (
        isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    ):
        raise RecipeError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _build(cls, table: dict, where: str, default=None):
    """The table's keys over the defaults: a recipe's own default for a nested table (its `model`,
    say), so a TOML file or `--set` changes only the keys it names."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(hints)})")
    default = cls() if default is None else default
    values = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k, getattr(default, k)) for k, v in table.items()}
    try:
        return dataclasses.replace(default, **values)
    except ValueError as e:  # a config's own check (ConfigError) on the combined values
        raise RecipeError(f"{where}: {e}") from None


def load_recipe(cls, path: str | Path | None, overrides: list[str] = ()):
    """A recipe dataclass from a TOML file (or the defaults) and `section.key=value` overrides."""
    table: dict = {}
    if path is not None:
        try:
            table = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise RecipeError(f"{path}: cannot read ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"{path}: not valid TOML ({e})") from None
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep:
            raise RecipeError(f"--set {override!r}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        node = table
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _build(cls, table, str(path or "recipe"))


# --- optimization ----------------------------------------------------------------------------------


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Linear warmup to cfg.lr, then a cosine down to cfg.lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, lr_scale=None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters. lr_scale(name) -> float multiplies the schedule's lr for
    that parameter (each group keeps its "lr_scale"; `fit` applies it); None: 1 for all."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            # No weight decay on biases and norm weights (1-D tensors), as is usual for transformers and UNets.
            groups.setdefault((p.ndim >= 2, 1.0 if lr_scale is None else float(lr_scale(name))), []).append(p)
    order = sorted(groups, key=lambda key: (not key[0], key[1]))  # decayed first, as older checkpoints have it
    param_groups = [{"params": groups[decay, scale], "weight_decay": cfg.weight_decay if decay else 0.0,
                     "lr_scale": scale} for decay, scale in order]  # fmt: skip
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=cfg.betas)


class EMA:
    """Exponential moving average of a model's weights (what gets shipped)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v, 1 - self.decay)
            else:
                self.shadow[k].copy_(v)


# --- checkpoints -----------------------------------------------------------------------------------


def rng_state() -> dict:
    """Every RNG a training step may touch, as tensors and plain tuples (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
        "gpu": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if state["gpu"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["gpu"])


def save_checkpoint(folder: Path, step: int, payload: dict) -> Path:
    """Write step-<n>.pt atomically and point `last.txt` at it (the resume target)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    for target, write in ((path, lambda f: torch.save({**payload, "step": step, "rng": rng_state()}, f)),
                          (folder / "last.txt", lambda f: f.write(path.name.encode()))):  # fmt: skip
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def load_last_checkpoint(folder: Path) -> dict | None:
    """The checkpoint `last.txt` names, or None for a fresh run."""
    pointer = folder / "last.txt"
    if not pointer.exists():
        return None
    path = folder / pointer.read_text().strip()
    try:  # weights_only: our own files, but a checkpoint folder is still input
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RecipeError(f"{path}: cannot load the checkpoint to resume from ({str(e).splitlines()[0]})") from None


class Metrics:
    """One JSON object per line: {"step": ..., "loss": ..., ...}; appended, so resumes continue it."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, **values: float) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **{k: round(float(v), 6) for k, v in values.items()}}) + "\n")


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) floats in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def scene_options(data: DataConfig) -> dict:
    """The pool's scene options for data.shapes.scenes / make_dataset (gap, two_share), checked."""
    from ..data.shapes import GAP

    if not GAP <= data.min_gap <= 16:
        raise RecipeError(f"data.min_gap must be between {GAP} (the generator's) and 16 px, got {data.min_gap}")
    if not 0 <= data.two_object_share <= 1:
        raise RecipeError(f"data.two_object_share must be between 0 and 1, got {data.two_object_share}")
    return {"gap": data.min_gap, "two_share": data.two_object_share}


def pool_scenes(data: DataConfig) -> list:
    """The shapes pool's scenes, objects and all (the layout and grounding targets read them)."""
    from ..data.shapes import scenes

    return scenes(data.seed, data.pool, data.canvas, **scene_options(data))


def shapes_tensors(data: DataConfig, heldout: bool = False) -> tuple[torch.Tensor, list[str]]:
    """The shapes pool (or the held-out set, spec scenes) as (N, 3, H, W) floats in [-1, 1], with the captions."""
    from ..data.shapes import make_dataset

    if heldout:
        images, captions = make_dataset(data.heldout_seed, data.heldout, data.canvas)
    else:
        images, captions = make_dataset(data.seed, data.pool, data.canvas, **scene_options(data))
    return image_tensor(images), captions


def emoji_tensors(data: DataConfig, heldout: bool = False, repeats: int = 1) -> tuple[torch.Tensor, list[str]]:
    """Training-split emoji, each `repeats` times under seeded varied captions, or the held-out
    emoji once each under the base caption ("an emoji of a grinning face")."""
    from ..data import emoji as emoji_data

    emoji = emoji_data.load_emoji(data.canvas)
    train_idx, heldout_idx = emoji_data.split(emoji)
    if heldout:
        return image_tensor(emoji.images[heldout_idx]), [emoji_data.caption(emoji, i) for i in heldout_idx]
    rng = np.random.default_rng(data.seed)
    idx = np.tile(train_idx, repeats)
    return image_tensor(emoji.images[idx]), [emoji_data.caption(emoji, i, rng) for i in idx]


# Training captions for Fashion-MNIST. Zero-shot evaluation uses other wordings (zero_shot.DEFAULT_TEMPLATES),
# so the classifier is built from the text tower's sense of each class name, not from memorised sentences.
FASHION_TEMPLATES = ("a black and white photo of a {}", "a {}", "a grayscale picture of a {}", "a small {}")


def fashion_tensors(data: DataConfig, heldout: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Fashion-MNIST train (first data.pool) or test (first data.heldout) images, upscaled to the canvas in
    [-1, 1] as 3 equal channels, with captions from FASHION_TEMPLATES (seeded) and the class labels."""
    from ..data.digits import FASHION_CLASSES, load_fashion_mnist

    digits = load_fashion_mnist("test" if heldout else "train")
    n = data.heldout if heldout else data.pool
    pixels = torch.from_numpy(digits.images[:n]).unsqueeze(1)
    pixels = torch.nn.functional.interpolate(pixels, size=data.canvas, mode="bilinear", antialias=True)
    labels = torch.from_numpy(digits.labels[:n])
    rng = np.random.default_rng(data.heldout_seed if heldout else data.seed)
    names = [FASHION_CLASSES[i] for i in labels.tolist()]
    captions = [FASHION_TEMPLATES[int(rng.integers(len(FASHION_TEMPLATES)))].format(c) for c in names]
    return (pixels.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous(), captions, labels


def pool_tensors(data: DataConfig) -> tuple[torch.Tensor, list[str]]:
    """What a trainer draws from: the shapes pool, plus `data.emoji_repeats` copies of the training emoji
    (or Fashion-MNIST's training images when data.source says so)."""
    if data.source == "fashion-mnist":
        return fashion_tensors(data)[:2]
    if data.source != "shapes":
        raise RecipeError(f"data.source must be shapes or fashion-mnist, got {data.source!r}")
    images, captions = shapes_tensors(data)
    if data.emoji_repeats > 0:
        more, more_captions = emoji_tensors(data, repeats=data.emoji_repeats)
        images, captions = torch.cat([images, more]), captions + more_captions
    return images, captions


def device() -> torch.device:
    """CUDA when present (each DDP rank on its own GPU), else the CPU.

    The one place a trainer's device is chosen: each trainer calls it once and passes it down."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed() -> tuple[int, int]:
    """(rank, world size): under `torchrun` join the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), world


def shard(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of a global batch.

    Every rank draws the whole global batch from the same RNG stream (the checkpointed one) and
    keeps its share, so N processes see exactly the samples and noise one process would, and the
    gradients DDP averages equal the single-process gradient of the global batch.
    """
    if len(batch) % world:
        raise RecipeError(f"batch_size {len(batch)} is not divisible by the {world} processes")
    per = len(batch) // world
    return batch[rank * per : (rank + 1) * per]


def fit(model: torch.nn.Module, loss_fn, recipe, resume: bool = False, stop_at: int | None = None,
        quiet: bool = False, on_checkpoint=None, lr_scale=None) -> dict:  # fmt: skip
    """The loop every trainer shares: AdamW with warmup + cosine, gradient accumulation and
    clipping, EMA, metrics (JSONL + loss.png), atomic checkpoints, exact resume from the last one.

    loss_fn(net, rank, world) draws a global batch (from the global torch RNG, which checkpoints
    carry), keeps this rank's `shard` of it and returns the loss of `net` (the model, or its DDP
    wrapper under `torchrun`: call it, not the model, so gradients are averaged) on that share.
    recipe has .optim, .batch_size, .log_every, .ckpt_every, .out. stop_at ends the run early, as
    a kill would. on_checkpoint(step, ema_state) runs on rank 0 after each checkpoint (sample grids).
    lr_scale(name) -> float: a per-parameter multiplier of the lr (make_optimizer).
    Returns the step, last loss, model and EMA.
    """
    out, o = Path(recipe.out), recipe.optim
    rank, world = init_distributed()
    optimizer = make_optimizer(model, o, lr_scale)
    ema = EMA(model, o.ema_decay)
    step = 0
    checkpoint = load_last_checkpoint(out) if resume else None
    if rank == 0:  # half-written files of a run that was killed mid-save: never pointed at, now removed
        for stale in out.glob(".*.pt.*"):
            stale.unlink(missing_ok=True)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        on = next(model.parameters()).device
        ema.shadow = {k: v.to(on) for k, v in checkpoint["ema"].items()}
        step = checkpoint["step"]
        set_rng_state(checkpoint["rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    metrics = Metrics(out / "metrics.jsonl")
    start, loss_value = time.perf_counter(), float("nan")
    while step < o.max_steps and (stop_at is None or step < stop_at):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, o) * group.get("lr_scale", 1.0)
        loss_value = 0.0
        for micro in range(o.grad_accum):
            # DDP averages gradients on the last micro-batch only; the others accumulate locally.
            last = world == 1 or micro == o.grad_accum - 1
            with contextlib.nullcontext() if last else net.no_sync():
                loss = loss_fn(net, rank, world)
                (loss / o.grad_accum).backward()
            loss_value += loss.item() / o.grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        step += 1
        if world > 1:  # report the global loss, not rank 0's share of it
            total = torch.tensor(loss_value, device=next(model.parameters()).device)
            torch.distributed.all_reduce(total)
            loss_value = total.item() / world
        if rank == 0 and (step % recipe.log_every == 0 or step == o.max_steps):
            rate = recipe.batch_size * o.grad_accum * recipe.log_every / (time.perf_counter() - start)
            metrics.log(step, loss=loss_value, lr=lr_at(step - 1, o), samples_per_s=rate)
            plot_loss(out / "metrics.jsonl", out / "loss.png")
            if not quiet:
                print(f"step {step}: loss {loss_value:.4f}, {rate:.1f} samples/s", flush=True)
            start = time.perf_counter()
        if rank == 0 and (step % recipe.ckpt_every == 0 or step == o.max_steps):
            payload = {"recipe": dataclasses.asdict(recipe), "model": model.state_dict(),
                       "optimizer": optimizer.state_dict(), "ema": ema.shadow}  # fmt: skip
            save_checkpoint(out, step, payload)
            if on_checkpoint is not None:
                with torch.random.fork_rng(devices=[]):  # a preview must not shift the training's random stream
                    on_checkpoint(step, ema.shadow)
    return {"step": step, "loss": loss_value, "model": model, "ema": ema}


def plot_loss(metrics_path: Path, png: Path, size: tuple[int, int] = (480, 240)) -> None:
    """The loss curve (log scale) as a small PNG beside the metrics, redrawn at each log line."""
    from PIL import Image, ImageDraw

    from ..images import save_png

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    points = [(r["step"], math.log10(r["loss"])) for r in rows if r.get("loss", 0) > 0]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    if len(points) >= 2:
        (s0, s1), (l0, l1) = (min(p[0] for p in points), max(p[0] for p in points)), (
            min(p[1] for p in points), max(p[1] for p in points))  # fmt: skip
        w, h, pad = size[0], size[1], 24

        def xy(step: float, loss: float) -> tuple[float, float]:
            return (pad + (w - 2 * pad) * (step - s0) / max(s1 - s0, 1),
                    h - pad - (h - 2 * pad) * (loss - l0) / max(l1 - l0, 1e-9))  # fmt: skip

        draw.line([xy(*p) for p in points], fill=(40, 80, 220), width=2)
        draw.text((pad, 4), f"loss {10**l1:.4g} .. {10**l0:.4g} (log scale), steps {s0}..{s1}", fill="black")
    save_png(image, png)
