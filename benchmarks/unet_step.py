"""One UNet denoising step, latentdiff vs diffusers, side by side in one run.

The default is what a txt2img step costs at SD 1.5's size: batch 2 (classifier-free guidance),
64x64 latents (512x512 pixels), 77 context tokens, fp32, random weights (speed does not depend on
their values). Each implementation runs in its own subprocess so peak memory is its own.

    .venv/bin/python benchmarks/unet_step.py                 # sd15, 2 rounds x 2 timed steps each (~4 min)
    .venv/bin/python benchmarks/unet_step.py --preset tiny --latent 32 --reps 10

Writes benchmarks/results/unet_step-<preset>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(impl: str, preset_name: str):
    from latentdiff.config import preset
    from latentdiff.unet import UNet2DConditionModel
    from latentdiff.weights.diffusers_config import unet_to_diffusers

    cfg = preset(preset_name).unet
    torch.manual_seed(0)
    if impl == "latentdiff":
        return UNet2DConditionModel(cfg).eval(), lambda m, x, t, c: m(x, t, c)
    from diffusers import UNet2DConditionModel as Ref

    ref = Ref(**{k: v for k, v in unet_to_diffusers(cfg).items() if not k.startswith("_")}).eval()
    return ref, lambda m, x, t, c: m(x, t, encoder_hidden_states=c).sample


def worker(impl: str, preset_name: str, batch: int, latent: int, reps: int) -> dict:
    from latentdiff.config import preset

    model, call = build(impl, preset_name)
    cfg = preset(preset_name).unet
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, latent, latent, generator=gen)
    context = torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)
    t = torch.tensor(500.0)
    times = []
    with torch.inference_mode():
        call(model, x, t, context)  # warm-up: first-call allocations and kernel selection
        for _ in range(reps):
            start = time.perf_counter()
            call(model, x, t, context)
            times.append(time.perf_counter() - start)
    return {
        "impl": impl,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="sd15")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--reps", type=int, default=2, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of each implementation")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.preset, args.batch, args.latent, args.reps)))
        return

    # Alternate the two implementations round by round, so drift in a shared machine's load hits both.
    runs: dict[str, list[dict]] = {"latentdiff": [], "diffusers": []}
    for _ in range(args.rounds):
        for impl in runs:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                impl,
                "--preset",
                args.preset,
                "--batch",
                str(args.batch),
                "--latent",
                str(args.latent),
                "--reps",
                str(args.reps),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[impl].append(json.loads(out.strip().splitlines()[-1]))
    results = {}
    for impl, rs in runs.items():
        times = [t for r in rs for t in r["times_s"]]
        results[impl] = {
            "impl": impl,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "times_s": times,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
        }
        r = results[impl]
        print(f"{impl:>10}: median {r['median_s']:.3f} s/step, peak RSS {r['peak_rss_mib']:.0f} MiB")

    import diffusers

    ours, theirs = results["latentdiff"], results["diffusers"]
    report = {
        "benchmark": "unet_step",
        "preset": args.preset,
        "batch": args.batch,
        "latent": args.latent,
        "reps": args.reps,
        "rounds": args.rounds,
        "dtype": "float32",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
        "speed_ratio_diffusers_over_latentdiff": theirs["median_s"] / ours["median_s"],
        "memory_ratio_latentdiff_over_diffusers": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"unet_step-{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(
        f"# UNet step, {args.preset}, batch {args.batch}, {args.latent}x{args.latent} latent, fp32, "
        f"{report['threads']} threads\n\n"
        "| implementation | median s/step | min s/step | peak RSS MiB |\n|---|---|---|---|\n"
        + "".join(
            f"| {r['impl']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['peak_rss_mib']:.0f} |\n"
            for r in (ours, theirs)
        )
        + f"\nspeed ratio (diffusers time / latentdiff time): {report['speed_ratio_diffusers_over_latentdiff']:.3f}\n"
        f"\nRerun: `.venv/bin/python benchmarks/unet_step.py --preset {args.preset} --batch {args.batch} "
        f"--latent {args.latent} --reps {args.reps} --rounds {args.rounds}`\n"
    )
    ratio = report["speed_ratio_diffusers_over_latentdiff"]
    print(f"speed ratio diffusers/latentdiff = {ratio:.3f}; wrote {stem}.json/.md")


if __name__ == "__main__":
    main()
