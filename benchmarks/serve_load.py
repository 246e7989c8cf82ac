"""Load on `latentdiff serve`: many clients at once on loopback, then bad requests, then a good one.

Starts the real command (`python -m latentdiff.cli serve`) in a subprocess, sends --requests txt2img
requests from as many threads at once (each its own connection and seed), and reports each
request's latency (queueing included) and the throughput. Before that, --warmup requests one at a
time give the latency of a request that finds the server idle. Then every kind of bad input gets
its 4xx, and the server must still answer. By default the model is a tiny random one (made here),
which measures the server rather than the model; --model runs a real one.

    .venv/bin/python benchmarks/serve_load.py                                # tiny model, ~10 s
    .venv/bin/python benchmarks/serve_load.py --model models/shapes-64 --steps 20

Writes benchmarks/results/serve_load.json and .md (serve_load-<model>.* with --model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BAD_REQUESTS = {  # name -> (path, body, expected status); bytes bodies are sent as they are
    "malformed JSON": ("txt2img", b'{"prompt": ', 422),
    "width over the limit": ("txt2img", {"width": 100_000}, 422),
    "steps over the limit": ("txt2img", {"steps": 100_000}, 422),
    "batch over the limit": ("txt2img", {"batch_size": 1000}, 422),
    "bad base64 image": ("img2img", {"init_images": ["not base64!"]}, 422),
    "unknown sampler": ("txt2img", {"sampler_name": "LMS"}, 422),
    "body over the limit": ("txt2img", {"prompt": "x" * (60 * 2**20)}, 413),
}


def write_text(path: Path, text: str) -> None:
    from latentdiff.weights.io import atomic_path  # temp file, then rename: never half a result

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, threads: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "latentdiff.cli", "serve", "--model", str(model), "--port", str(port),
               "--threads", str(threads)]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()}")
        try:
            requests.get(f"http://127.0.0.1:{port}/sdapi/v1/options", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start within 120 s")


def generate(url: str, seed: int, steps: int) -> dict:
    start = time.perf_counter()
    response = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": seed, "steps": steps},
                             timeout=600)  # fmt: skip
    latency = time.perf_counter() - start
    ok = response.status_code == 200 and json.loads(response.json()["info"])["seed"] == seed
    return {"seed": seed, "status": response.status_code, "ok": ok, "latency_s": latency}


def pipeline_seconds(model: Path, steps: int, reps: int, threads: int) -> float:
    """The same request's work without the server: txt2img in this process (median of reps)."""
    from latentdiff.cli import DEFAULTS
    from latentdiff.pipeline import last_images, txt2img
    from latentdiff.weights import load

    torch.set_num_threads(threads)
    sd, defaults = load(model), DEFAULTS["other"]  # what the server uses for a model given by --model
    seconds = []
    for seed in range(reps + 1):  # the first call pays one-off allocations, as the server's warm-up did
        start = time.perf_counter()
        last_images(txt2img(sd, "a red circle", steps=steps, seed=seed, guidance_scale=defaults["cfg_scale"],
                            sampler=defaults["sampler"]))  # fmt: skip
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="a model folder (default: a tiny random model)")
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else Path(tmp) / "tiny"
        if args.model is None:
            from tests.serving import save_tiny_model

            save_tiny_model(model)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(model, port, args.threads)
        try:
            idle = [generate(url, 10_000 + i, args.steps)["latency_s"] for i in range(args.warmup)]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.requests) as pool:
                answers = list(pool.map(lambda seed: generate(url, seed, args.steps), range(args.requests)))
            wall = time.perf_counter() - start
            bad = {}
            for name, (path, body, expected) in BAD_REQUESTS.items():
                as_json = {"Content-Type": "application/json"}
                sent = {"data": body, "headers": as_json} if isinstance(body, bytes) else {"json": body}
                response = requests.post(f"{url}/sdapi/v1/{path}", **sent, timeout=60)
                bad[name] = {"status": response.status_code, "expected": expected, "detail": response.json()["detail"]}
            still_serving = generate(url, 99_999, args.steps)["ok"]
        finally:
            server.terminate()
            server.wait(timeout=60)
        pipeline = pipeline_seconds(model, args.steps, args.warmup, args.threads)

    latencies = [a["latency_s"] for a in answers]
    result = {
        "settings": {
            "model": model.name,
            "steps": args.steps,
            "size": "native",
            "requests": args.requests,
            "concurrency": args.requests,
            "server_threads": args.threads,
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        },
        "completed_ok": sum(a["ok"] for a in answers),
        "errors": [a for a in answers if not a["ok"]],
        "pipeline_alone_s": pipeline,
        "idle_latency_s": statistics.median(idle),
        "latency_s": {
            "p50": statistics.median(latencies),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
        },
        "wall_s": wall,
        "requests_per_s": args.requests / wall,
        "bad_requests": bad,
        "served_after_bad_requests": still_serving,
    }
    suffix = "" if args.model is None else f"-{model.name}"
    out = ROOT / "benchmarks" / "results"
    write_text(out / f"serve_load{suffix}.json", json.dumps(result, indent=1) + "\n")
    lat = result["latency_s"]
    lines = [
        f"# `latentdiff serve` under load: {args.requests} concurrent txt2img requests, model {model.name}, "
        f"{args.steps} steps, server on {args.threads} CPU thread(s), loopback",
        "",
        "| completed | pipeline alone (s) | idle latency (s) | p50 (s) | p90 (s) | p99 (s) | max (s) | wall (s) "
        "| requests/s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['completed_ok']}/{args.requests} | {pipeline:.3f} | {result['idle_latency_s']:.3f} | "
        f"{lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | {lat['max']:.3f} | {wall:.2f} "
        f"| {result['requests_per_s']:.1f} |",
        "",
        "Pipeline alone: the same txt2img in the benchmark's process, no HTTP, no PNG. Idle latency: one request "
        "to an idle server, end to end.",
        "Requests run one at a time on the worker, so latency under load is mostly queueing: the last of "
        f"{args.requests} waits for the {args.requests - 1} before it.",
        "",
        "| bad request | status (expected) | detail |",
        "|---|---|---|",
        *[f"| {name} | {b['status']} ({b['expected']}) | {b['detail']} |" for name, b in bad.items()],
        "",
        f"Served a good request after them: {'yes' if still_serving else 'NO'}.",
    ]
    write_text(out / f"serve_load{suffix}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    if (
        result["completed_ok"] != args.requests
        or not still_serving
        or any(b["status"] != b["expected"] for b in bad.values())
    ):
        sys.exit(1)


if __name__ == "__main__":
    main()
