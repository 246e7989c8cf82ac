"""The CPU benchmark command runs end to end on a tiny model (its numbers are not asserted: shared machines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sd_cpu_benchmark_runs_on_a_tiny_model(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sd_cpu.py"), "--preset", "tiny", "--parts", "unet,txt2img",
           "--impls", "latentdiff,diffusers", "--reps", "1", "--steps", "4", "--deep-cache", "2", "--threads", "1",
           "--cache", str(tmp_path / "weights"), "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "sd_cpu.json").read_text())
    assert set(report["parts"]) == {"unet-8-b1", "unet-8-b2", "unet-16-b1", "unet-16-b2", "txt2img-64"}
    assert report["machine"]["peak_gflops"] > 0 and report["machine"]["cores"] >= 1
    for name, part in report["parts"].items():
        ours = part["impls"]["latentdiff"]
        assert ours["max_abs_diff_vs_diffusers"] < 1e-3, name  # the same weights give the same outputs
        assert ours["median_s"] > 0 and ours["peak_rss_mib"] > 0 and part["time_ours_over_diffusers"] > 0
    assert report["parts"]["unet-16-b2"]["flops"] > report["parts"]["unet-16-b1"]["flops"] > 0
    fast = report["parts"]["txt2img-64"]["impls"]["latentdiff-fast"]  # DeepCache: an approximation, its cost shown
    assert 0 < fast["psnr_vs_exact_db"] < 120 and fast["median_s"] > 0
    table = (tmp_path / "out" / "sd_cpu.md").read_text()
    assert "Fast mode (opt-in approximation" in table
    assert "| unet-16-b2 |" in table and "Rerun:" in table


def test_text_relations_probe_runs_on_a_tiny_model(tmp_path):
    from latentdiff.model import StableDiffusion
    from latentdiff.weights import save

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from text_relations import cosines

    save(StableDiffusion.from_preset("tiny", seed=0), tmp_path / "tiny")
    same, flipped = cosines(str(tmp_path / "tiny"), n=3)
    assert -1 <= same <= 1 and -1 <= flipped <= 1 and same != flipped
