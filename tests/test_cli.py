"""The `latentdiff` command: the demo runs, conversions work, user errors are one line with exit 2."""

from __future__ import annotations

import json

import torch
from PIL import Image

from latentdiff import weights
from latentdiff.cli import main
from latentdiff.model import StableDiffusion


def test_demo_writes_a_png_with_its_settings(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--steps", "2", "--prompt", "a cat"]) == 0
    image = Image.open(out)
    assert image.size == (64, 64) and image.text["prompt"] == "a cat"
    assert "RANDOM weights" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["demo.png"]  # no temp file left behind


def test_convert_info_and_generate_from_a_checkpoint(tmp_path, capsys):
    weights.save(StableDiffusion.from_preset("tiny"), tmp_path / "tiny.safetensors", format="single_file")
    assert main(["convert", str(tmp_path / "tiny.safetensors"), str(tmp_path / "folder"), "--to", "diffusers"]) == 0
    assert (tmp_path / "folder" / "model_index.json").exists()
    capsys.readouterr()
    assert main(["info", str(tmp_path / "folder")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["unet"]["block_out_channels"] == [32, 64]
    assert main(["generate", "--model", str(tmp_path / "folder"), "--steps", "2", "--height", "16", "--width", "16",
                 "--batch", "2", "--out", str(tmp_path / "x.png")]) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("x-*.png")) == ["x-0.png", "x-1.png"]


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    torch.save({"a": torch.zeros(1)}, tmp_path / "model.ckpt")
    cases = {
        ("generate", "--model", str(tmp_path / "missing")): "missing: no such file or folder",
        ("generate", "--model", str(tmp_path / "bad.safetensors")): "bad.safetensors: neither a safetensors file",
        ("info", str(tmp_path / "model.ckpt")): "model.ckpt: is a pickled PyTorch checkpoint",
        ("demo", "--height", "63", "--out", str(tmp_path / "d.png")): "height and width must be multiples of 2",
    }
    for argv, message in cases.items():
        capsys.readouterr()
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("latentdiff: error: ") and message in err[0], err


def test_tokenize_reports_truncation(capsys):
    assert main(["tokenize", "a red circle " * 30]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tokens"] == 90
    assert "15 over the 75-token limit" in captured.err
