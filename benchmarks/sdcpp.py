"""stable-diffusion.cpp (ggml, C++) on the CPU, as a competitor for our txt2img benchmarks.

One txt2img run of a single-file SD 1.x checkpoint through the `stable-diffusion-cpp-python`
bindings, in its own subprocess so its load time and peak memory are its own:

    .venv/bin/python benchmarks/sdcpp.py --checkpoint sd15.safetensors --steps 20 --size 512 --threads 2

prints the dict `run` returns as JSON. The package is the `bench` extra (it compiles from source).

What sd.cpp runs, so the numbers are read right (all from its source, v0.4.7):
- Euler (not Euler a) with its default schedule for SD 1.x ("discrete"), CFG on: the conditional
  and the unconditional UNet pass are two batch-1 graph runs per step, not one batch-2 run.
- wtype="f32" keeps Linear (and attention projection) weights fp32, but every Conv2d weight is
  created as f16 whatever the file or wtype says, and ggml_conv_2d then builds its im2col in f16:
  convolutions run in f16 (f32 accumulation). Not exactly fp32, so not bit-comparable to torch.
- Attention is the plain materialized one (QK^T, softmax, @V) unless flash_attn is asked for.
- Timings come from sd.cpp's own log lines ("... completed, taking X s") and its progress callback
  (step, steps, mean seconds per step so far); the module only times the load and the whole call.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

NOT_INSTALLED = "stable-diffusion.cpp is not installed: pip install -e '.[bench]' (compiles from source)"
PROMPT = "a photograph of an astronaut riding a horse"

# sd.cpp log line -> our key; every one reports seconds ("taking 1.23s" / "completed in 1.23s").
LOG_TIMINGS = {
    "text_s": r"get_learned_condition completed, taking ([\d.]+)s",
    "sampling_s": r"sampling completed, taking ([\d.]+)s",
    "decode_s": r"decode_first_stage completed, taking ([\d.]+)s",
    "sdcpp_generate_s": r"generate_image completed in ([\d.]+)s",
    "sdcpp_load_tensors_s": r"loading tensors completed, taking ([\d.]+)s",
}


def parse_log(text: str) -> dict:
    out = {}
    for key, pattern in LOG_TIMINGS.items():
        found = re.findall(pattern, text)
        if found:
            out[key] = float(found[-1])
    return out


def step_times(progress: list[tuple[int, int, float, float]], steps: int) -> tuple[list[float], list[float]]:
    """Per-step wall and CPU seconds from the progress callbacks (step, steps, mean_s, cpu_s).

    sd.cpp reports step 0 as sampling starts, then after step k the mean seconds per step over
    steps 1..k, so the mean is undone; CPU time is our own reading at each callback.
    """
    events = [(step, mean, cpu) for step, total, mean, cpu in progress if total == steps]
    wall, cpu = [], []
    for (k0, mean0, cpu0), (k, mean, cpu1) in pairwise(events):
        if k == k0 + 1:
            wall.append(k * mean - k0 * mean0)
            cpu.append(cpu1 - cpu0)
    return wall, cpu


def version(sd_cpp) -> str:
    """The bindings' version, plus sd.cpp's own where the build recorded it (a pip build says "unknown")."""
    own = [v for v in (sd_cpp.sd_version().decode(), sd_cpp.sd_commit().decode()) if v != "unknown"]
    return f"stable-diffusion-cpp-python {sd_cpp.__version__}" + (f" (sd.cpp {' '.join(own)})" if own else "")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args: dict, result_path: str) -> None:
    """Runs inside the subprocess: load, generate once, write the measurements as JSON."""
    import stable_diffusion_cpp as sd_cpp
    from stable_diffusion_cpp import StableDiffusion

    log_lines: list[str] = []

    # Replace the package's own callback (which prints to stderr) to keep the text for parsing.
    @sd_cpp.sd_log_callback
    def on_log(level, text, data):
        line = text.decode("utf-8", errors="replace")
        log_lines.append(line)
        sys.stderr.write(line)

    sd_cpp.sd_set_log_callback(on_log, ctypes.c_void_p(0))
    progress: list[tuple[int, int, float, float]] = []

    start = time.perf_counter()
    model = StableDiffusion(
        model_path=args["checkpoint"],
        n_threads=args["threads"],
        wtype="f32",  # no quantization; sd.cpp still makes Conv2d weights f16 (see the docstring)
        verbose=True,  # False would redirect the C library's stdout/stderr to /dev/null
    )
    load_s = time.perf_counter() - start
    sd_cpp.sd_set_log_callback(on_log, ctypes.c_void_p(0))  # in case the constructor reset it

    cpu_start = cpu_seconds()
    start = time.perf_counter()
    images = model.generate_image(
        prompt=args["prompt"],
        negative_prompt="",
        width=args["size"],
        height=args["size"],
        cfg_scale=args["cfg_scale"],
        sample_method="euler",
        sample_steps=args["steps"],
        seed=args["seed"],
        progress_callback=lambda step, steps, mean_s: progress.append((step, steps, mean_s, cpu_seconds())),
    )
    total_s = time.perf_counter() - start
    cpu_s = cpu_seconds() - cpu_start

    image = Path(args["out_dir"]) / f"sdcpp-{args['size']}px-{args['steps']}steps-seed{args['seed']}.png"
    images[0].save(image)
    log_text = "".join(log_lines)
    image.with_suffix(".log").write_text(log_text)
    steps, steps_cpu = step_times(progress, args["steps"])
    result = {
        "load_s": load_s,
        "total_s": total_s,
        # sd.cpp's own "s/it": sampling time / steps (the first step includes graph allocation).
        "per_step_s": progress[-1][2] if progress else None,
        "step_times_s": steps,
        "median_step_s": statistics.median(steps) if steps else None,
        "step_cpu_s": steps_cpu,  # ggml's threads spin at barriers: ~threads x wall when not contended
        **parse_log(log_text),
        # CPU seconds the generate call used: well under threads x total_s means it was not
        # given its threads (a busy machine), and its timings are not the machine's best.
        "cpu_s": cpu_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "image": str(image),
        "log": str(image.with_suffix(".log")),
        "version": version(sd_cpp),
        "settings": {k: v for k, v in args.items() if k != "out_dir"},
    }
    Path(result_path).write_text(json.dumps(result))


def run(
    checkpoint: str,
    prompt: str,
    steps: int,
    size: int,
    seed: int,
    threads: int,
    cfg_scale: float = 7.5,
    out_dir: str | None = None,
) -> dict:
    """One txt2img with sd.cpp in a subprocess; timings in seconds, peak RSS of that process in MiB.

    total_s is the generate call's wall time (text encoding + sampling + VAE decode), model load
    excluded; text_s / sampling_s / decode_s are sd.cpp's own split of it.
    """
    if importlib.util.find_spec("stable_diffusion_cpp") is None:
        raise RuntimeError(NOT_INSTALLED)
    out_dir = out_dir or tempfile.mkdtemp(prefix="sdcpp-")
    args = dict(checkpoint=str(checkpoint), prompt=prompt, steps=steps, size=size, seed=seed,
                threads=threads, cfg_scale=cfg_scale, out_dir=str(out_dir))  # fmt: skip
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(args), result.name],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not Path(result.name).stat().st_size:
            tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-20:])
            raise RuntimeError(f"stable-diffusion.cpp failed (exit {proc.returncode}):\n{tail}")
        return json.loads(Path(result.name).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="single-file SD 1.x .safetensors (required)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--out-dir", default=None, help="where the PNG and sd.cpp's log go (default: a temp dir)")
    p.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker[0]), args.worker[1])
        return
    if not args.checkpoint:
        p.error("--checkpoint is required")
    try:
        result = run(args.checkpoint, args.prompt, args.steps, args.size, args.seed, args.threads,
                     args.cfg, args.out_dir)  # fmt: skip
    except RuntimeError as e:
        sys.exit(str(e))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
