"""What every training script shares: recipes, the optimizer and LR schedule, EMA, checkpoints, metrics.

- A recipe is a TOML file read into a dataclass; `--set section.key=value` overrides one value.
  Unknown keys and wrong types are errors, so a typo never trains silently with a default.
- Checkpoints carry the recipe, step, model, optimizer, EMA and every RNG state, and are written
  to a temporary file then renamed: a run killed at any moment resumes from the last complete
  one, and continues exactly as if it had never stopped.
"""

from __future__ import annotations

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
    """Training data from the shapes world: a pool generated once from `seed`, and a held-out set."""

    canvas: int = 64
    seed: int = 0
    pool: int = 20_000
    heldout_seed: int = 987_654_321  # never used for training
    heldout: int = 256


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


def _coerce(value, kind, where: str):
    """Check (and gently convert, e.g. int -> float, list -> tuple) a TOML value against a field type."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table, got {value!r}")
        return _build(kind, value, where)
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


def _build(cls, table: dict, where: str):
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(hints)})")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in table.items()})


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


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # No weight decay on biases and norm weights (1-D tensors), as is usual for transformers and UNets.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


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


def shapes_tensors(data: DataConfig, heldout: bool = False) -> tuple[torch.Tensor, list[str]]:
    """The pool (or the held-out set) as (N, 3, H, W) floats in [-1, 1], with the captions."""
    from ..data.shapes import make_dataset

    seed, n = (data.heldout_seed, data.heldout) if heldout else (data.seed, data.pool)
    images, captions = make_dataset(seed, n, data.canvas)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, captions


def fit(model: torch.nn.Module, loss_fn, recipe, resume: bool = False, stop_at: int | None = None,
        quiet: bool = False) -> dict:  # fmt: skip
    """The loop every trainer shares: AdamW with warmup + cosine, gradient accumulation and
    clipping, EMA, metrics, atomic checkpoints, and exact resume from the last one.

    loss_fn() draws its own batch (from the global torch RNG, which checkpoints carry) and returns
    the loss of one micro-batch. recipe has .optim, .batch_size, .log_every, .ckpt_every, .out.
    stop_at ends the run early, as a kill would. Returns the step, last loss, model and EMA.
    """
    out, o = Path(recipe.out), recipe.optim
    optimizer = make_optimizer(model, o)
    ema = EMA(model, o.ema_decay)
    step = 0
    checkpoint = load_last_checkpoint(out) if resume else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        ema.shadow = checkpoint["ema"]
        step = checkpoint["step"]
        set_rng_state(checkpoint["rng"])
    metrics = Metrics(out / "metrics.jsonl")
    start, loss_value = time.perf_counter(), float("nan")
    while step < o.max_steps and (stop_at is None or step < stop_at):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, o)
        loss_value = 0.0
        for _ in range(o.grad_accum):
            loss = loss_fn()
            (loss / o.grad_accum).backward()
            loss_value += loss.item() / o.grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        step += 1
        if step % recipe.log_every == 0 or step == o.max_steps:
            rate = recipe.batch_size * o.grad_accum * recipe.log_every / (time.perf_counter() - start)
            metrics.log(step, loss=loss_value, lr=lr_at(step - 1, o), samples_per_s=rate)
            if not quiet:
                print(f"step {step}: loss {loss_value:.4f}, {rate:.1f} samples/s", flush=True)
            start = time.perf_counter()
        if step % recipe.ckpt_every == 0 or step == o.max_steps:
            payload = {"recipe": dataclasses.asdict(recipe), "model": model.state_dict(),
                       "optimizer": optimizer.state_dict(), "ema": ema.shadow}  # fmt: skip
            save_checkpoint(out, step, payload)
    return {"step": step, "loss": loss_value, "model": model, "ema": ema}
