"""The video trainer: it learns a tiny pool of moving shapes (with still images alongside) and resumes exactly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentdiff.train import video
from latentdiff.train.common import DataConfig, OptimConfig, RecipeError
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
    with pytest.raises(RecipeError, match="frames must be between 1 and max_frames"):
        video.setup(dataclasses.replace(_video_recipe(frozen, tmp_path), frames=6))


def test_frozen_image_layers_stay_put_while_the_temporal_layers_learn(frozen, tmp_path):  # noqa: F811
    recipe = dataclasses.replace(_video_recipe(frozen, tmp_path, max_steps=4), spatial_lr_scale=0.0, shared_noise=0.5)
    start, _, *_ = video.setup(recipe)
    spatial = {k: v.clone() for k, v in start.unet.state_dict().items()}
    trained = video.train(recipe, quiet=True)["model"]
    for name, value in trained.unet.state_dict().items():
        assert torch.equal(value, spatial[name]), name
    assert any(p.abs().sum() > 0 for layer in trained.temporal for p in layer.to_out.parameters())


def test_the_image_layers_learn_at_their_share_of_the_lr(frozen, tmp_path):  # noqa: F811
    from latentdiff.train.common import load_last_checkpoint, lr_at

    recipe = dataclasses.replace(_video_recipe(frozen, tmp_path, max_steps=10), spatial_lr_scale=0.25)
    video.train(recipe, quiet=True)
    groups = load_last_checkpoint(tmp_path)["optimizer"]["param_groups"]
    assert sorted({g["lr_scale"] for g in groups}) == [0.25, 1.0]
    for group in groups:  # the lr of the last step, scaled per group
        assert group["lr"] == pytest.approx(lr_at(9, recipe.optim) * group["lr_scale"])


def test_a_shared_noise_outside_0_to_1_is_refused(frozen, tmp_path):  # noqa: F811
    with pytest.raises(RecipeError, match=r"shared_noise must be in \[0, 1\)"):
        video.setup(dataclasses.replace(_video_recipe(frozen, tmp_path), shared_noise=1.0))
    with pytest.raises(RecipeError, match="spatial_lr_scale must be 0 or more"):
        video.setup(dataclasses.replace(_video_recipe(frozen, tmp_path), spatial_lr_scale=-1.0))


def test_weighted_denoising_loss_weighs_each_samples_error():
    from latentdiff.train.unet import denoising_loss

    x0, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    alpha_bar, t = torch.linspace(0.9, 0.1, 10), torch.tensor([1, 8])

    def predicts_zero(x_t, t, context):
        return torch.zeros_like(x_t)

    plain = denoising_loss(predicts_zero, x0, None, t, eps, alpha_bar, "epsilon")
    assert torch.allclose(denoising_loss(predicts_zero, x0, None, t, eps, alpha_bar, "epsilon", torch.ones(2)), plain)
    weighted = denoising_loss(predicts_zero, x0, None, t, eps, alpha_bar, "epsilon", torch.tensor([2.0, 0.0]))
    assert torch.allclose(weighted, eps[0].square().mean())  # (2 * error_0 + 0 * error_1) / 2


def test_the_video_trainer_learns_with_high_noise_weighted(frozen, tmp_path):  # noqa: F811
    recipe = dataclasses.replace(_video_recipe(frozen, tmp_path / "run"), v_weight_cap=50.0, shared_noise=0.5)
    model, loss_fn, *_ = video.setup(recipe)
    before = _fixed_loss(model, loss_fn)
    after = _fixed_loss(video.train(recipe, quiet=True)["model"], loss_fn)
    assert after < 0.7 * before, (before, after)
    with pytest.raises(RecipeError, match=r"v_weight_cap must be 0 \(off\) or at least 1"):
        video.setup(dataclasses.replace(recipe, v_weight_cap=0.5))


def test_reverse_pairs_copy_the_first_half_and_mark_the_second():
    idx, t, drop = (
        torch.tensor([3, 1, 0, 0, 9]),
        torch.tensor([10, 20, 0, 0, 5]),
        torch.tensor([True, False] + [False] * 3),
    )
    eps, noise = torch.randn(5, 2, 3, 1, 1), torch.randn(5, 2, 3, 1, 1)
    backwards = video.pair_backwards(idx, t, drop, eps, noise)
    assert backwards.tolist() == [False, False, True, True, False]  # an odd one out stays unpaired
    assert idx.tolist() == [3, 1, 3, 1, 9] and t.tolist() == [10, 20, 10, 20, 5] and drop[2] and not drop[3]
    assert torch.equal(eps[2:4], eps[:2]) and torch.equal(noise[2:4], noise[:2])


def test_the_video_trainer_learns_with_reverse_pairs(frozen, tmp_path):  # noqa: F811
    recipe = dataclasses.replace(_video_recipe(frozen, tmp_path / "run"), reverse_pairs=True)
    model, loss_fn, *_ = video.setup(recipe)
    before = _fixed_loss(model, loss_fn)
    after = _fixed_loss(video.train(recipe, quiet=True)["model"], loss_fn)
    assert after < 0.7 * before, (before, after)
    with pytest.raises(RecipeError, match="reverse_pairs needs a batch_size of at least 2"):
        video.setup(dataclasses.replace(recipe, batch_size=1))


def test_a_reverse_pair_is_one_noisy_video_backwards_under_the_reversed_caption(frozen, tmp_path):  # noqa: F811
    recipe = dataclasses.replace(_video_recipe(frozen, tmp_path), reverse_pairs=True, image_batch_size=0,
                                 caption_dropout=0.0, shared_noise=0.5)  # fmt: skip
    _, loss_fn, *_ = video.setup(recipe)
    seen = {}

    def net(x_t, t, context):
        seen.update(x_t=x_t, t=t, context=context)
        return torch.zeros_like(x_t)

    loss_fn(net, 0, 1)
    x_t, t, context = seen["x_t"], seen["t"], seen["context"]
    assert x_t.shape[0] == 2 and t[0] == t[1]
    assert torch.allclose(x_t[1], x_t[0].flip(1))  # (C, F, h, w): the frames in reverse order
    assert not torch.allclose(context[0], context[1])  # "moving left" vs "moving right": other words
