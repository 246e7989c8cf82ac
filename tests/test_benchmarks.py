"""The CPU benchmark command runs end to end on a tiny model (its numbers are not asserted: shared machines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _sd_cpu_report(tmp_path, parts: str) -> dict:
    # Each part and implementation is a subprocess of its own (about 8 s each on 2 cores).
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sd_cpu.py"), "--preset", "tiny", "--parts", parts,
           "--impls", "latentdiff,diffusers", "--reps", "1", "--steps", "4", "--deep-cache", "2", "--threads", "1",
           "--cache", str(tmp_path / "weights"), "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((tmp_path / "out" / "sd_cpu.json").read_text())


def test_sd_cpu_benchmark_runs_txt2img_on_a_tiny_model(tmp_path):
    report = _sd_cpu_report(tmp_path, "txt2img")
    assert set(report["parts"]) == {"txt2img-64"} and report["machine"]["peak_gflops"] > 0
    ours = report["parts"]["txt2img-64"]["impls"]["latentdiff"]
    assert ours["max_abs_diff_vs_diffusers"] < 1e-3 and ours["median_s"] > 0
    fast = report["parts"]["txt2img-64"]["impls"]["latentdiff-fast"]
    assert 0 < fast["psnr_vs_exact_db"] < 120 and fast["median_s"] > 0
    assert "Fast mode (opt-in approximation" in (tmp_path / "out" / "sd_cpu.md").read_text()


@pytest.mark.slow  # 2 min: eleven subprocesses; the txt2img part alone is in the fast suite above
def test_sd_cpu_benchmark_runs_on_a_tiny_model(tmp_path):
    report = _sd_cpu_report(tmp_path, "unet,txt2img")
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


def test_video_direction_probe_runs_on_a_tiny_video_model(tmp_path, capsys):
    from latentdiff.model import StableDiffusion
    from latentdiff.video_unet import VideoUNet
    from latentdiff.weights.video_folder import save_video

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from video_direction import REVERSED, main, one_object_videos

    videos, captions, reversed_ = one_object_videos(3, frames=4)
    assert videos.shape == (3, 4, 64, 64, 3)
    for caption, other in zip(captions, reversed_, strict=True):
        word, opposite = caption.split("moving ")[1].split()[0], other.split("moving ")[1].split()[0]
        assert " while " not in caption and REVERSED[word] == opposite
    model = StableDiffusion.from_preset("tiny", seed=0)
    save_video(model, VideoUNet.from_image_unet(model.unet, max_frames=8, shared_noise=0.5), tmp_path / "video")
    main([str(tmp_path / "video")], n=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "cosine" in lines[0]
    assert all("ratio" in line and "still" in line for line in lines[1:])


def test_video_overfit_probe_videos_differ_only_in_direction():
    from latentdiff.data.moving_shapes import check_video

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from video_overfit import four_videos, travel

    videos, captions = four_videos()
    for video, caption in zip(videos, captions, strict=True):  # the training videos pass their own check
        assert check_video(video, caption).holds and travel(video, caption) == (14.0, 0.0)
    assert all(video[0].tobytes() == videos[0][0].tobytes() for video in videos)  # one first frame
    assert {c.replace(c.split()[-1], "") for c in captions} == {"a red circle moving "}


def test_video_overfit_pool_rungs_hide_the_direction_from_the_first_frame():
    from latentdiff.data.moving_shapes import check_video, make_video_dataset

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from video_overfit import probe_pool

    for pool in ("starts", "objects"):
        videos, captions = probe_pool(pool, 3, seed=0)
        assert len(videos) == len(captions) == 12
        for i in range(0, 12, 4):  # each start in all four directions, under captions that differ only there
            assert all(v[0].tobytes() == videos[i][0].tobytes() for v in videos[i : i + 4])
            assert [c.split()[-1] for c in captions[i : i + 4]] == ["left", "right", "up", "down"]
            assert len({c.rsplit(" ", 1)[0] for c in captions[i : i + 4]}) == 1
        assert all(check_video(v, c).holds for v, c in zip(videos, captions, strict=True))
    assert len({c.rsplit(" ", 1)[0] for c in probe_pool("objects", 3, seed=0)[1]}) > 1  # the objects vary
    assert probe_pool("starts", 3, seed=0)[0].tobytes() != probe_pool("starts", 3, seed=1)[0].tobytes()
    videos, captions = probe_pool("scenes", 5, seed=2)
    expected = make_video_dataset(2, 5)
    assert videos.tobytes() == expected[0].tobytes() and captions == expected[1]


@pytest.mark.slow  # 50 s: trains and samples a tiny model end to end, on two rungs
def test_video_overfit_probe_trains_and_samples(tmp_path, capsys):
    from latentdiff.model import StableDiffusion
    from latentdiff.weights import save

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from video_overfit import main

    save(StableDiffusion.from_preset("tiny", seed=0), tmp_path / "tiny")
    weights = tmp_path / "video.pt"
    args = ["--image", str(tmp_path / "tiny"), "--steps", "2", "--seeds", "1", "--sample-steps", "2"]
    main([*args, "--weights", str(weights)])
    lines = capsys.readouterr().out.splitlines()
    assert weights.exists() and sum("ratio" in line for line in lines) == 4
    assert sum("moved the named way in" in line for line in lines) == 4
    main([*args, "--steps", "0", "--weights", str(weights)])  # loads the trained model, not an untrained one
    ratios = [line for line in lines if "ratio" in line]
    assert [line for line in capsys.readouterr().out.splitlines() if "ratio" in line] == ratios
    main([*args, "--pool", "objects", "--pool-size", "1", "--batch", "2", "--eval-every", "1"])
    lines = capsys.readouterr().out.splitlines()  # ratios at step 1 and at the end, on trained and held-out videos
    assert sum(line.startswith("step 1, trained t=") for line in lines) == 4
    assert sum(line.startswith("held-out t=") for line in lines) == 4
    assert sum("(held out): moved the named way in" in line for line in lines) == 4
    assert lines[-1].endswith("/8 sampled videos moved the named way")
