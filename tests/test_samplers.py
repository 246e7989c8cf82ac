"""Each sampler x schedule against the matching diffusers scheduler, driven by one dummy model.

The dummy "UNet" is a fixed function of (x_t, t), so any difference in timesteps, sigmas, input
scaling, prediction-type handling or update rule shows up in the trajectory. Ancestral samplers
get the same noise: the same seeded CPU generator, drawn in the same order.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from latentdiff.config import SchedulerConfig
from latentdiff.denoisers import Denoiser
from latentdiff.samplers import get_sampler
from latentdiff.schedules import make_schedule, sigma_to_t, spaced_timesteps, train_sigmas

SHAPE = (2, 4, 5, 6)


def dummy_unet(x_t: torch.Tensor, t: torch.Tensor, context=None) -> torch.Tensor:
    """Deterministic, depends on both inputs, roughly unit scale like a real eps/v prediction."""
    t = torch.as_tensor(t, dtype=x_t.dtype)
    return 0.6 * x_t * torch.cos(t / 150) + 0.3 * torch.sin(t / 70 + x_t)


# diffusers' settings for SD's "leading" spacing, and ours.
LEADING, OURS_LEADING = {"steps_offset": 1, "timestep_spacing": "leading"}, {"spacing": "leading", "offset": 1}
KARRAS = {"use_karras_sigmas": True, "timestep_spacing": "linspace"}  # the whole training range
OURS_WHOLE = {"spacing": "linspace", "offset": 0}  # ours over the whole range, as k-diffusion and A1111
DDIM = {"set_alpha_to_one": False, "clip_sample": False}
DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2}

# name: (our sampler, its options, diffusers scheduler, its config, our schedule, the space diffusers'
#        latents live in: "ve" = x0 + sigma eps, "vp" = x_t, and whether the UNet sees rounded timesteps)
CASES = {
    "ddim-leading": ("ddim", {}, "DDIMScheduler", {**DDIM, **LEADING}, {**OURS_LEADING, "final": "sigma_min"},
                     "vp", False),
    "ddim-eta0.7-trailing": ("ddim", {"eta": 0.7}, "DDIMScheduler", {**DDIM, "timestep_spacing": "trailing"},
                             {"spacing": "trailing", "final": "sigma_min"}, "vp", False),
    "ddpm-leading": ("ddpm", {}, "DDPMScheduler", {"clip_sample": False, **LEADING}, OURS_LEADING, "vp", False),
    "ddpm-trailing": ("ddpm", {}, "DDPMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"},
                      {"spacing": "trailing"}, "vp", False),
    "euler-leading": ("euler", {}, "EulerDiscreteScheduler", LEADING, OURS_LEADING, "ve", False),
    "euler-trailing": ("euler", {}, "EulerDiscreteScheduler", {"timestep_spacing": "trailing"},
                       {"spacing": "trailing"}, "ve", False),
    "euler-karras": ("euler", {}, "EulerDiscreteScheduler", KARRAS, {**OURS_WHOLE, "sigmas": "karras"}, "ve", False),
    # SD's leading spacing with Karras sigmas: the range shrinks to the spaced timesteps' (951..1 for 20 steps).
    "euler-karras-leading": ("euler", {}, "EulerDiscreteScheduler", {**LEADING, "use_karras_sigmas": True},
                             {**OURS_LEADING, "sigmas": "karras"}, "ve", False),
    "euler-exponential": ("euler", {}, "EulerDiscreteScheduler",
                          {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
                          {**OURS_WHOLE, "sigmas": "exponential"}, "ve", False),
    "euler_ancestral-leading": ("euler_ancestral", {}, "EulerAncestralDiscreteScheduler", LEADING, OURS_LEADING,
                                "ve", False),
    "heun-leading": ("heun", {}, "HeunDiscreteScheduler", LEADING, OURS_LEADING, "ve", False),
    "heun-karras": ("heun", {}, "HeunDiscreteScheduler", KARRAS, {**OURS_WHOLE, "sigmas": "karras"}, "ve", False),
    "dpmpp_2m-trailing": ("dpmpp_2m", {}, "DPMSolverMultistepScheduler", {**DPMPP, "timestep_spacing": "trailing"},
                          {"spacing": "trailing"}, "vp", False),
    # diffusers' DPM-Solver rounds Karras timesteps; quantize=True does the same.
    "dpmpp_2m-karras": ("dpmpp_2m", {}, "DPMSolverMultistepScheduler", {**DPMPP, "use_karras_sigmas": True},
                        {**OURS_WHOLE, "sigmas": "karras"}, "vp", True),
}  # fmt: skip


def _diffusers_scheduler(name: str, config: dict, prediction_type: str):
    import diffusers

    return getattr(diffusers, name)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction_type, **config,
    )  # fmt: skip


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("case", list(CASES))
def test_sampler_matches_diffusers(case, prediction_type):
    sampler, options, ref_name, ref_config, schedule_args, space, quantize = CASES[case]
    steps = 8
    cfg = SchedulerConfig(prediction_type=prediction_type)
    schedule = make_schedule(cfg, steps, **schedule_args)
    sigmas = schedule.sigmas
    ref = _diffusers_scheduler(ref_name, ref_config, prediction_type)
    ref.set_timesteps(steps)

    # Same timesteps (Heun's reference repeats each but the first).
    ref_t = ref.timesteps.double()
    if sampler == "heun":
        ref_t = torch.cat([ref_t[:1], ref_t[1::2]])
    torch.testing.assert_close(schedule.timesteps.round() if quantize else schedule.timesteps, ref_t,
                               atol=2e-3, rtol=0)  # fmt: skip

    def to_ref(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x if space == "ve" else x / (1 + sigma**2).sqrt()

    x_start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    x_start = x_start * (1 + sigmas[0] ** 2).sqrt().float()

    # Ours, recording the state after every step.
    trajectory = []
    denoiser = Denoiser(dummy_unet, train_sigmas(cfg), prediction_type, quantize=quantize)
    get_sampler(sampler)(
        lambda x, sigma: denoiser(x, sigma, None),
        x_start.clone(),
        sigmas.float(),
        callback=lambda step: trajectory.append(to_ref(step.x, sigmas[step.index + 1].float())),
        generator=torch.Generator().manual_seed(42),
        **options,
    )

    # Theirs, from the same start.
    latents = to_ref(x_start, sigmas[0].float())
    generator = torch.Generator().manual_seed(42)
    theirs = []
    for t in ref.timesteps:
        out = dummy_unet(ref.scale_model_input(latents, t), t)
        # DDIM takes eta per call, not in its config.
        extra = {"eta": options["eta"]} if "eta" in options else {}
        if "generator" in inspect.signature(ref.step).parameters:
            extra["generator"] = generator
        latents = ref.step(out, t, latents, **extra).prev_sample
        theirs.append(latents)
    if sampler == "heun":  # two calls complete a step, except the last (Euler) step to sigma = 0
        theirs = theirs[1::2] + theirs[-1:]

    assert len(trajectory) == len(theirs) == steps
    for i, (a, b) in enumerate(zip(trajectory, theirs, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, i=i: f"step {i}: {m}")


def test_sigma_to_t_inverts_the_table():
    table = train_sigmas(SchedulerConfig())
    t = torch.tensor([0.0, 1.0, 250.5, 998.25, 999.0], dtype=torch.float64)
    # Between table entries sigma is interpolated in log space, so this round trip is exact there.
    sigma = (table.log()[t.floor().long()] * (1 - t.frac()) + table.log()[t.ceil().long()] * t.frac()).exp()
    torch.testing.assert_close(sigma_to_t(sigma, table), t)


def test_spacings_and_bad_arguments():
    assert spaced_timesteps(1000, 4, "leading", offset=1).tolist() == [751, 501, 251, 1]
    assert spaced_timesteps(1000, 4, "trailing").tolist() == [999, 749, 499, 249]
    assert spaced_timesteps(1000, 4, "linspace").tolist() == [999, 666, 333, 0]
    with pytest.raises(ValueError, match="unknown timestep spacing 'middle'"):
        spaced_timesteps(1000, 4, "middle")
    with pytest.raises(ValueError, match="steps must be between 1 and 1000, got 0"):
        spaced_timesteps(1000, 0)
    with pytest.raises(ValueError, match="unknown sampler 'plms'; choose one of: euler, "):
        get_sampler("plms")
    with pytest.raises(ValueError, match="unknown sigma spacing 'cosine'"):
        make_schedule(SchedulerConfig(), 4, sigmas="cosine")


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_q_sample_matches_diffusers_add_noise(beta_schedule):
    from diffusers import DDPMScheduler

    from latentdiff.schedules import alphas_cumprod, q_sample

    cfg = SchedulerConfig(beta_schedule=beta_schedule)
    ref = DDPMScheduler(beta_start=cfg.beta_start, beta_end=cfg.beta_end, beta_schedule=beta_schedule)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    t = torch.tensor([0, 10, 500, 999])[: SHAPE[0]]
    torch.testing.assert_close(q_sample(x0, t, eps, alphas_cumprod(cfg)), ref.add_noise(x0, eps, t), atol=1e-5, rtol=0)
