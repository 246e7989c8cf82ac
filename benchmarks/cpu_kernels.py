"""Single layers at SD 1.5's shapes: PyTorch's F.linear / F.conv2d vs latentdiff.cpu_kernels (fp32, inference).

Shows where the exact path's speed comes from: Linear through oneDNN instead of MKL's sgemm, and
convolutions with the weight packed once instead of reordered on every call (which costs most at
small latents, where the weights are large and the images small).

    .venv/bin/python benchmarks/cpu_kernels.py          # ~1 min; writes benchmarks/results/cpu_kernels.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latentdiff import cpu_kernels  # noqa: E402

LINEARS = [
    (4096, 320, 320),
    (4096, 320, 2560),
    (4096, 1280, 320),
    (1024, 640, 640),
    (64, 1280, 1280),
]  # tokens, in, out
CONVS = [(320, 64), (640, 32), (1280, 16), (1280, 8), (2560, 8)]  # input channels (3x3 to 1280 max), latent size


def best_of(fn, *args, reps: int = 5) -> float:
    fn(*args)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for tokens, d_in, d_out in LINEARS:
            x, w, b = torch.randn(2, tokens, d_in), torch.randn(d_out, d_in) / d_in**0.5, torch.randn(d_out)
            flops = 2 * 2 * tokens * d_in * d_out
            plain = best_of(F.linear, x, w, b)
            fast = best_of(cpu_kernels.linear, x, w, b)
            rows.append((f"Linear 2x{tokens}x{d_in} -> {d_out}", flops, plain, fast))
        for ch, size in CONVS:
            out = min(ch, 1280)
            conv = torch.nn.Conv2d(ch, out, 3, padding=1)
            fast_conv = cpu_kernels.accelerate(torch.nn.Conv2d(ch, out, 3, padding=1))
            fast_conv.load_state_dict(conv.state_dict())
            x = torch.randn(2, ch, size, size)
            flops = 2 * 2 * size * size * ch * out * 9
            plain = best_of(conv, x)
            fast = best_of(fast_conv, x)
            rows.append((f"Conv2d 3x3 {ch} -> {out} at {size}x{size}, batch 2", flops, plain, fast))
    lines = [
        f"# Single layers, fp32, {torch.get_num_threads()} threads: PyTorch vs latentdiff.cpu_kernels",
        "",
        "| layer | PyTorch ms (GFLOP/s) | cpu_kernels ms (GFLOP/s) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, flops, plain, fast in rows:
        lines.append(f"| {name} | {plain * 1e3:.2f} ({flops / plain / 1e9:.0f}) | {fast * 1e3:.2f} "
                     f"({flops / fast / 1e9:.0f}) | {plain / fast:.2f}x |")  # fmt: skip
    lines += ["", "Rerun: `.venv/bin/python benchmarks/cpu_kernels.py`", ""]
    out = ROOT / "benchmarks" / "results" / "cpu_kernels.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
