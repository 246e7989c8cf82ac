"""The `latentdiff` command: images with their settings, conversions, and one-line user errors."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from latentdiff import weights
from latentdiff.cli import main
from latentdiff.metadata import format_parameters, parse_parameters
from latentdiff.model import StableDiffusion


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    weights.save(StableDiffusion.from_preset("tiny"), folder)
    return folder


def test_demo_writes_a_grid_of_its_prompts(tiny_folder, tmp_path, capsys):
    from latentdiff.cli import DEMO_PROMPTS

    out = tmp_path / "demo.png"
    assert main(["demo", "--model", str(tiny_folder), "--out", str(out), "--steps", "2", "--batch", "2"]) == 0
    image = Image.open(out)
    assert image.size == (2 * (2 * 66 + 2), 2 * (8 * 66 + 2))  # 8 rows of 2 tiles of 64 px, 2 px gutters, 2x
    assert image.text["prompts"].splitlines() == list(DEMO_PROMPTS)
    assert "one row per prompt" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["demo.png"]  # no temp file left behind


def test_same_seed_gives_the_same_png_bytes(tiny_folder, tmp_path):
    for name in ("a.png", "b.png"):
        args = ["generate", "--model", str(tiny_folder), "--steps", "2", "--seed", "5", "--out", str(tmp_path / name)]
        assert main(args) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_without_model_the_built_in_one_is_used_or_named_missing(tmp_path, monkeypatch, capsys):
    from latentdiff import cli

    monkeypatch.setattr(cli, "BUILTIN_MODEL", tmp_path / "gone")
    assert main(["generate", "--prompt", "a red circle", "--out", str(tmp_path / "x.png")]) == 2
    assert f"the built-in model is missing ({tmp_path / 'gone'}); pass --model PATH" in capsys.readouterr().err


def test_the_built_in_model_samples_with_its_own_defaults(tiny_folder, tmp_path, monkeypatch, capsys):
    """Without --model: Euler, CFG 2.5 at sigma <= 15 and Karras sigmas (measured best for it); with --model,
    A1111's (guided at every step)."""
    from latentdiff import cli

    monkeypatch.setattr(cli, "BUILTIN_MODEL", tiny_folder)
    common = ["--prompt", "a red circle", "--steps", "2", "--height", "16", "--width", "16"]
    model = ["--model", str(tiny_folder)]
    runs = {"builtin": [], "no-karras": ["--no-karras"], "model": model, "always": ["--cfg-max-sigma", "inf"],
            "model-interval": [*model, "--cfg-max-sigma", "3"]}  # fmt: skip
    found = {}
    for name, extra in runs.items():
        assert main(["generate", *common, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0
        capsys.readouterr()
        assert main(["info", str(tmp_path / f"{name}.png")]) == 0
        info = json.loads(capsys.readouterr().out)
        found[name] = (info["Sampler"], info["CFG scale"], info.get("Schedule type"), info.get("CFG max sigma"))
    assert found == {"builtin": ("Euler", "2.5", "Karras", "15.0"), "no-karras": ("Euler", "2.5", None, "15.0"),
                     "model": ("Euler a", "7.5", None, None), "always": ("Euler", "2.5", "Karras", None),
                     "model-interval": ("Euler a", "7.5", None, "3.0")}  # fmt: skip
    assert main(["generate", *common, "--cfg-max-sigma", "-1", "--out", str(tmp_path / "bad.png")]) == 2
    assert "--cfg-max-sigma must be a noise level >= 0 (inf: guide every step), got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_generate_writes_per_image_seeds_that_a1111_readers_understand(tiny_folder, tmp_path, capsys):
    from sd_parsers import ParserManager

    args = ["generate", "--model", str(tiny_folder), "--prompt", "a red circle, small", "--negative-prompt", "blurry",
            "--steps", "3", "--sampler", "dpmpp_2m", "--karras", "--cfg-scale", "6", "--seed", "40",
            "--height", "16", "--width", "16", "--batch", "2", "--out", str(tmp_path / "x.png")]  # fmt: skip
    assert main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-0.png", "x-1.png"]
    capsys.readouterr()
    assert main(["info", str(tmp_path / "x-1.png")]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours["prompt"] == "a red circle, small" and ours["negative_prompt"] == "blurry"
    assert (ours["Seed"], ours["Sampler"], ours["Schedule type"], ours["Steps"]) == ("41", "DPM++ 2M", "Karras", "3")

    info = ParserManager().parse(tmp_path / "x-1.png")  # a reader nobody here wrote
    assert info is not None and info.generator.name.upper().startswith("AUTOMATIC1111")
    assert [p.value for p in info.prompts] == ["a red circle, small"]
    assert [p.value for p in info.negative_prompts] == ["blurry"]
    sampler = info.samplers[0]
    assert sampler.name == "DPM++ 2M" and sampler.parameters["steps"] == "3"
    assert sampler.parameters["cfg_scale"] == "6.0" and sampler.parameters["seed"] == "41"


def test_img2img_and_conversion(tiny_folder, tmp_path, capsys):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "start.png")
    args = ["img2img", "--model", str(tiny_folder), "--image", str(tmp_path / "start.png"), "--strength", "0.5",
            "--steps", "4", "--out", str(tmp_path / "edit.png")]  # fmt: skip
    assert main(args) == 0
    assert parse_parameters(Image.open(tmp_path / "edit.png").text["parameters"])["Denoising strength"] == "0.5"
    assert main(["convert", str(tiny_folder), str(tmp_path / "tiny.safetensors"), "--to", "single_file"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "tiny.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["unet"]["block_out_channels"] == [32, 64]


def test_convert_swaps_in_another_vae(tiny_folder, tmp_path, capsys):
    """--vae: a new decoder for the same latent space ships in the model folder, the rest untouched."""
    from latentdiff.train.common import DataConfig, OptimConfig
    from latentdiff.train.vae import VAERecipe, train

    other = tmp_path / "other"
    weights.save(StableDiffusion.from_preset("tiny", seed=1), other)
    assert main(["convert", str(tiny_folder), str(tmp_path / "swapped"), "--to", "diffusers", "--vae", str(other)]) == 0
    swapped, base, donor = (weights.load(f) for f in (tmp_path / "swapped", tiny_folder, other))
    for key, value in swapped.vae.state_dict().items():
        assert torch.equal(value, donor.vae.state_dict()[key]), key
    for key, value in swapped.unet.state_dict().items():
        assert torch.equal(value, base.unet.state_dict()[key]), key
    assert swapped.config == base.config

    run = tmp_path / "vae_run"  # a `train vae` run of another shape: refused in one line
    small = VAERecipe(optim=OptimConfig(max_steps=1), data=DataConfig(canvas=16, pool=4), batch_size=2, out=str(run))
    small.model = type(small.model)(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)
    train(small, quiet=True)
    capsys.readouterr()
    assert main(["convert", str(tiny_folder), str(tmp_path / "bad"), "--to", "diffusers", "--vae", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"--vae {run}: its VAE is not this model's shape" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_inpaint_from_files(tiny_folder, tmp_path):
    Image.new("RGB", (16, 16), (20, 200, 30)).save(tmp_path / "start.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (4, 4, 12, 12))
    mask.save(tmp_path / "mask.png")
    args = ["inpaint", "--model", str(tiny_folder), "--image", str(tmp_path / "start.png"), "--mask",
            str(tmp_path / "mask.png"), "--steps", "3", "--out", str(tmp_path / "fixed.png")]  # fmt: skip
    assert main(args) == 0
    assert Image.open(tmp_path / "fixed.png").size == (16, 16)
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    args[args.index(str(tmp_path / "mask.png"))] = str(tmp_path / "small.png")
    assert main(args) == 2


def test_user_errors_are_one_line_with_exit_code_2(tiny_folder, tmp_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "notes.png").write_text("not an image")
    torch.save({"a": torch.zeros(1)}, tmp_path / "model.ckpt")
    model = ["--model", str(tiny_folder)]
    cases = {
        ("generate", "--model", str(tmp_path / "missing")): "missing: no such file or folder",
        ("generate", "--model", str(tmp_path / "bad.safetensors")): "bad.safetensors: neither a safetensors file",
        ("info", str(tmp_path / "model.ckpt")): "model.ckpt: is a pickled PyTorch checkpoint",
        ("generate", *model, "--height", "63", "--out", str(tmp_path / "d.png")): "height and width must be positive",
        ("generate", *model, "--steps", "0"): "steps must be between 1 and 1000, got 0",
        ("img2img", *model, "--image", str(tmp_path / "notes.png")): "notes.png: cannot read as an image",
        ("img2img", *model, "--image", str(tmp_path / "d.png"), "--strength", "2"): "d.png: cannot read",
    }
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    cases[("img2img", *model, "--image", str(tmp_path / "ok.png"), "--strength", "2")] = "strength must be between"
    cases[("generate", *model, "--sampler", "plms")] = "argument --sampler: invalid choice: 'plms'"
    for argv, message in cases.items():
        capsys.readouterr()
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("latentdiff") and ": error: " in err[0], err
        assert message in err[0], err
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "d.png").exists()


def test_long_prompt_warns_in_one_line(tiny_folder, tmp_path, capsys):
    args = ["generate", "--model", str(tiny_folder), "--prompt", "a red circle " * 30, "--steps", "1",
            "--height", "16", "--width", "16", "--out", str(tmp_path / "long.png")]  # fmt: skip
    assert main(args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ['warning: prompt 0 is 90 tokens, 15 over the 75-token limit; dropped: "'
                        + "a red circle " * 4 + 'a red circle"']  # fmt: skip


def test_tokenize_reports_truncation(capsys):
    assert main(["tokenize", "a red circle " * 30]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tokens"] == 90
    assert "15 over the 75-token limit" in captured.err


def test_parameters_round_trip_with_separators_in_values():
    text = format_parameters("line one\nline two", "bad, ugly", {"Steps": 20, "Model": "my: model, v2", "Seed": 1})
    parsed = parse_parameters(text)
    assert parsed == {"prompt": "line one\nline two", "negative_prompt": "bad, ugly", "Steps": "20",
                      "Model": "my: model, v2", "Seed": "1"}  # fmt: skip


def test_evaluate_reports_fidelity_and_psnr(tiny_folder, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    args = ["evaluate", "--model", str(tiny_folder), "--prompts", "3", "--steps", "2", "--grid", str(grid)]
    assert main(args) == 0
    out = capsys.readouterr().out
    # random weights draw no shapes
    assert "shapes fidelity 0.0% (0/3 prompts; 2 euler steps, karras sigmas, CFG 2.5 at sigma <= 15;" in out
    assert "VAE held-out PSNR" in out and grid.exists()


def test_data_prepare_names_what_it_knows(capsys):
    assert main(["data", "prepare", "cifar"]) == 2
    assert "unknown dataset 'cifar'; known: emoji, mnist, fashion-mnist, all" in capsys.readouterr().err
