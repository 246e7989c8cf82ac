"""`latentdiff` command line: thin over pipeline.py and weights/.

User errors (bad paths, corrupt or mismatched weights, bad sizes, unreadable images) print one
line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .config import ConfigError


def _user_errors() -> tuple[type[BaseException], ...]:
    from .tokenizer import TokenizerError
    from .weights import WeightsError

    return (
        WeightsError,
        ConfigError,
        TokenizerError,
        ValueError,
        FloatingPointError,
        FileNotFoundError,
        PermissionError,
    )


def _load_image(path: str, mode: str = "RGB"):
    """(1, C, H, W) in [0, 1]; mode "L" reads a mask as one grey channel."""
    from PIL import Image, UnidentifiedImageError

    from .pipeline import from_pil

    try:
        with Image.open(path) as image:
            return from_pil(image, mode)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read as an image ({e.__class__.__name__})") from None


def _write_images(model, states, args, model_name: str, strength: float | None = None,
                  mask: bool = False) -> list[Path]:  # fmt: skip
    """Run the pipeline under a progress bar, then write one PNG per image with its settings."""
    from tqdm import tqdm

    from .images import save_png
    from .metadata import image_parameters
    from .pipeline import Step, to_pil

    start = time.perf_counter()
    with tqdm(desc="denoising", unit="step", file=sys.stderr) as bar:
        for state in states:
            if isinstance(state, Step):
                bar.total = state.total
                bar.update(1)
            else:
                images = state
    out, paths = Path(args.out), []
    for i, image in enumerate(to_pil(images)):
        text = image_parameters(args.prompt, args.negative_prompt, steps=args.steps, sampler=args.sampler,
                                karras=args.karras, cfg_scale=args.cfg_scale, seed=args.seed + i,
                                size=image.size, model=model_name, strength=strength, mask=mask,
                                cfg_max_sigma=args.cfg_max_sigma)  # fmt: skip
        path = out if len(images) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
        save_png(image, path, {"parameters": text})
        paths.append(path)
    print(f"wrote {', '.join(map(str, paths))} in {time.perf_counter() - start:.1f} s")
    return paths


# The model this checkout ships (trained by recipes/*.toml; see its README.md, the model card).
BUILTIN_MODEL = Path(__file__).resolve().parents[1] / "models" / "shapes-64"


def _model_path(args) -> Path:
    if args.model is not None:
        return Path(args.model)
    if not (BUILTIN_MODEL / "model_index.json").exists():
        raise FileNotFoundError(f"the built-in model is missing ({BUILTIN_MODEL}); pass --model PATH")
    return BUILTIN_MODEL


# Sampling defaults: A1111's for real SD weights; for the built-in model, what measured best
# (`latentdiff evaluate`: fidelity 40.0% at CFG 2.5 vs 35.0% at 4 and 29.7% at 7.5, 20 Euler steps;
# Karras sigmas over SD's leading range: 82.0% vs 79.7% with the default sigmas on `--prompt-seed 4242`,
# round four's model 77.0% vs 73.0%; the model card has both and the bar's prompts).
# Guidance only at sigma <= 15 (the last 13 of 20 Karras steps; the first 7 run the conditional half
# alone, 33 UNet samples an image instead of 40): round six's model drew 87.3% of `--prompt-seed 4242`
# right against 87.0% guided throughout (sigma <= 8: 87.0%; <= 4: 84.3%; guidance dropped below
# sigma 1 instead: 75.0%). `latentdiff evaluate --cfg-max-sigma S`; the model card has the bar's prompts.
# 16 steps at that setting: 87.7% of the same prompts (14 steps: 83.7%, 12: 82.7%), a fifth less time
# than 20 (`latentdiff evaluate --prompt-seed 4242 --steps N`; the fidelity bar itself is measured at 20).
DEFAULTS = {
    "builtin": {"steps": 16, "cfg_scale": 2.5, "sampler": "euler", "karras": True, "cfg_max_sigma": 15.0},
    "other": {"steps": 20, "cfg_scale": 7.5, "sampler": "euler_ancestral", "karras": False, "cfg_max_sigma": None},
}


def _sampling(args) -> dict:
    defaults = DEFAULTS["builtin" if getattr(args, "model", None) is None else "other"]
    for key, value in defaults.items():  # resolved on args too: the PNG records what was used
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.cfg_max_sigma = _max_sigma(args.cfg_max_sigma)  # inf -> None: the PNG records no interval
    return dict(negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.cfg_scale,
                seed=args.seed, sampler=args.sampler, sigmas="karras" if args.karras else "default",
                guidance_max_sigma=args.cfg_max_sigma)  # fmt: skip


def _max_sigma(value: float | None) -> float | None:
    """--cfg-max-sigma: a noise level >= 0; inf (or none given, with --model) guides every step."""
    if value is not None and not value >= 0:
        raise ValueError(f"--cfg-max-sigma must be a noise level >= 0 (inf: guide every step), got {value}")
    return None if value is None or value == float("inf") else value


DEMO_PROMPTS = (
    "a red circle above a blue square",
    "a large yellow triangle on a black background",
    "a small green square to the left of a pink circle",
    "a purple circle on a white background",
    "a cyan triangle below a large orange square",
    "a blue square to the right of a small red triangle",
    "a large pink circle on a black background",
    "a green triangle above a yellow circle",
)


def cmd_demo(args) -> None:
    """The README's main command: the built-in model draws a grid of shapes-world prompts."""
    from .images import save_png
    from .pipeline import last_images, txt2img
    from .train.grid import make_grid
    from .weights import load

    model = load(_model_path(args))
    prompts = [p for p in DEMO_PROMPTS for _ in range(args.batch)]
    start = time.perf_counter()
    images = last_images(txt2img(model, prompts, **_sampling(args)))
    grid = make_grid(images * 2 - 1, columns=args.batch)
    grid = grid.resize((grid.width * 2, grid.height * 2), resample=0)  # nearest: 64 px tiles, shown at 2x
    save_png(grid, args.out, {"prompts": "\n".join(DEMO_PROMPTS)})
    print(f"wrote {args.out}: {len(prompts)} images in {time.perf_counter() - start:.1f} s, one row per prompt:")
    for prompt in DEMO_PROMPTS:
        print(f"  {prompt}")


def cmd_generate(args) -> None:
    from .pipeline import txt2img
    from .weights import load

    model = load(_model_path(args), allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    if args.deep_cache < 1:
        raise ValueError(f"--deep-cache must be 1 (exact) or more, got {args.deep_cache}")
    states = txt2img(model, args.prompt, height=args.height, width=args.width, batch=args.batch,
                     deep_cache=args.deep_cache, **_sampling(args))  # fmt: skip
    _write_images(model, states, args, _model_path(args).name)


def cmd_img2img(args) -> None:
    from .pipeline import img2img
    from .weights import load

    image = _load_image(args.image)
    model = load(_model_path(args), allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    states = img2img(model, [args.prompt] * args.batch, image, strength=args.strength, **_sampling(args))
    _write_images(model, states, args, _model_path(args).name, strength=args.strength)


def cmd_inpaint(args) -> None:
    from .pipeline import inpaint
    from .weights import load

    image, mask = _load_image(args.image), _load_image(args.mask, mode="L")
    if mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"{args.mask}: mask is {mask.shape[3]}x{mask.shape[2]}, the image {image.shape[3]}x{image.shape[2]}"
        )
    model = load(_model_path(args), allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    states = inpaint(model, [args.prompt] * args.batch, image, mask, strength=args.strength, **_sampling(args))
    _write_images(model, states, args, _model_path(args).name, strength=args.strength, mask=True)


def cmd_train(args) -> None:
    from .train import clip, unet, vae, video
    from .train.common import RecipeError, load_recipe

    recipes = {"vae": vae.VAERecipe, "clip": clip.CLIPRecipe, "unet": unet.UNetRecipe, "video": video.VideoRecipe}
    try:
        recipe = load_recipe(recipes[args.component], args.recipe, args.set)
        if args.component == "unet":
            return _train_unet(recipe, args.resume)
        if args.component == "video":
            return _train_video(recipe, args.resume)
        module = {"vae": vae, "clip": clip}[args.component]
        result = module.train(recipe, resume=args.resume)
    except RecipeError as e:
        raise ValueError(str(e)) from None
    report = {"vae": "held-out PSNR {:.2f} dB", "clip": "held-out caption retrieval {:.1%}"}[args.component]
    if args.component == "clip" and recipe.data.source == "fashion-mnist":
        report = "Fashion-MNIST test zero-shot accuracy {:.1%}"
    # Both: early in a run the EMA is still mostly the initial weights (0.999 ** 150 = 0.86).
    for name in ("model", "ema_model"):
        score = report.format(module.evaluate(result[name], recipe.data))
        if args.component == "vae" and recipe.data.emoji_repeats:
            score += f", emoji {module.evaluate(result[name], recipe.data, 'emoji'):.2f} dB"
        if args.component == "vae":
            score += f"; {module.reconstructions_hold(result[name], recipe.data):.1%} of reconstructions hold"
        print(f"step {result['step']}: {score} ({'EMA' if name == 'ema_model' else 'raw'})")


def _train_unet(recipe, resume: bool) -> None:
    from .evaluate import fidelity, shapes_prompts
    from .train import unet
    from .weights import save

    result = unet.train(recipe, resume=resume)
    folder = Path(recipe.out) / "model"
    save(result["sd"], folder)  # the EMA UNet with the frozen VAE and text tower: a diffusers folder
    clip = unet.trained_clip(recipe.clip, recipe.clip_weights)
    if clip is not None:  # and the rest of that CLIP, so the model can score its own images
        from .weights.clip_folder import save_clip

        save_clip(clip, folder)
    score = fidelity(result["sd"], shapes_prompts(100)).score
    print(f"step {result['step']}: shapes fidelity {score:.1%} on 100 fresh prompts (EMA, 20 euler steps, CFG 2.5)")
    print(f"wrote {folder} (generate with: latentdiff generate --model {folder} --prompt ...)")


def _train_video(recipe, resume: bool) -> None:
    from .train import video
    from .train.unet import assemble
    from .video_unet import VideoUNet
    from .weights.video_folder import save_video

    result = video.train(recipe, resume=resume)
    ema = VideoUNet(recipe.model, recipe.max_frames, recipe.causal, recipe.shared_noise, recipe.frame_position,
                    recipe.temporal_text, recipe.space_time_conv)  # fmt: skip
    ema.load_state_dict(result["ema"].shadow)
    image_part = assemble(recipe, ema.unet.state_dict(), result["vae"], result["text_encoder"], result["scale"])
    folder = Path(recipe.out) / "model"
    save_video(image_part, ema, folder)
    print(f"step {result['step']}: wrote {folder} (make a video with: latentdiff video --model {folder} --prompt ...)")


def cmd_video(args) -> None:
    import torch
    from tqdm import tqdm

    from .animation import write_gif, write_mp4
    from .pipeline import to_pil
    from .video_pipeline import txt2video
    from .weights.video_folder import load_video

    out = Path(args.out)
    if out.suffix.lower() != ".gif":
        raise ValueError(f"--out {out}: give a .gif path (the .mp4 is written beside it)")
    if args.fps <= 0 or args.scale < 1:
        raise ValueError(f"--fps must be above 0 and --scale at least 1, got {args.fps} and {args.scale}")
    model, video_unet = load_video(args.model)
    sampling = dict(steps=args.steps, guidance_scale=args.cfg_scale, seed=args.seed, sampler=args.sampler)
    states = txt2video(model, video_unet, args.prompt, args.frames, args.negative_prompt, **sampling)
    clip = None
    with tqdm(total=args.steps, desc="denoising", unit="step") as bar:
        for state in states:
            if isinstance(state, torch.Tensor):
                clip = state
            else:
                bar.update(1)
    frames = [image.resize((image.width * args.scale, image.height * args.scale), 0) for image in
              to_pil(clip[0].transpose(0, 1))]  # fmt: skip
    write_gif(frames, out, ms_per_frame=round(1000 / args.fps), hold_last_ms=round(1000 / args.fps))
    written = [out]
    if not args.no_mp4:
        write_mp4(frames, out.with_suffix(".mp4"), fps=args.fps, hold_last_s=0)
        written.append(out.with_suffix(".mp4"))
    print(f"wrote {', '.join(map(str, written))}: {args.frames} frames of {args.prompt!r}")


def cmd_evaluate(args) -> None:
    """The built-in model's bars, measured: shapes fidelity, emoji name ranking, the VAE's PSNR."""
    from .data.sources import DataMissingError
    from .evaluate import FIDELITY_SEED, emoji_bar, fidelity, relation_directions, shapes_prompts
    from .train.common import DataConfig
    from .train.grid import save_grid
    from .train.vae import evaluate as vae_psnr
    from .train.vae import reconstructions_hold
    from .weights import load
    from .weights.clip_folder import has_clip, load_clip
    from .weights.video_folder import has_video

    folder = _model_path(args)
    videos = (100 if has_video(folder) else 0) if args.videos is None else args.videos
    if videos and not has_video(folder):
        raise ValueError(f"--videos: {folder} is not a video model (no video_unet/); make one: latentdiff train video")
    if args.prompts < 0 or videos < 0:
        raise ValueError(f"--prompts and --videos must be 0 or more, got {args.prompts} and {videos}")
    sampling = dict(steps=args.steps, guidance_scale=args.cfg_scale, sampler=args.sampler, seed=args.seed)
    if videos:
        _motion_bars(folder, videos, sampling, args.grid)
    if not args.prompts:
        return
    model = load(folder)
    sigmas = "karras" if args.karras else "default"
    guide = dict(guidance_max_sigma=_max_sigma(args.cfg_max_sigma))
    setting = f"{args.steps} {args.sampler} steps, {sigmas} sigmas, CFG {args.cfg_scale}"
    setting += "" if guide["guidance_max_sigma"] is None else f" at sigma <= {guide['guidance_max_sigma']:g}"
    start = time.perf_counter()
    prompts = shapes_prompts(args.prompts, seed=FIDELITY_SEED if args.prompt_seed is None else args.prompt_seed)
    result = fidelity(model, prompts, deep_cache=args.deep_cache, sigmas=sigmas, **guide, **sampling)
    seconds = time.perf_counter() - start
    setting += f", deep cache every {args.deep_cache} calls (approximate)" if args.deep_cache > 1 else ""
    print(f"shapes fidelity {result.score:.1%} ({sum(result.held)}/{len(result.held)} prompts; {setting}; "
          f"{seconds / len(result.held):.3f} s/image)")  # fmt: skip
    print("failed first on: " + ", ".join(f"{k} {n}" for k, n in result.failures().items()))
    print("failed by objects named: " + ", ".join(
        f"{('one', 'two')[k - 1]} {bad} of {n}" for k, (bad, n) in result.by_objects().items()))  # fmt: skip
    if result.failures()["count"]:
        print("count failures, objects found for named: " + ", ".join(
            f"{k}: {n}" for k, n in result.count_misses().items()))  # fmt: skip
    directions = relation_directions(result.images, result.prompts)
    print("two-object prompts, where the objects went: " + ", ".join(f"{n} {k}" for k, n in directions.items()))
    data = DataConfig(heldout=args.prompts)
    print(f"VAE held-out PSNR {vae_psnr(model.vae, data):.2f} dB (shapes, {args.prompts} scenes); "
          f"{reconstructions_hold(model.vae, data):.1%} of its reconstructions hold their caption")  # fmt: skip
    if args.grid:
        save_grid(result.images[:64] * 2 - 1, Path(args.grid))
        print(f"wrote {args.grid} (the first 64 images)")
    if args.attention:
        _attention_alignment(model, args.attention, sampling)
    try:
        print(f"VAE held-out PSNR {vae_psnr(model.vae, data, 'emoji'):.2f} dB (emoji never trained on)")
        if not has_clip(folder):
            print("emoji name ranking: skipped (the model folder carries no CLIP image_encoder/)")
            return
        emoji = emoji_bar(model, load_clip(folder), sigmas=sigmas, **guide, **sampling)
    except DataMissingError as e:
        print(f"emoji: skipped ({e})")
        return
    print(f"emoji: CLIP ranks the prompted name in its top 5 for {emoji.train_top5:.1%} of training emoji and "
          f"{emoji.heldout_top5:.1%} of held-out emoji ({setting})")  # fmt: skip
    if args.grid:
        emoji_grid = Path(args.grid).with_name(Path(args.grid).stem + "-emoji.png")
        save_grid(emoji.images[:64] * 2 - 1, emoji_grid)
        print(f"wrote {emoji_grid} (64 generated training emoji)")


def _motion_bars(folder: Path, n: int, sampling: dict, grid: str | None) -> None:
    """The text-to-video bars on n held-out moving-shapes prompts, each video checked frame by frame."""
    from tqdm import tqdm

    from .evaluate import motion, motion_prompts
    from .train.grid import save_grid
    from .weights.video_folder import load_video

    model, video_unet = load_video(folder)
    frames = min(8, video_unet.max_frames)  # what the recipes train on: 1-2.5 px/frame travels 7-17 px
    start = time.perf_counter()
    with tqdm(total=n, desc="videos", unit="video") as bar:
        m = motion(model, video_unet, motion_prompts(n, frames, canvas=model.config.vae.sample_size), frames,
                   progress=bar.update, **sampling)  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"motion: named objects right (colour and shape) in {m.frames_right:.1%} of frames; all move in their "
          f"named direction in {m.moved_right:.1%} of videos; one set of objects throughout in {m.consistent:.1%}; "
          f"all three in {m.holds:.1%} ({n} held-out prompts, {frames} frames, {sampling['steps']} "
          f"{sampling['sampler']} steps, CFG {sampling['guidance_scale']}; {seconds / n:.2f} s/video)")  # fmt: skip
    if grid:
        path = Path(grid).with_name(Path(grid).stem + "-video.png")
        save_grid(m.videos[:8].transpose(1, 2).flatten(0, 1) * 2 - 1, path, columns=frames)
        print(f"wrote {path} (the first 8 videos, one per row)")


def _attention_alignment(model, n: int, sampling: dict) -> None:
    from .explain.alignment import RATIO, attention_alignment

    sampling = {k: v for k, v in sampling.items() if k != "seed"}  # the alignment prompts have their own seed
    a = attention_alignment(model, n, **sampling)
    kinds = ", ".join(f"{kind} words {right / max(scored, 1):.1%}" for kind, (right, scored) in a.by_kind.items())
    print(f"attention: {a.word_rate:.1%} of colour/shape words hold >= {RATIO:g}x more attention on their own object "
          f"than on the other ({kinds}; by attention per pixel {a.density_rate:.1%}); "
          f"all four words right in {a.prompt_rate:.1%} of prompts; "
          f"{a.prompts_scored} two-object prompts scored, {a.prompts_drawn} drawn to find them")  # fmt: skip


def cmd_data(args) -> None:
    from .data.sources import prepare

    for line in prepare(args.names):
        print(line)


def cmd_convert(args) -> None:
    import torch

    from .weights import load, save
    from .weights.video_folder import has_video, load_video, save_video

    model = load(args.src, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    options = {"dtype": torch.float16} if args.half else {}
    if args.max_shard_mb is not None:
        options["max_shard_bytes"] = int(args.max_shard_mb * 2**20)
    video = None
    if args.to == "diffusers" and has_video(args.src):  # a video model: its temporal layers travel too
        model, video = load_video(args.src)
    if args.vae:
        _swap_vae(model, args.vae)
    if args.unet:
        _swap_unet(model, args.unet)
    if video is not None:
        save_video(model, video, args.dst, **options)
    else:
        save(model, args.dst, format=args.to, **options)
    from .weights.clip_folder import has_clip, load_clip, save_clip

    if args.to == "diffusers" and has_clip(args.src):  # the model's own CLIP travels with it
        save_clip(load_clip(args.src), args.dst, dtype=options.get("dtype"))
    print(f"wrote {args.dst} ({args.to})")


def _swap_vae(model, path: str) -> None:
    """Put another VAE's weights (a `train vae` run's EMA, or a diffusers folder's) into the model.

    The model keeps its scaling factor: a swapped VAE is meant to be a new decoder for the same
    encoder (a decoder-only run), whose latent space, and so the UNet, is unchanged."""
    import dataclasses

    from .train.unet import frozen_vae

    vae = frozen_vae(path)
    ours, theirs = (dataclasses.replace(c, scaling_factor=0, sample_size=0) for c in (model.config.vae, vae.config))
    if ours != theirs:
        raise ValueError(f"--vae {path}: its VAE is not this model's shape ({theirs} vs {ours})")
    model.vae.load_state_dict(vae.state_dict())


def _swap_unet(model, path: str) -> None:
    """Put a `train unet` checkpoint's EMA UNet (and its text tower, when the run trained one) into
    the model: how to ship a run's step-N checkpoint rather than its last. The model keeps its VAE
    and scaling factor, so the source should be that run's own model folder, or (for a run stopped
    before it wrote one) the folder it started from, whose frozen VAE it encoded its pool with."""
    import torch

    from .train.unet import split_states
    from .weights.io import load_into

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"--unet {path}: not a readable training checkpoint ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("ema"), dict):
        raise ValueError(f"--unet {path}: not a `latentdiff train unet` checkpoint (no EMA weights)")
    unet_state, text_state = split_states(checkpoint["ema"])
    load_into(model.unet, unet_state, f"--unet {path}")
    if text_state is not None:
        load_into(model.text_encoder, text_state, f"--unet {path} (its text tower)")


def cmd_info(args) -> None:
    """A PNG: the settings it was made with. A checkpoint: its config and parameter counts."""
    path = Path(args.path)
    if path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n":
        from .metadata import read_png_parameters

        print(json.dumps(read_png_parameters(path), indent=2, ensure_ascii=False))
        return
    from .weights import load

    model = load(path, allow_pickle=args.allow_pickle)
    counts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("text_encoder", "vae", "unet")
    }
    print(json.dumps({"config": model.config.to_dict(), "parameters": counts}, indent=2))


def cmd_tokenize(args) -> None:
    from .tokenizer import CLIPTokenizer

    tok = CLIPTokenizer.default() if args.tokenizer is None else CLIPTokenizer.from_folder(args.tokenizer)
    ids = tok.encode(args.prompt)
    print(json.dumps({"tokens": len(ids), "ids": ids, "pieces": [tok.decode([i]) for i in ids]}))
    warning = tok.truncation_warning(tok(args.prompt), [args.prompt])
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _add_generation_args(p: argparse.ArgumentParser, default_out: str, prompt: bool = True) -> None:
    from .samplers import SAMPLERS

    if prompt:
        p.add_argument("--prompt", default="a red circle to the left of a blue square")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=None, help="default: 16 with the built-in model, 20 with --model")
    p.add_argument("--cfg-scale", "--guidance-scale", dest="cfg_scale", type=float, default=None,
                   help="default: 2.5 with the built-in model, 7.5 with --model")  # fmt: skip
    p.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                   help="default: euler with the built-in model, euler_ancestral (A1111's) with --model")  # fmt: skip
    p.add_argument("--karras", action=argparse.BooleanOptionalAction, default=None,
                   help="Karras sigma spacing, more steps at low noise (default: on with the built-in model, "
                        "off with --model)")  # fmt: skip
    _add_cfg_max_sigma_arg(p, None, "15 with the built-in model, inf with --model")
    p.add_argument("--seed", type=int, default=0, help="image i of a batch uses seed + i")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default=default_out, help="PNG path (numbered when --batch > 1)")


def _add_cfg_max_sigma_arg(p: argparse.ArgumentParser, default: float | None, default_text: str) -> None:
    p.add_argument("--cfg-max-sigma", dest="cfg_max_sigma", type=float, default=default, metavar="SIGMA",
                   help="guide only the steps at noise levels <= SIGMA (a guidance interval; the noisier "
                        f"steps cost half); inf guides every step (default: {default_text})")  # fmt: skip


def _add_deep_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deep-cache", dest="deep_cache", type=int, default=1, metavar="N",
                   help="approximate, faster: run the UNet's deep levels on every N-th call only (DeepCache); "
                        "1 = exact")  # fmt: skip


def _add_size_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=int, default=None, help="pixels; default: the model's native size")
    p.add_argument("--width", type=int, default=None)


def _add_loading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="diffusers folder or .safetensors single file (default: built-in)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.bin pickles (loaded with torch.load(weights_only=True))")  # fmt: skip
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default=None,
                   help="override for single files, which do not record it (SD 2.x base is epsilon)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from .samplers import SAMPLERS

    parser = _Parser(prog="latentdiff", description="Stable Diffusion from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="the built-in model draws a grid: 8 prompts x --batch seeds")
    p.add_argument("--model", default=None, help="another diffusers folder (default: the built-in model)")
    _add_generation_args(p, "out/demo.png", prompt=False)
    p.set_defaults(func=cmd_demo, batch=4)

    p = sub.add_parser("generate", help="txt2img with SD weights (diffusers folder or single file)")
    _add_loading_args(p)
    _add_generation_args(p, "out/image.png")
    _add_size_args(p)
    _add_deep_cache_arg(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("img2img", help="text + image -> image")
    _add_loading_args(p)
    p.add_argument("--image", required=True, help="the starting image; its size must fit the VAE (multiple of 8)")
    p.add_argument("--strength", type=float, default=0.75, help="0 keeps the image, 1 ignores it")
    _add_generation_args(p, "out/img2img.png")
    p.set_defaults(func=cmd_img2img)

    p = sub.add_parser("inpaint", help="repaint the white part of a mask")
    _add_loading_args(p)
    p.add_argument("--image", required=True)
    p.add_argument("--mask", required=True, help="same size as the image; white = repaint, black = keep")
    p.add_argument("--strength", type=float, default=1.0, help="below 1 starts from the image's own content")
    _add_generation_args(p, "out/inpaint.png")
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("train", help="train a component from a TOML recipe (resumable)")
    p.add_argument("component", choices=["vae", "clip", "unet", "video"])
    p.add_argument("--recipe", default=None, help="recipes/*.toml (default: the script's built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("video", help="text -> a short video (GIF + MP4) with a `train video` model")
    p.add_argument("--model", required=True, help="a folder written by `latentdiff train video` (its model/)")
    p.add_argument("--prompt", default="a red circle moving left")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", dest="cfg_scale", type=float, default=2.5)
    p.add_argument("--sampler", choices=list(SAMPLERS), default="euler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=6)
    p.add_argument("--scale", type=int, default=2, help="enlarge each frame this many times (nearest)")
    p.add_argument("--no-mp4", action="store_true")
    p.add_argument("--out", default="out/video.gif", help="the GIF; the MP4 goes beside it")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("evaluate", help="measure a model on the shapes world (fidelity, VAE PSNR)")
    p.add_argument("--model", default=None, help="diffusers folder (default: the built-in model)")
    p.add_argument("--prompts", type=int, default=300, help="how many fresh prompts (and held-out scenes)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", dest="cfg_scale", type=float, default=2.5)
    p.add_argument("--sampler", choices=list(SAMPLERS), default="euler")
    p.add_argument("--karras", action=argparse.BooleanOptionalAction, default=True,
                   help="Karras sigma spacing, as the built-in model generates by default")  # fmt: skip
    _add_cfg_max_sigma_arg(p, DEFAULTS["builtin"]["cfg_max_sigma"], "15, as the built-in model generates")
    p.add_argument("--seed", type=int, default=0, help="the noise: image i uses seed + i")
    p.add_argument("--prompt-seed", dest="prompt_seed", type=int, default=None,
                   help="which prompts (default: the bar's); tune settings on another seed")  # fmt: skip
    p.add_argument("--grid", default=None, help="also write the first 64 images to this PNG")
    p.add_argument("--attention", type=int, default=0, metavar="N",
                   help="also score the cross-attention maps on N two-object prompts")  # fmt: skip
    _add_deep_cache_arg(p)
    p.add_argument("--videos", type=int, default=None, metavar="N",
                   help="score text-to-video on N held-out moving-shapes prompts (video models: default 100; "
                        "--prompts 0 skips the image bars)")  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("data", help="install and verify training data (via apt / npm only)")
    data = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    q = data.add_parser("prepare", help="download, verify and cache: emoji, mnist, fashion-mnist or all")
    q.add_argument("names", nargs="+", metavar="NAME")
    q.set_defaults(func=cmd_data)

    p = sub.add_parser("convert", help="convert between the diffusers folder and the single-file layouts")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=["diffusers", "single_file"], required=True)
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default=None)
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--max-shard-mb", type=float, default=None, help="split weight files at this size (MiB)")
    p.add_argument("--vae", default=None, metavar="RUN_OR_FOLDER",
                   help="swap in this VAE: a `latentdiff train vae` run (EMA weights) or a diffusers folder's, "
                        "of the same shape (e.g. a decoder-only run's new decoder)")  # fmt: skip
    p.add_argument("--unet", default=None, metavar="CHECKPOINT",
                   help="swap in the EMA UNet (and trained text tower) of a `train unet` checkpoint, "
                        "runs/NAME/step-N.pt, into that run's model folder (to ship an earlier step)")  # fmt: skip
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="a PNG's generation settings, or a checkpoint's config and size")
    p.add_argument("path")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenize", help="show a prompt's CLIP tokens and whether it exceeds 77")
    p.add_argument("prompt")
    p.add_argument("--tokenizer", default=None, help="a tokenizer/ folder (default: SD 1.x's CLIP vocabulary)")
    p.set_defaults(func=cmd_tokenize)

    from .cli_clip import add_parsers as add_clip_parsers

    add_clip_parsers(sub)  # classify, score
    from .lab.cli import add_lab_parser

    add_lab_parser(sub)  # the autoencoder lessons; the lessons themselves import only when run
    from .serve.cli import add_serve_parser

    add_serve_parser(sub)  # HTTP API + web page; FastAPI is imported only when it runs
    from .explain.cli import add_explain_parser

    add_explain_parser(sub)  # denoising trajectory, attention maps, guidance, forward diffusion
    return parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other user error
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)  # on its own line, even mid progress bar


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed on one line
        return e.code
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every long prompt, not just the first
        warnings.showwarning = _one_line_warning
        try:
            args.func(args)
        except _user_errors() as e:
            print(f"latentdiff: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
