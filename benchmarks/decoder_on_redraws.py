"""How well does a model's decoder render the latents its own UNet draws, against the encoder's?

For held-out shapes scenes (the split `latentdiff evaluate` checks the VAE on), each scene is decoded
from three kinds of latent and the image parsed against its caption (SHAPES.md's parser):
- the encoder's own latent (a sample of the posterior, as SDEdit starts from);
- the UNet's re-drawing of it from a noise level <= S (train/redraw.py: SDEdit with the scene's
  caption, Euler on 20 Karras steps, CFG 2.5 at sigma <= 15), for each S given.
The UNet draws near the encoder's latent space but not on it, so a decoder that renders only the
encoder's latents well fails more often on the redraws; `recipes/vae_shapes_redraw.toml` trains one
for both. Folders with the same UNet and encoder get the same latents (same seeds), so their lines
compare the decoders alone.

    .venv/bin/python benchmarks/decoder_on_redraws.py [models/shapes-64 ...] [--scenes 400] [--max-sigma 0.5 2 5]

Prints one line per folder and latent kind; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@torch.no_grad()
def failures(model, latents: torch.Tensor, captions: list[str]) -> Counter:
    """What each decoded image gets wrong first (data.shapes.caption_mismatch), counted; None = holds."""
    from latentdiff.data.shapes import caption_mismatch

    decode = model.vae.decode
    images = torch.cat([decode(chunk.to(model.device, model.dtype)).float().cpu() for chunk in latents.split(64)])
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return Counter(caption_mismatch(p, c) for p, c in zip(pixels, captions, strict=True))


def line(folder: str, kind: str, counts: Counter) -> str:
    n = sum(counts.values())
    wrong = {k: v for k, v in counts.items() if k is not None}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(wrong.items(), key=lambda kv: -kv[1]))
    return f"{folder}: {kind}: {sum(wrong.values()) / n:.1%} of {n} fail their caption ({detail or 'none'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=[str(ROOT / "models" / "shapes-64")])
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--max-sigma", type=float, nargs="+", default=[0.5, 2.0, 5.0])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from latentdiff.pipeline import _encode
    from latentdiff.train.common import DataConfig, shapes_tensors
    from latentdiff.train.redraw import redrawn_latents
    from latentdiff.weights import load

    images, captions = shapes_tensors(DataConfig(heldout=args.scenes), heldout=True)
    for folder in args.folders:
        model = load(folder)
        generators = [torch.Generator().manual_seed(args.seed + i) for i in range(len(images))]
        clean = torch.cat([_encode(model, chunk.to(model.device, model.dtype), generators[i : i + 64])
                           for i, chunk in zip(range(0, len(images), 64), images.split(64), strict=True)])  # fmt: skip
        print(line(folder, "encoder latents", failures(model, clean / model.config.vae.scaling_factor, captions)))
        for sigma in args.max_sigma:
            drawn = redrawn_latents(model, images, captions, sigma, seed=args.seed)
            print(line(folder, f"UNet redraws from sigma <= {sigma:g}", failures(model, drawn, captions)))


if __name__ == "__main__":
    main()
