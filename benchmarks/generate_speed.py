"""Text to one 64x64 image with the built-in model, latentdiff vs diffusers on the same folder.

Whole txt2img: prompt encoding, the sampler's guided UNet steps (batch 2 per step for CFG), the VAE
decode. Both run the same weights (the diffusers folder under models/) with the Euler sampler and
Karras sigmas (the built-in model's default), fp32 on the CPU, each in its own subprocess,
alternating rounds so a shared machine's load drift hits all alike. Batched throughput (images/s at
batch 8 and 32) is reported too. Three rows:
- latentdiff: the built-in model's default settings (cli.DEFAULTS: 16 steps, CFG only at sigma <= 15,
  the noisier steps running the conditional half alone), what `latentdiff generate` does;
- latentdiff-every-step: --steps steps, guided at every step, the same work as
- diffusers: --steps steps, guided at every step.

    .venv/bin/python benchmarks/generate_speed.py                      # ~2 min
    .venv/bin/python benchmarks/generate_speed.py --steps 50 --threads 2

Writes benchmarks/results/generate_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from latentdiff.cli import DEFAULTS  # noqa: E402 (after the path setup)

PROMPT = "a red circle above a blue square"


IMPLS = ("latentdiff", "latentdiff-every-step", "diffusers")
BUILTIN = DEFAULTS["builtin"]


def runner(impl: str, model: str, steps: int, cfg: float):
    """A function batch -> images for one implementation, set up outside the timing."""
    if impl.startswith("latentdiff"):
        from latentdiff.pipeline import last_images, txt2img
        from latentdiff.weights import load

        sd = load(model)
        settings = dict(steps=steps, guidance_scale=cfg, sampler="euler", sigmas="karras")
        if impl == "latentdiff":
            settings.update(steps=BUILTIN["steps"], guidance_max_sigma=BUILTIN["cfg_max_sigma"])
        return lambda batch: last_images(txt2img(sd, [PROMPT] * batch, seed=0, **settings))
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None)
    # The built-in model's default: Karras sigmas over SD's leading range (tests/test_pipeline.py: the same).
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return lambda batch: (
        pipe(
            [PROMPT] * batch, num_inference_steps=steps, guidance_scale=cfg, generator=generator, output_type="pt"
        ).images
    )


def worker(impl: str, model: str, steps: int, cfg: float, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    run = runner(impl, model, steps, cfg)
    with torch.inference_mode():
        run(1)  # warm-up: first-call allocations
        single = []
        for _ in range(reps):
            start = time.perf_counter()
            run(1)
            single.append(time.perf_counter() - start)
        throughput = {}
        for batch in (8, 32):
            start = time.perf_counter()
            run(batch)
            throughput[batch] = batch / (time.perf_counter() - start)
    return {"impl": impl, "single_s": statistics.median(single), "single_all_s": single, "images_per_s": throughput}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(ROOT / "models" / "shapes-64"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=2.5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.steps, args.cfg, args.reps, args.threads)))
        return
    runs: dict[str, list[dict]] = {impl: [] for impl in IMPLS}
    for _ in range(args.rounds):
        for impl in runs:
            cmd = [sys.executable, __file__, "--worker", impl, "--model", args.model, "--steps", str(args.steps),
                   "--cfg", str(args.cfg), "--reps", str(args.reps), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[impl].append(json.loads(out.strip().splitlines()[-1]))
    best = {impl: min(r["single_s"] for r in rs) for impl, rs in runs.items()}
    rate = {impl: {b: max(r["images_per_s"][b] for r in rs) for b in ("8", "32")} for impl, rs in runs.items()}
    result = {
        "settings": {
            "model": Path(args.model).name,
            "steps": args.steps,
            "builtin_default": BUILTIN,
            "cfg": args.cfg,
            "sampler": "euler",
            "threads": args.threads,
            "size": "64x64",
            "dtype": "float32",
        },  # fmt: skip
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "single_image_s": best,
        "ratio_diffusers_over_latentdiff": best["diffusers"] / best["latentdiff"],
        "ratio_diffusers_over_latentdiff_every_step": best["diffusers"] / best["latentdiff-every-step"],
        "images_per_s": rate,
        "runs": runs,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# One 64x64 image: Euler (Karras sigmas), CFG {args.cfg}, {args.threads} CPU threads, fp32; latentdiff at "
        f"the built-in model's default ({BUILTIN['steps']} steps, CFG at sigma <= {BUILTIN['cfg_max_sigma']:g}), "
        f"the other two {args.steps} steps guided throughout",
        "",
        "| | one image (s) | images/s, batch 8 | images/s, batch 32 |",
        "|---|---|---|---|",
        *[f"| {impl} | {best[impl]:.3f} | {rate[impl]['8']:.1f} | {rate[impl]['32']:.1f} |" for impl in runs],
        "",
        f"diffusers / latentdiff time for one image: {result['ratio_diffusers_over_latentdiff']:.2f}x at the built-in "
        f"model's default, {result['ratio_diffusers_over_latentdiff_every_step']:.2f}x at the same {args.steps} "
        f"steps guided throughout (best of {args.rounds} rounds x {args.reps} images each).",
    ]
    (out / "generate_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
