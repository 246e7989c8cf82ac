"""Stable Diffusion 1.5 on the CPU: latentdiff vs diffusers vs stable-diffusion.cpp, side by side, one run.

Every part a txt2img run is made of, at SD 1.5's size with the same random weights (speed does not
depend on their values): the CLIP text encoder, one UNet step (32x32 and 64x64 latents, batch 1 and 2),
the VAE decode (256x256 and 512x512), and a whole 512x512 txt2img at 20 Euler steps, CFG 7.5. For
each: the median time, the peak RSS while it ran, our output's max abs difference from diffusers',
the FLOPs, the GFLOP/s achieved and its fraction of this machine's fp32 matmul peak (measured in
the same run). stable-diffusion.cpp runs the same weights from our single-file export, whole
txt2img only (its Python API has no per-part entry points; its log gives the per-step time).

    .venv/bin/python benchmarks/sd_cpu.py                  # everything, ~40 min on 2 cores
    .venv/bin/python benchmarks/sd_cpu.py --parts unet,vae --reps 2
    .venv/bin/python benchmarks/sd_cpu.py --preset tiny --out /tmp/bench   # the smoke test's run

Each implementation and part runs in its own subprocess (its own peak RSS, nothing shared), the
implementations alternating. "latentdiff" is the default, exact path (cpu_kernels: oneDNN Linear and
packed convolutions); "latentdiff-plain" is the same code with those kernels off (LATENTDIFF_ONEDNN=0),
which shows what they buy. Writes <out>/sd_cpu.json and sd_cpu.md (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT = "a photograph of an astronaut riding a horse"
IMPLS = ("latentdiff", "latentdiff-plain", "diffusers")


def part_names(preset: str) -> dict[str, dict]:
    """The measured parts. Sizes are in pixels; the tiny preset's are scaled down for the smoke test."""
    big = preset != "tiny"
    lat = (32, 64) if big else (8, 16)
    px = (256, 512) if big else (32, 64)
    parts = {"text": {"kind": "text", "batch": 2}}
    for size in lat:
        for batch in (1, 2):
            parts[f"unet-{size}-b{batch}"] = {"kind": "unet", "latent": size, "batch": batch}
    for size in px:
        parts[f"vae-{size}"] = {"kind": "vae", "size": size}
    parts[f"txt2img-{px[1]}"] = {"kind": "txt2img", "size": px[1]}
    return parts


# --- the machine ------------------------------------------------------------------------------------


def machine() -> dict:
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1] for line in info.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f" {f} " in f" {flags} "]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "memory_gib": round(memory, 1),
            "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


def matmul_peak(threads: int, n: int = 4096, reps: int = 5) -> dict:
    """fp32 GFLOP/s of a large square matmul (what torch.mm reaches) and of a large 3x3 convolution
    (oneDNN with a packed weight): the peak each kind of layer could reach on this machine."""
    torch.set_num_threads(threads)
    from latentdiff.cpu_kernels import accelerate

    def best(fn, flops: float) -> float:
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    a, b = torch.randn(n, n), torch.randn(n, n)
    conv = accelerate(torch.nn.Conv2d(640, 640, 3, padding=1)).eval()
    x = torch.randn(2, 640, 32, 32)
    with torch.inference_mode():
        mm = best(lambda: a @ b, 2 * n**3)
        cv = best(lambda: conv(x), 2 * 2 * 32 * 32 * 640 * 640 * 9)
    return {"matmul_gflops": round(mm, 1), "conv3x3_gflops": round(cv, 1), "peak_gflops": round(max(mm, cv), 1)}


# --- one measurement, in a subprocess ---------------------------------------------------------------


def _reset_peak_rss() -> None:
    """Linux: restart the peak-RSS counter (VmHWM), so loading the weights is not counted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _count_flops(fn) -> float:
    """FLOPs of one call, counted on PyTorch's plain kernels (the counter does not know oneDNN's ops)."""
    from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

    from latentdiff import cpu_kernels

    sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    try:

        @register_flop_formula(sdpa)
        def _(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            b, h, n, d = query_shape
            return 2 * b * h * n * key_shape[-2] * (d + value_shape[-1])  # q k^T, then p v
    except RuntimeError:  # already registered
        pass
    enabled, cpu_kernels.ENABLED = cpu_kernels.ENABLED, False
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return float(counter.get_total_flops())
    finally:
        cpu_kernels.ENABLED = enabled


def _inputs(part: dict, text_width: int, vae_levels: int):
    """The part's inputs, the same in every worker. vae_levels: the VAE's block count (8x down for SD's 4)."""
    gen = torch.Generator().manual_seed(0)
    if part["kind"] == "unet":
        b, s = part["batch"], part["latent"]
        context = torch.randn(b, 77, text_width, generator=gen)
        return torch.randn(b, 4, s, s, generator=gen), torch.tensor(500.0), context
    if part["kind"] == "vae":
        s = part["size"] // 2 ** (vae_levels - 1)
        return (torch.randn(1, 4, s, s, generator=gen),)
    return ()


def _ours(folder: Path, part: dict):
    """(callable, flops) for latentdiff, with only the part's component loaded."""
    from latentdiff.pipeline import last_images, txt2img
    from latentdiff.weights import load

    model = load(folder)
    kind = part["kind"]
    if kind == "txt2img":
        s, deep = part["size"], part.get("deep_cache", 1)
        return lambda steps=part["steps"]: last_images(txt2img(model, PROMPT, steps=steps, guidance_scale=7.5,
                                                               sampler="euler", seed=0, height=s, width=s,
                                                               deep_cache=deep))  # fmt: skip
    if kind == "text":
        ids = model.tokenizer([PROMPT, ""]).input_ids
        del model.unet, model.vae
        return lambda: model.text_encoder.encode(ids)
    inputs = _inputs(part, model.config.text.hidden_size, len(model.config.vae.block_out_channels))
    if kind == "unet":
        unet = model.unet
        del model.vae, model.text_encoder
        return lambda: unet(*inputs)
    vae = model.vae
    del model.unet, model.text_encoder
    return lambda: vae.decode(*inputs)


def _diffusers(folder: Path, part: dict):
    import diffusers
    import transformers

    kind = part["kind"]
    if kind == "txt2img":
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
        # Our "euler" = diffusers' Euler with leading spacing and offset 1 (tests/test_pipeline.py).
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config, steps_offset=1,
                                                                      timestep_spacing="leading")  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        s = part["size"]
        return lambda steps=part["steps"]: pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, height=s,
                                                width=s, generator=torch.Generator().manual_seed(0),
                                                output_type="pt").images  # fmt: skip
    if kind == "text":
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
        encoder = transformers.CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
        ids = tokenizer([PROMPT, ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
        return lambda: encoder(ids).last_hidden_state
    if kind == "unet":
        unet = diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
        x, t, context = _inputs(part, unet.config.cross_attention_dim, 0)
        return lambda: unet(x, t, encoder_hidden_states=context).sample
    vae = diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    (z,) = _inputs(part, 0, len(vae.config.block_out_channels))
    return lambda: vae.decode(z).sample


def worker(impl: str, folder: Path, part: dict, reps: int, threads: int, out: Path) -> dict:
    torch.set_num_threads(threads)
    with torch.inference_mode():
        if impl == "latentdiff-fast":
            part = part | {"deep_cache": part["fast_deep_cache"]}
        fn = _diffusers(folder, part) if impl == "diffusers" else _ours(folder, part)
        _reset_peak_rss()
        # The untimed first call: oneDNN picks its kernels, our convolutions pack their weights. A
        # whole txt2img warms up with 1 step (the same kernels), not with a whole run.
        fn(1) if part["kind"] == "txt2img" else fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peak = _peak_rss_mib()
        flops = _count_flops(fn) if impl == "latentdiff" and part["kind"] != "txt2img" else None
    torch.save(result.float().cpu(), out)
    return {"times_s": times, "peak_rss_mib": round(peak), "flops": flops}


# --- the run ----------------------------------------------------------------------------------------


def write_weights(preset: str, folder: Path) -> Path:
    """Random weights for `preset`, as a diffusers folder and as one SD single file (for sd.cpp)."""
    from latentdiff.model import StableDiffusion
    from latentdiff.weights import save
    from latentdiff.weights.single_file_io import save_single_file

    if not (folder / "model_index.json").exists():
        model = StableDiffusion.from_preset(preset, seed=0)
        save(model, folder)
        if preset != "tiny":
            save_single_file(model, folder.with_suffix(".safetensors"))
    return folder


def run_part(impl: str, folder: Path, name: str, part: dict, reps: int, threads: int, scratch: Path) -> dict:
    out = scratch / f"{name}-{impl}.pt"
    cmd = [sys.executable, __file__, "--worker", impl, "--weights", str(folder), "--part", json.dumps(part),
           "--reps", str(reps), "--threads", str(threads), "--result", str(out)]  # fmt: skip
    env = dict(os.environ, LATENTDIFF_ONEDNN="0" if impl == "latentdiff-plain" else "1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{impl} {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"output": str(out)}


def sdcpp_part(single_file: Path, size: int, steps: int, run_steps: int, threads: int) -> dict | str:
    """sd.cpp's txt2img at `run_steps` steps; its whole `steps`-step time is text + steps x its mean
    step + decode, from its own log (running all 20 steps at 512x512 costs ~15 min of this machine)."""
    try:
        from benchmarks import sdcpp
    except ImportError as e:
        return f"not run ({e})"
    try:
        r = sdcpp.run(str(single_file), PROMPT, steps=run_steps, size=size, seed=0, threads=threads, cfg_scale=7.5)
    except RuntimeError as e:
        return f"not run ({str(e).splitlines()[0]})"
    if run_steps != steps and r.get("per_step_s") and r.get("decode_s") is not None:
        r[f"txt2img_{steps}_steps_s"] = round(r.get("text_s", 0) + steps * r["per_step_s"] + r["decode_s"], 2)
        r["whole_time_from"] = f"text + {steps} x mean step + decode, from a {run_steps}-step run"
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="sd15")
    p.add_argument("--parts", default=None, help="comma list of text,unet,vae,txt2img (default: all)")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--reps", type=int, default=3, help="timed calls per part (after one untimed call)")
    p.add_argument("--steps", type=int, default=20, help="txt2img steps")
    p.add_argument("--txt2img-reps", type=int, default=1, help="timed whole txt2img runs (after a 1-step one)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no-sdcpp", action="store_true")
    p.add_argument("--sdcpp-steps", type=int, default=3, help="steps sd.cpp actually runs (its per-step time "
                   "gives the --steps total)")  # fmt: skip
    p.add_argument("--deep-cache", type=int, default=3, metavar="N",
                   help="fast mode for txt2img (latentdiff-fast): DeepCache every N calls; 1 = not run")  # fmt: skip
    p.add_argument("--cache", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "latentdiff-bench"),
                   help="where the random weights are written once (~8 GB for sd15)")  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        part = json.loads(args.part)
        print(json.dumps(worker(args.worker, Path(args.weights), part, args.reps, args.threads, Path(args.result))))
        return

    impls = args.impls.split(",")
    unknown = set(impls) - set(IMPLS)
    if unknown or "latentdiff" not in impls:
        raise SystemExit(f"--impls: choose from {', '.join(IMPLS)} and include latentdiff (got {args.impls})")
    parts = part_names(args.preset)
    if args.parts:
        wanted = set(args.parts.split(","))
        parts = {k: v for k, v in parts.items() if v["kind"] in wanted}
    scratch = Path(args.cache)
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"writing random {args.preset} weights to {scratch} (once)", flush=True)
    folder = write_weights(args.preset, scratch / f"{args.preset}-random")
    report = {"machine": machine(), "threads": args.threads, "preset": args.preset, "reps": args.reps,
              "txt2img_reps": args.txt2img_reps, "steps": args.steps, "prompt": PROMPT, "parts": {}}  # fmt: skip
    import diffusers

    report["machine"]["diffusers"] = diffusers.__version__
    report["machine"] |= matmul_peak(args.threads)
    print(f"machine: {report['machine']}", flush=True)
    for name, part in parts.items():
        part_impls, reps = impls, args.reps
        if part["kind"] == "txt2img":  # minutes per run at 512x512: the plain kernels show in the parts already
            part = part | {"steps": args.steps, "fast_deep_cache": args.deep_cache}
            part_impls = [i for i in impls if i != "latentdiff-plain"] + (
                ["latentdiff-fast"] if args.deep_cache > 1 else []
            )
            reps = args.txt2img_reps
        runs = {}
        for impl in part_impls:  # one after the other, so a shared machine's drift hits each alike
            runs[impl] = run_part(impl, folder, name, part, reps, args.threads, scratch)
        report["parts"][name] = summarise(part, runs, report["machine"]["peak_gflops"])
        print(line(name, report["parts"][name]), flush=True)
    if args.preset != "tiny" and not args.no_sdcpp and any(p["kind"] == "txt2img" for p in parts.values()):
        size = next(p["size"] for p in parts.values() if p["kind"] == "txt2img")
        report["sdcpp"] = sdcpp_part(folder.with_suffix(".safetensors"), size, args.steps, args.sdcpp_steps,
                                     args.threads)  # fmt: skip
        print(f"stable-diffusion.cpp: {report['sdcpp']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sd_cpu.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "sd_cpu.md").write_text(markdown(report))
    print(f"wrote {out / 'sd_cpu.json'} and {out / 'sd_cpu.md'}")


def summarise(part: dict, runs: dict[str, dict], peak: float) -> dict:
    ours = runs["latentdiff"]
    reference = torch.load(runs["diffusers"]["output"]) if "diffusers" in runs else None
    summary = {"part": part, "flops": ours["flops"], "impls": {}}
    for impl, r in runs.items():
        median = statistics.median(r["times_s"])
        entry = {"median_s": round(median, 4), "times_s": [round(t, 4) for t in r["times_s"]],
                 "peak_rss_mib": r["peak_rss_mib"]}  # fmt: skip
        if ours["flops"]:
            entry["gflops"] = round(ours["flops"] / median / 1e9, 1)
            entry["of_peak"] = round(entry["gflops"] / peak, 3)
        if reference is not None:
            entry["max_abs_diff_vs_diffusers"] = float((torch.load(r["output"]) - reference).abs().max())
        if impl == "latentdiff-fast":  # an approximation: its cost as PSNR against our exact image
            mse = float(((torch.load(r["output"]) - torch.load(ours["output"])) ** 2).mean())
            entry["psnr_vs_exact_db"] = round(10 * math.log10(1 / max(mse, 1e-12)), 2)
        summary["impls"][impl] = entry
    if "diffusers" in runs:
        theirs = summary["impls"]["diffusers"]
        summary["time_ours_over_diffusers"] = round(summary["impls"]["latentdiff"]["median_s"] / theirs["median_s"], 3)
        summary["rss_ours_over_diffusers"] = round(ours["peak_rss_mib"] / max(1, theirs["peak_rss_mib"]), 3)
    return summary


def line(name: str, s: dict) -> str:
    parts = [f"{impl} {e['median_s']:.3f} s ({e['peak_rss_mib']} MiB)" for impl, e in s["impls"].items()]
    ratio = f"; ours/diffusers time {s['time_ours_over_diffusers']:.2f}" if "time_ours_over_diffusers" in s else ""
    return f"{name}: " + ", ".join(parts) + ratio


def markdown(report: dict) -> str:
    m = report["machine"]
    impls = list(next(iter(report["parts"].values()))["impls"]) if report["parts"] else []
    head = " | ".join(f"{i} s" for i in impls)
    rows = []
    for name, s in report["parts"].items():
        e, ours = s["impls"], s["impls"]["latentdiff"]
        times = " | ".join(f"{e[i]['median_s']:.3f}" if i in e else "–" for i in impls)
        rss = " / ".join(str(e[i]["peak_rss_mib"]) if i in e else "–" for i in impls)
        ratio = f"**{s['time_ours_over_diffusers']:.2f}**" if "time_ours_over_diffusers" in s else ""
        diff = f"{ours['max_abs_diff_vs_diffusers']:.1e}" if "max_abs_diff_vs_diffusers" in ours else ""
        gf = f"{ours['gflops']:.0f} ({ours['of_peak']:.0%})" if "gflops" in ours else ""
        rows.append(f"| {name} | {times} | {ratio} | {rss} | {diff} | {gf} |")
    text = [
        f"# Stable Diffusion ({report['preset']}, random weights) on the CPU, fp32, {report['threads']} threads",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {' '.join(m['isa'])}; torch {m['torch']}, "
        f"diffusers {m['diffusers']}. Peak fp32: matmul {m['matmul_gflops']:.0f} GFLOP/s (torch.mm), 3x3 conv "
        f"{m['conv3x3_gflops']:.0f} GFLOP/s (oneDNN, packed weight).",
        "",
        f"| part | {head} | ours / diffusers time | peak RSS MiB ({' / '.join(impls)}) | max abs diff vs diffusers "
        f"| ours GFLOP/s (of peak) |",
        "|---" * (len(impls) + 5) + "|",
        *rows,
        "",
        "Parts: `text` = CLIP text encoder on 2 prompts; `unet-L-bB` = one UNet call at an LxL latent, batch B "
        "(B = 2 is one classifier-free-guidance step); `vae-S` = decode to SxS; `txt2img-S` = a whole SxS image "
        f"(text, {report['steps']} Euler steps at CFG 7.5, decode). Times are medians of {report['reps']} calls after "
        f"one untimed call ({report['txt2img_reps']} whole txt2img after a 1-step one); peak RSS is counted from "
        "after the weights are loaded.",
    ]
    for name, s in report["parts"].items():
        fast = s["impls"].get("latentdiff-fast")
        if fast:
            theirs = s["impls"].get("diffusers", {}).get("median_s")
            versus = f" = {fast['median_s'] / theirs:.2f}x diffusers' time" if theirs else ""
            every = s["part"]["fast_deep_cache"]
            text += ["", f"Fast mode (opt-in approximation: DeepCache, the UNet's deep levels on every {every}th "
                     f"call only): {name} {fast['median_s']:.3f} s{versus}, peak RSS {fast['peak_rss_mib']} MiB, "
                     f"PSNR {fast['psnr_vs_exact_db']:.1f} dB against our exact image."]  # fmt: skip
    if "sdcpp" in report:
        s = report["sdcpp"]
        if isinstance(s, dict):
            size = s["settings"]["size"]
            ours = report["parts"][f"txt2img-{size}"]["impls"]["latentdiff"]
            cfg_step = report["parts"].get(f"unet-{size // 8}-b2", {}).get("impls", {}).get("latentdiff", {})
            step = f"{cfg_step['median_s']:.2f}" if cfg_step else "not measured"
            whole = s.get(f"txt2img_{report['steps']}_steps_s", s["total_s"])
            text += ["", f"stable-diffusion.cpp ({s['version']}, ggml) on the same weights (our single-file export), "
                     f"{size}x{size}: {s['per_step_s']:.2f} s per step (its two "
                     f"batch-1 passes for CFG; ours: {step} s), decode {s['decode_s']:.2f} s, peak RSS "
                     f"{s['peak_rss_mib']:.0f} MiB; a whole {report['steps']}-step image {whole:.1f} s "
                     f"({s.get('whole_time_from', 'measured')}) against our {ours['median_s']:.1f} s. Note: sd.cpp "
                     "keeps convolution weights in f16 whatever the file says, so it is not an fp32 run."]  # fmt: skip
        else:
            text += ["", f"stable-diffusion.cpp: {s}"]
    text += ["", f"Rerun: `.venv/bin/python benchmarks/sd_cpu.py --preset {report['preset']} --reps {report['reps']} "
             f"--txt2img-reps {report['txt2img_reps']} --steps {report['steps']} --threads {report['threads']}`",
             ""]  # fmt: skip
    return "\n".join(text)


if __name__ == "__main__":
    main()
