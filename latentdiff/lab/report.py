"""What every lesson writes: its figure and a JSON of its numbers, side by side in one folder."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..images import save_png
from ..weights.io import write_json
from .data import LabData


def run_facts(data: LabData, epochs: int, seed: int, seconds: float, dev: torch.device) -> dict:
    """The settings and cost of a run, recorded beside its numbers so a reader can reproduce them."""
    return {
        "dataset": data.name,
        "attribution": data.attribution,
        "train_images": len(data.train),
        "test_images": len(data.test),
        "epochs": epochs,
        "seed": seed,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "wall_seconds": round(seconds, 1),
    }


def write_lesson(out: Path, stem: str, figure: Image.Image, metrics: dict) -> tuple[Path, Path]:
    """out/stem.png and out/stem.json, each written to a temporary file and renamed."""
    png, json_path = Path(out) / f"{stem}.png", Path(out) / f"{stem}.json"
    save_png(figure, png)
    write_json(metrics, json_path)
    return png, json_path
