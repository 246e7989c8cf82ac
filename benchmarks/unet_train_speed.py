"""Training throughput of a UNet recipe and of variants of it: what sizing a model for a CPU needs.

One training step = forward + backward of the noise prediction on a batch of random latents and
text states (no optimizer, no data): samples/s per variant, all timed in one process, alternating
rounds so a shared machine's load drift hits every variant alike.

    .venv/bin/python benchmarks/unet_train_speed.py                          # recipes/unet_builtin.toml
    .venv/bin/python benchmarks/unet_train_speed.py --threads 1 --variant "8x8 latents" model.sample_size=8 \
        --variant "attention at 16x16" \
        'model.down_block_types=["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"]' \
        'model.up_block_types=["CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]'

Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from latentdiff.train.common import load_recipe
    from latentdiff.train.unet import UNetRecipe
    from latentdiff.unet import UNet2DConditionModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "unet_builtin.toml"))
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "SET"),
                        help="a name, then recipe overrides (section.key=value) for one more variant")  # fmt: skip
    parser.add_argument("--batch", type=int, default=None, help="default: the recipe's batch_size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    variants = {"recipe": load_recipe(UNetRecipe, args.recipe)}
    for name, *overrides in args.variant:
        variants[name] = load_recipe(UNetRecipe, args.recipe, overrides)
    runs = {}
    for name, recipe in variants.items():
        torch.manual_seed(0)
        cfg, batch = recipe.model, args.batch or recipe.batch_size
        model = UNet2DConditionModel(cfg)
        inputs = (torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size),
                  torch.randint(1000, (batch,)), torch.randn(batch, 77, cfg.cross_attention_dim))  # fmt: skip
        runs[name] = (model, inputs, batch, [])
        model(*inputs).pow(2).mean().backward()  # warm-up: allocator and kernel choice
    for _ in range(args.rounds):
        for model, inputs, batch, rates in runs.values():
            start = time.perf_counter()
            model(*inputs).pow(2).mean().backward()
            rates.append(batch / (time.perf_counter() - start))
    print(f"| variant | parameters | latent | samples/s ({args.threads} threads, median of {args.rounds}) |")
    print("|---|---|---|---|")
    for name, (model, inputs, _, rates) in runs.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        side = inputs[0].shape[-1]
        print(f"| {name} | {params:.2f}M | {side}x{side} | {statistics.median(rates):.1f} |")


if __name__ == "__main__":
    main()
