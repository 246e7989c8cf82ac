"""The UNet trainer: it learns (overfits a tiny pool), resumes exactly, and 2-process DDP equals 1 process."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentdiff.config import UNetConfig
from latentdiff.data.shapes import scenes
from latentdiff.model import StableDiffusion
from latentdiff.tokenizer import CLIPTokenizer
from latentdiff.train import unet
from latentdiff.train.common import DataConfig, OptimConfig, RecipeError, shapes_tensors
from latentdiff.train.layout import layout_loss, layout_target
from latentdiff.weights import load, save


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> Path:
    """A diffusers folder whose VAE (2x down) and 32-wide text tower stand in for trained ones."""
    folder = tmp_path_factory.mktemp("frozen") / "tiny"
    save(StableDiffusion.from_preset("tiny", seed=0), folder)
    return folder


def _recipe(frozen: Path, out: Path, **optim) -> unet.UNetRecipe:
    return unet.UNetRecipe(
        model=UNetConfig(
            sample_size=8,
            block_out_channels=(32, 32),
            down_block_types=("CrossAttnDownBlock2D",) * 2,
            up_block_types=("CrossAttnUpBlock2D",) * 2,
            layers_per_block=1,
            cross_attention_dim=32,
            num_heads=None,
            head_dim=16,
            norm_num_groups=8,
        ),  # fmt: skip
        vae=str(frozen),
        clip=str(frozen),
        optim=OptimConfig(**{"lr": 2e-3, "warmup_steps": 2, "max_steps": 6, **optim}),
        data=DataConfig(canvas=16, pool=4, heldout=4),
        batch_size=4,
        log_every=2,
        ckpt_every=3,
        out=str(out),
    )


def _fixed_loss(result: dict, recipe: unet.UNetRecipe) -> float:
    """The denoising loss on the pool with fixed timesteps and noise (the training loss is a random draw)."""
    sd = result["raw_sd"]
    images, captions = shapes_tensors(recipe.data)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x0 = sd.vae.encode(images).mean * sd.config.vae.scaling_factor
        t = torch.randint(1000, (len(x0),), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        alpha_bar = unet.alphas_cumprod(recipe.scheduler).float()
        return unet.denoising_loss(sd.unet, x0, sd.encode_prompt(captions), t, eps, alpha_bar, "epsilon").item()


def test_unet_loop_overfits_a_tiny_pool(frozen, tmp_path):
    recipe = dataclasses.replace(_recipe(frozen, tmp_path / "a", max_steps=120, warmup_steps=10), ckpt_every=120)
    start = unet.train(dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, max_steps=1),
                                           out=str(tmp_path / "b")), quiet=True)  # fmt: skip
    done = unet.train(recipe, quiet=True)
    assert _fixed_loss(done, recipe) < 0.5 * _fixed_loss(start, recipe)
    assert (tmp_path / "a" / "samples" / "step-00000120.png").exists()  # the preview grid
    assert (tmp_path / "a" / "loss.png").exists()


def test_train_text_trains_the_towers_layers_with_the_unet(frozen, tmp_path):
    """train_text: the loss falls, the tower's layers change, its embeddings do not, the model ships it."""
    recipe = _recipe(frozen, tmp_path / "a", max_steps=120, warmup_steps=10)
    recipe = dataclasses.replace(recipe, ckpt_every=120, train_text=True)
    start = unet.train(dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, max_steps=1),
                                           out=str(tmp_path / "b")), quiet=True)  # fmt: skip
    done = unet.train(recipe, quiet=True)
    assert _fixed_loss(done, recipe) < 0.5 * _fixed_loss(start, recipe)
    before = load(frozen).text_encoder.state_dict()
    for shipped in (done["sd"], done["raw_sd"]):
        after = shipped.text_encoder.state_dict()
        for key in ("embeddings.token_embedding.weight", "embeddings.position_embedding.weight"):
            assert torch.equal(after[key], before[key]), key
        for key in ("encoder.layers.0.mlp.fc1.weight", "final_layer_norm.weight"):
            assert not torch.equal(after[key], before[key]), key


def test_a_layout_run_trains_the_head_and_ships_without_it(frozen, tmp_path):
    recipe = _recipe(frozen, tmp_path / "a", max_steps=120, warmup_steps=10)
    recipe = dataclasses.replace(recipe, train_text=True, layout_weight=1.0, ckpt_every=120,
                                 data=dataclasses.replace(recipe.data, pool=16))  # fmt: skip
    start = unet.setup(recipe)
    done = unet.train(recipe, quiet=True)
    tokenizer = CLIPTokenizer.default()
    pool = scenes(recipe.data.seed, recipe.data.pool, recipe.data.canvas)
    ids = tokenizer([s.caption for s in pool]).input_ids
    targets = torch.tensor([layout_target(s) for s in pool])

    def layout_loss_of(model) -> float:
        with torch.no_grad():
            logits = model.layout_head(model.text_encoder.encode(ids))
            return layout_loss(logits, ids, targets, tokenizer.eos_token_id).item()

    assert layout_loss_of(done["model"]) < 0.5 * layout_loss_of(start.model)
    assert not any("layout" in key for key in done["sd"].state_dict())
    with pytest.raises(RecipeError, match="layout_weight needs train_text = true"):
        unet.setup(dataclasses.replace(recipe, train_text=False))


# the UNet alone; with the text tower's layers; with them and the layout loss's head; and with those
# and the grounding loss on the same forward pass
TEXT_MODES = [{}, {"train_text": True}, {"train_text": True, "layout_weight": 1.0},
              {"train_text": True, "layout_weight": 1.0, "grounding_weight": 1.0}]  # fmt: skip
MODE_IDS = ["unet", "train_text", "layout", "layout_grounding"]


@pytest.mark.parametrize("mode", TEXT_MODES, ids=MODE_IDS)
def test_unet_resume_continues_exactly(frozen, tmp_path, mode):
    def recipe(name: str) -> unet.UNetRecipe:
        return dataclasses.replace(_recipe(frozen, tmp_path / name), **mode)

    straight = unet.train(recipe("straight"), quiet=True)
    unet.train(recipe("resumed"), stop_at=3, quiet=True)
    resumed = unet.train(recipe("resumed"), resume=True, quiet=True)
    assert resumed["loss"] == straight["loss"]
    for key, value in straight["model"].state_dict().items():
        assert torch.equal(resumed["model"].state_dict()[key], value), key


def test_unet_refuses_parts_that_do_not_fit(frozen, tmp_path):
    recipe = _recipe(frozen, tmp_path / "x")
    with pytest.raises(RecipeError, match="cross_attention_dim 64 must equal the text tower's width 32"):
        unet.setup(dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, cross_attention_dim=64)))
    with pytest.raises(RecipeError, match=r"no trained VAE there \(make one with: latentdiff train vae"):
        unet.setup(dataclasses.replace(recipe, vae=str(tmp_path / "nothing")))


_GRADIENT = """
import sys, torch
from latentdiff.tokenizer import CLIPTokenizer
from latentdiff.train import unet
from latentdiff.train.common import init_distributed
recipe = unet.UNetRecipe(**{k: v for k, v in torch.load(sys.argv[1], weights_only=False).items()})
run = unet.setup(recipe)
rank, world = init_distributed()
seen = []
run.model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
net = torch.nn.parallel.DistributedDataParallel(run.model) if world > 1 else run.model
run.loss_fn(net, rank, world).backward()
if rank == 0:
    grads = {k: p.grad for k, p in run.model.named_parameters() if p.requires_grad}
    torch.save({"seen": seen, **grads}, sys.argv[2])
"""


@pytest.mark.parametrize("mode", TEXT_MODES, ids=MODE_IDS)
def test_two_process_ddp_gradient_equals_one_process(frozen, tmp_path, mode):
    recipe = dataclasses.replace(_recipe(frozen, tmp_path / "ddp"), **mode)
    torch.save({f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}, tmp_path / "recipe.pt")
    script = tmp_path / "gradient.py"
    script.write_text(_GRADIENT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    subprocess.run([sys.executable, script, tmp_path / "recipe.pt", one], check=True, env=env)
    with socket.socket() as probe:  # a port free now, rather than a fixed one another run may hold
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    done = subprocess.run([*torchrun, script, tmp_path / "recipe.pt", two], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]  # torchrun's own report names the failing rank
    one, two = torch.load(one), torch.load(two)
    assert one.pop("seen") == [4] and two.pop("seen") == [2]  # each process ran half of the global batch
    assert any(key.startswith("text_encoder.encoder.") for key in one) == recipe.train_text
    assert any(key.startswith("layout_head.") for key in one) == (recipe.layout_weight > 0)
    for key, grad in one.items():
        torch.testing.assert_close(two[key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_convert_ships_a_chosen_checkpoint(frozen, tmp_path, capsys):
    """convert --unet runs/NAME/step-N.pt: that step's EMA UNet in the run's model folder, the rest kept."""
    from latentdiff.cli import main

    run = tmp_path / "run"
    result = unet.train(_recipe(frozen, run), quiet=True)  # checkpoints at steps 3 and 6
    save(result["sd"], run / "model")
    step3 = run / "step-00000003.pt"
    assert main(["convert", str(run / "model"), str(tmp_path / "at3"), "--to", "diffusers", "--unet", str(step3)]) == 0
    shipped, last = load(tmp_path / "at3"), load(run / "model")
    ema3 = torch.load(step3, weights_only=True)["ema"]
    assert all(torch.equal(v, ema3[k]) for k, v in shipped.unet.state_dict().items())
    assert not all(torch.equal(v, last.unet.state_dict()[k]) for k, v in shipped.unet.state_dict().items())
    assert all(torch.equal(v, last.vae.state_dict()[k]) for k, v in shipped.vae.state_dict().items())
    assert shipped.config == last.config

    capsys.readouterr()  # anything else is refused in one line, and nothing is written
    for bad in (run / "last.txt", run / "model" / "unet" / "config.json"):
        args = ["convert", str(run / "model"), str(tmp_path / "bad"), "--to", "diffusers", "--unet", str(bad)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"--unet {bad}: not a" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
