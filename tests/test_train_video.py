"""The video trainer: it learns a tiny pool of moving shapes (with still images alongside) and resumes exactly."""

from __future__ import annotations

import dataclasses

import torch

from latentdiff.train import video
from latentdiff.train.common import DataConfig, OptimConfig
from tests.test_train_unet import _recipe, frozen  # noqa: F401 (the fixture)


def _video_recipe(frozen, out, **optim) -> video.VideoRecipe:  # noqa: F811
    image = _recipe(frozen, out)  # the tiny UNet and frozen parts the image trainer's tests use
    return video.VideoRecipe(
        model=image.model, vae=image.vae, clip=image.clip, frames=4, max_frames=4, videos=4, image_batch_size=2,
        optim=OptimConfig(**{"lr": 2e-3, "warmup_steps": 2, "max_steps": 30, **optim}),
        data=DataConfig(canvas=16, pool=4, heldout=4), batch_size=2, log_every=5, ckpt_every=10, out=str(out),
    )  # fmt: skip


def _fixed_loss(model, loss_fn) -> float:
    state = torch.random.get_rng_state()
    torch.manual_seed(123)  # the same batches, timesteps and noise each time
    with torch.no_grad():
        loss = loss_fn(model, 0, 1).item()
    torch.random.set_rng_state(state)
    return loss


def test_the_video_trainer_learns_its_tiny_pool(frozen, tmp_path):  # noqa: F811
    recipe = _video_recipe(frozen, tmp_path / "run")
    model, loss_fn, *_ = video.setup(recipe)
    before = _fixed_loss(model, loss_fn)
    result = video.train(recipe, quiet=True)
    after = _fixed_loss(result["model"], loss_fn)
    assert after < 0.7 * before, (before, after)
    assert any(p.abs().sum() > 0 for layer in result["model"].temporal for p in layer.to_out.parameters())


def test_the_video_trainer_resumes_exactly(frozen, tmp_path):  # noqa: F811
    straight = video.train(_video_recipe(frozen, tmp_path / "a", max_steps=20), quiet=True)
    recipe = _video_recipe(frozen, tmp_path / "b", max_steps=20)
    video.train(recipe, stop_at=10, quiet=True)
    resumed = video.train(recipe, resume=True, quiet=True)
    for name, value in straight["model"].state_dict().items():
        assert torch.equal(value, resumed["model"].state_dict()[name]), name


def test_frames_past_max_frames_are_refused(frozen, tmp_path):  # noqa: F811
    import pytest

    from latentdiff.train.common import RecipeError

    with pytest.raises(RecipeError, match="frames must be between 1 and max_frames"):
        video.setup(dataclasses.replace(_video_recipe(frozen, tmp_path), frames=6))
