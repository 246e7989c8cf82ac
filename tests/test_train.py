"""Training infrastructure: recipes refuse typos, a loop overfits a tiny batch, resume is exact."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentdiff.config import VAEConfig
from latentdiff.train.common import DataConfig, OptimConfig, RecipeError, load_recipe, lr_at
from latentdiff.train.vae import VAERecipe, evaluate, train

TINY_VAE = VAEConfig(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4)


def _recipe(out, **optim) -> VAERecipe:
    return VAERecipe(
        model=TINY_VAE,
        optim=OptimConfig(**{"lr": 2e-3, "warmup_steps": 2, "max_steps": 6, **optim}),
        data=DataConfig(canvas=16, pool=4, heldout=8),
        batch_size=4,
        log_every=2,
        ckpt_every=3,
        out=str(out),
    )


def test_recipes_read_toml_and_overrides_and_refuse_typos(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("batch_size = 8\n[optim]\nlr = 1\n[model]\nblock_out_channels = [32, 64]\n")
    recipe = load_recipe(VAERecipe, path, ["optim.max_steps=50", "out=runs/x"])
    assert recipe.batch_size == 8 and recipe.optim.lr == 1.0 and recipe.optim.max_steps == 50
    assert recipe.model.block_out_channels == (32, 64) and recipe.out == "runs/x"
    with pytest.raises(RecipeError, match=r"r.toml.optim: unknown key 'learning_rate'"):
        load_recipe(VAERecipe, path, ["optim.learning_rate=0.1"])
    with pytest.raises(RecipeError, match=r"r.toml.batch_size: expected int, got 'eight'"):
        load_recipe(VAERecipe, path, ["batch_size=eight"])
    (tmp_path / "bad.toml").write_text("batch_size = = 3")
    with pytest.raises(RecipeError, match=r"bad.toml: not valid TOML"):
        load_recipe(VAERecipe, tmp_path / "bad.toml")


def test_lr_warms_up_then_decays():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55) and lr_at(110, cfg) == pytest.approx(0.1)


def test_vae_loop_overfits_a_tiny_batch(tmp_path):
    recipe = dataclasses.replace(_recipe(tmp_path), kl_weight=0.0)
    recipe.optim = dataclasses.replace(recipe.optim, max_steps=60, warmup_steps=5)
    first = train(
        dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, max_steps=1), out=str(tmp_path / "a")),
        quiet=True,
    )
    last = train(dataclasses.replace(recipe, out=str(tmp_path / "b")), quiet=True)
    assert last["loss"] < 0.5 * first["loss"]
    assert evaluate(last["model"], recipe.data) > 0  # runs on held-out scenes


def test_resume_continues_exactly(tmp_path):
    straight = train(_recipe(tmp_path / "straight"), quiet=True)
    train(_recipe(tmp_path / "resumed"), stop_at=3, quiet=True)  # as if killed right after step 3
    resumed = train(_recipe(tmp_path / "resumed"), resume=True, quiet=True)
    assert resumed["loss"] == straight["loss"]
    for key, value in straight["model"].state_dict().items():
        assert torch.equal(resumed["model"].state_dict()[key], value), key
    for key, value in straight["ema"].shadow.items():
        assert torch.equal(resumed["ema"].shadow[key], value), key
    assert sorted(p.name for p in (tmp_path / "resumed").glob("step-*.pt")) == ["step-00000003.pt", "step-00000006.pt"]


def test_decoder_only_keeps_the_encoder_bit_for_bit(tmp_path):
    """A new decoder for an existing latent space: encoder and quant_conv (raw and EMA) never move."""
    base = train(_recipe(tmp_path / "base"), quiet=True)
    recipe = dataclasses.replace(_recipe(tmp_path / "dec"), init_from=str(tmp_path / "base"), decoder_only=True)
    tuned = train(recipe, quiet=True)
    start = base["ema_model"].state_dict()
    for net in (tuned["model"], tuned["ema_model"]):
        for key, value in net.state_dict().items():
            moved = not torch.equal(value, start[key])
            assert moved == (not key.startswith(("encoder.", "quant_conv."))), key
    with pytest.raises(RecipeError, match="decoder_only needs init_from"):
        train(dataclasses.replace(recipe, init_from=""), quiet=True)


def test_cli_trains_and_resumes(tmp_path, capsys):
    from latentdiff.cli import main

    args = ["train", "vae", "--set", "model.block_out_channels=[16, 32]", "--set", "model.norm_num_groups=8",
            "--set", "model.layers_per_block=1", "--set", "data.canvas=16", "--set", "data.pool=8",
            "--set", "data.heldout=4", "--set", "batch_size=2", "--set", "optim.max_steps=2",
            "--set", "ckpt_every=1", "--set", f"out={tmp_path / 'run'}"]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "run" / "last.txt").read_text() == "step-00000002.pt"
    assert main(args + ["--set", "optim.max_steps=3", "--resume"]) == 0
    assert "step 3: held-out PSNR" in capsys.readouterr().out
    assert main(["train", "vae", "--set", "optim.lr=fast"]) == 2


def test_clip_loop_overfits_a_tiny_batch_and_the_cli_runs_it(tmp_path, capsys):
    from latentdiff.cli import main
    from latentdiff.config import CLIPTextConfig, CLIPVisionConfig
    from latentdiff.train.clip import CLIPRecipe, evaluate
    from latentdiff.train.clip import train as train_clip

    recipe = CLIPRecipe(
        text=CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=4,
        ),  # fmt: skip
        projection_dim=16,
        optim=OptimConfig(lr=3e-3, warmup_steps=2, max_steps=40),
        data=DataConfig(canvas=16, pool=4, heldout=8),
        batch_size=4,
        log_every=10,
        ckpt_every=40,
        out=str(tmp_path / "clip"),
    )
    first = train_clip(dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, max_steps=1),
                                           out=str(tmp_path / "c1")), quiet=True)  # fmt: skip
    last = train_clip(recipe, quiet=True)
    assert last["loss"] < 0.5 * first["loss"]  # 4 pairs: the diagonal is learned
    assert 0.0 <= evaluate(last["ema_model"], recipe.data) <= 1.0
    overrides = ["data.canvas=16", "vision.image_size=16", "vision.patch_size=4", "vision.hidden_size=32",
                 "vision.num_attention_heads=2", "vision.num_hidden_layers=1", "text.hidden_size=32",
                 "text.num_attention_heads=2", "text.num_hidden_layers=1", "projection_dim=16", "data.pool=8",
                 "data.heldout=4", "batch_size=4", "optim.max_steps=2", f"out={tmp_path / 'cli'}"]  # fmt: skip
    args = ["train", "clip"] + [part for o in overrides for part in ("--set", o)]
    assert main(args) == 0
    assert "held-out caption retrieval" in capsys.readouterr().out
    assert main(["train", "clip", "--set", "vision.image_size=32"]) == 2  # does not match the 64 px data


def test_a_run_killed_at_any_moment_resumes_to_the_same_weights(tmp_path):
    """SIGKILL mid-run (mid-save included, by luck of timing) never leaves a checkpoint that
    --resume cannot use, and the resumed run ends where an uninterrupted one does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from latentdiff.train.common import load_last_checkpoint

    def command(out):
        sets = ["model.block_out_channels=[16, 32]", "model.norm_num_groups=8", "model.layers_per_block=1",
                "data.canvas=16", "data.pool=8", "data.heldout=4", "batch_size=2", "optim.max_steps=40",
                "ckpt_every=1", "log_every=1000", f"out={out}"]  # fmt: skip
        return [sys.executable, "-m", "latentdiff.cli", "train", "vae", *[x for s in sets for x in ("--set", s)]]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "straight"), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    for delay in (0.0, 0.05, 0.13):  # a few kills at different moments after the first checkpoint lands
        proc = subprocess.Popen(command(killed) + ["--resume"], env=env, stdout=subprocess.DEVNULL)
        while not (killed / "last.txt").exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert load_last_checkpoint(killed) is not None  # whatever moment it died, the pointer is usable
    subprocess.run(command(killed) + ["--resume"], check=True, env=env, capture_output=True)
    straight, resumed = load_last_checkpoint(tmp_path / "straight"), load_last_checkpoint(killed)
    assert resumed["step"] == straight["step"] == 40
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert not list(killed.glob(".*"))  # no half-written file left behind


def test_every_shipped_recipe_loads():
    """A typo in recipes/*.toml fails here, not minutes into a training run."""
    from pathlib import Path

    from latentdiff.train.clip import CLIPRecipe
    from latentdiff.train.unet import UNetRecipe
    from latentdiff.train.video import VideoRecipe

    kinds = {"vae": VAERecipe, "clip": CLIPRecipe, "unet": UNetRecipe, "video": VideoRecipe}
    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.toml"))
    assert len(recipes) >= 10
    for path in recipes:
        recipe = load_recipe(kinds[path.name.split("_")[0]], path)
        assert recipe.out.startswith("runs/"), path.name


def test_decoder_trains_on_latents_a_unet_redraws(tmp_path):
    """redraw_with: a model folder's UNet re-draws training latents (SDEdit at low noise) once, kept in
    the run folder; a resumed run reads them back and continues exactly; the encoder never moves."""
    from latentdiff.model import StableDiffusion
    from latentdiff.train.redraw import redrawn_latents
    from latentdiff.weights import load, save

    folder = tmp_path / "tiny"
    save(StableDiffusion.from_preset("tiny", seed=0), folder)
    model = load(folder)
    redraw = dict(init_from=str(folder), decoder_only=True, redraw_with=str(folder), redraw_pool=4, redraw_max_sigma=3)
    recipe = dataclasses.replace(_recipe(tmp_path / "straight"), model=model.config.vae, **redraw)
    straight = train(recipe, quiet=True)
    latents = torch.load(tmp_path / "straight" / "redrawn.pt")["latents"]
    assert latents.shape == (4, 4, 8, 8)  # canvas 16, the tiny VAE's 2x down
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    again = redrawn_latents(model, images, ["a red circle"] * 4, 3.0, seed=1)
    assert torch.equal(again, redrawn_latents(model, images, ["a red circle"] * 4, 3.0, seed=1))
    assert not torch.equal(again, model.vae.encode(images).mean)  # the UNet moved them

    train(dataclasses.replace(recipe, out=str(tmp_path / "resumed")), stop_at=3, quiet=True)
    resumed = train(dataclasses.replace(recipe, out=str(tmp_path / "resumed")), resume=True, quiet=True)
    assert resumed["loss"] == straight["loss"]
    for key, value in straight["model"].state_dict().items():
        assert torch.equal(resumed["model"].state_dict()[key], value), key
        assert torch.equal(value, model.vae.state_dict()[key]) == (not key.startswith(("decoder.", "post_quant"))), key

    with pytest.raises(RecipeError, match="redraw_with needs decoder_only"):
        train(dataclasses.replace(recipe, decoder_only=False, out=str(tmp_path / "x")), quiet=True)
    save(StableDiffusion.from_preset("tiny", seed=1), tmp_path / "other")
    with pytest.raises(RecipeError, match="VAE encoder is not this run's"):
        train(dataclasses.replace(recipe, redraw_with=str(tmp_path / "other"), out=str(tmp_path / "y")), quiet=True)
    with pytest.raises(ValueError, match="below the schedule's lowest level"):
        redrawn_latents(model, images, ["a red circle"] * 4, 1e-4, seed=1)
