"""A1111 requests -> pipeline runs -> PNGs that carry the same `parameters` text the CLI writes.

Two halves, run on two threads: `from_request` checks a request and decodes its images as soon as it
arrives (so bad input is refused at once, not after the queue); `run` fills in what depends on the
loaded model (native size, the built-in model's CFG and sampler defaults) and generates, on the
worker thread that owns the model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from PIL import Image, ImageOps

from ..metadata import A1111_SAMPLERS, image_parameters
from ..model import StableDiffusion
from ..pipeline import Step, from_pil, img2img, inpaint, to_pil, txt2img
from .catalogue import ModelEntry
from .codec import RequestError, decode_image, encode_png
from .schemas import GenerationRequest, Img2ImgRequest
from .settings import Limits

_FROM_A1111 = {a1111: ours for ours, a1111 in A1111_SAMPLERS.items()}


@dataclass(frozen=True)
class Generation:
    """One request, checked. None means "the loaded model's default", filled in by `run`."""

    mode: str  # "txt2img", "img2img" or "inpaint"
    prompt: str
    negative_prompt: str
    steps: int | None
    seed: int  # of the first image; image i uses seed + i, as in the CLI
    batch_size: int
    n_iter: int
    sampler: str | None  # ours: "euler_ancestral", ...
    karras: bool | None  # None ("Automatic"): the model's default, Karras for the built-in model
    cfg_scale: float | None
    width: int | None
    height: int | None
    strength: float | None = None
    image: Image.Image | None = None  # RGB, already width x height
    mask: Image.Image | None = None  # L, white = repaint
    cfg_max_sigma: float | None = None  # not a request field: the model's default (cli.DEFAULTS), set by `run`


def _parse_sampler(name: str | None, scheduler: str | None) -> tuple[str | None, bool | None]:
    """A1111's sampler name (or ours; or A1111's older "<name> Karras") and scheduler -> (ours, karras);
    karras is None for "Automatic" (or no scheduler): the loaded model's default."""
    karras = False
    if name is not None and name.endswith(" Karras"):
        name, karras = name.removesuffix(" Karras"), True
    if name is not None:
        if name not in _FROM_A1111 and name not in A1111_SAMPLERS:
            choices = ", ".join(f"'{n}'" for n in _FROM_A1111)
            raise RequestError(f"sampler_name: unknown sampler {name!r}; choose one of {choices}")
        name = _FROM_A1111.get(name, name)
    if scheduler is not None and scheduler.lower() not in ("automatic", "karras"):
        raise RequestError(f"scheduler: unknown scheduler {scheduler!r}; choose 'Automatic' or 'Karras'")
    return name, (karras or (scheduler or "").lower() == "karras") or None


def _check_limits(width: int | None, height: int | None, steps: int, images: int, limits: Limits) -> None:
    for field, value, limit, option in (
        ("width", width, limits.max_width, "--max-width"),
        ("height", height, limits.max_height, "--max-height"),
        ("steps", steps, limits.max_steps, "--max-steps"),
        ("batch_size * n_iter", images, limits.max_images, "--max-images"),
    ):
        if value is not None and value > limit:
            raise RequestError(f"{field}: {value} is over this server's limit of {limit} (latentdiff serve {option})")


def from_request(request: GenerationRequest, limits: Limits) -> Generation:
    """Check a request and decode its images; raises RequestError naming the field that is wrong."""
    _check_limits(request.width, request.height, request.steps, request.batch_size * request.n_iter, limits)
    sampler, karras = _parse_sampler(request.sampler_name or request.sampler_index, request.scheduler)
    generation = Generation(
        mode="txt2img",
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        seed=random.randrange(2**32 - 1) if request.seed == -1 else request.seed,  # 32 bits, as A1111 draws
        batch_size=request.batch_size,
        n_iter=request.n_iter,
        sampler=sampler,
        karras=karras,
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
    )
    if not isinstance(request, Img2ImgRequest):
        return generation
    image = decode_image(request.init_images[0], "init_images[0]").convert("RGB")
    size = (request.width or image.width, request.height or image.height)
    _check_limits(*size, request.steps, request.batch_size * request.n_iter, limits)
    fit = _resize if request.resize_mode == 0 else _crop_and_resize
    generation = replace(generation, mode="img2img", strength=request.denoising_strength, image=fit(image, size),
                         width=size[0], height=size[1])  # fmt: skip
    if request.mask is None:
        return generation
    mask = decode_image(request.mask, "mask").convert("L")
    if request.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return replace(generation, mode="inpaint", mask=fit(mask, size))


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _crop_and_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else ImageOps.fit(image, size, Image.Resampling.LANCZOS)


def parameters_text(generation: Generation, seed: int, size: tuple[int, int], model_title: str) -> str:
    """The `parameters` text of one image, exactly as `latentdiff generate/img2img/inpaint` writes it."""
    g = generation
    return image_parameters(g.prompt, g.negative_prompt, steps=g.steps, sampler=g.sampler, karras=g.karras,
                            cfg_scale=g.cfg_scale, seed=seed, size=size, model=model_title,
                            strength=None if g.mode == "txt2img" else g.strength, mask=g.mode == "inpaint",
                            cfg_max_sigma=g.cfg_max_sigma)  # fmt: skip


def native_size(model: StableDiffusion) -> int:
    """The image side the model was trained at (what txt2img makes when no size is asked for)."""
    return model.config.unet.sample_size * model.config.vae.downsample_factor


def _with_model_defaults(generation: Generation, model: StableDiffusion, entry: ModelEntry) -> Generation:
    native = native_size(model)
    return replace(
        generation,
        steps=generation.steps or entry.defaults["steps"],
        sampler=generation.sampler or entry.defaults["sampler"],
        karras=generation.karras if generation.karras is not None else entry.defaults["karras"],
        cfg_scale=generation.cfg_scale if generation.cfg_scale is not None else entry.defaults["cfg_scale"],
        cfg_max_sigma=entry.defaults["cfg_max_sigma"],
        width=generation.width or native,
        height=generation.height or native,
    )


def run(model: StableDiffusion, entry: ModelEntry, generation: Generation, limits: Limits,
        on_step: Callable[[int, Step], None]) -> dict:  # fmt: skip
    """Generate; returns A1111's response fields `images` (base64 PNGs) and `info` (a dict).

    on_step(i, step) is called at every denoising step of the i-th of the n_iter runs; it may raise to stop.
    """
    g = _with_model_defaults(generation, model, entry)
    _check_limits(g.width, g.height, g.steps, g.batch_size * g.n_iter, limits)  # the model's native size included
    warnings = _truncation_warnings(model, {"prompt": g.prompt, "negative_prompt": g.negative_prompt})
    started = time.strftime("%Y%m%d%H%M%S")
    images = []
    for iteration in range(g.n_iter):
        for state in _pipeline(model, g, g.seed + iteration * g.batch_size):
            if isinstance(state, Step):
                on_step(iteration, state)
            else:
                images += to_pil(state)
    seeds = [g.seed + i for i in range(len(images))]
    infotexts = [parameters_text(g, seed, image.size, entry.title) for seed, image in zip(seeds, images, strict=True)]
    encoded = [encode_png(image, {"parameters": text}) for image, text in zip(images, infotexts, strict=True)]
    return {"images": encoded, "info": _info(g, entry, seeds, infotexts, started, warnings)}


def _pipeline(model: StableDiffusion, generation: Generation, seed: int):
    """The CLI's calls (cli.cmd_generate / cmd_img2img / cmd_inpaint), so the same seed gives the same pixels."""
    g = generation
    sampling = dict(negative_prompt=g.negative_prompt, steps=g.steps, guidance_scale=g.cfg_scale, seed=seed,
                    sampler=g.sampler, sigmas="karras" if g.karras else "default",
                    guidance_max_sigma=g.cfg_max_sigma)  # fmt: skip
    prompts = [g.prompt] * g.batch_size
    if g.mode == "txt2img":
        return txt2img(model, g.prompt, height=g.height, width=g.width, batch=g.batch_size, **sampling)
    if g.mode == "img2img":
        return img2img(model, prompts, from_pil(g.image), strength=g.strength, **sampling)
    return inpaint(model, prompts, from_pil(g.image), from_pil(g.mask, "L"), strength=g.strength, **sampling)


def _truncation_warnings(model: StableDiffusion, prompts: dict[str, str]) -> list[str]:
    # Asked of the tokenizer here rather than caught from warnings.warn, which is process-wide state.
    tokenizer = model.tokenizer
    found = {field: tokenizer.truncation_warning(tokenizer([text]), [text]) for field, text in prompts.items()}
    return [f"{field}: {warning}" for field, warning in found.items() if warning]


def _info(generation: Generation, entry: ModelEntry, seeds: list[int], infotexts: list[str], started: str,
          warnings: list[str]) -> dict:  # fmt: skip
    """The subset of A1111's `info` JSON (processing.Processed.js) that latentdiff can fill truthfully."""
    g = generation
    return {
        "prompt": g.prompt,
        "all_prompts": [g.prompt] * len(seeds),
        "negative_prompt": g.negative_prompt,
        "all_negative_prompts": [g.negative_prompt] * len(seeds),
        "seed": g.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(seeds),
        "width": g.width,
        "height": g.height,
        "sampler_name": A1111_SAMPLERS[g.sampler],
        "scheduler": "Karras" if g.karras else "Automatic",
        "cfg_scale": g.cfg_scale,
        "steps": g.steps,
        "batch_size": g.batch_size,
        "n_iter": g.n_iter,
        "denoising_strength": g.strength,
        "sd_model_name": entry.title,
        "sd_model_hash": None,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "job_timestamp": started,
        "version": "latentdiff",
        "warnings": warnings,
    }
