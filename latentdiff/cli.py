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

    return (WeightsError, ConfigError, TokenizerError, ValueError, FloatingPointError, FileNotFoundError)


def _load_image(path: str, mode: str = "RGB"):
    """(1, C, H, W) in [0, 1]; mode "L" reads a mask as one grey channel."""
    from PIL import Image, UnidentifiedImageError

    from .pipeline import from_pil

    try:
        with Image.open(path) as image:
            return from_pil(image, mode)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read as an image ({e.__class__.__name__})") from None


def _write_images(model, states, args, model_name: str, extra: dict) -> list[Path]:
    """Run the pipeline under a progress bar, then write one PNG per image with its settings."""
    from tqdm import tqdm

    from .images import save_png
    from .metadata import A1111_SAMPLERS, format_parameters
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
        settings = {"Steps": args.steps, "Sampler": A1111_SAMPLERS[args.sampler]}
        if args.karras:
            settings["Schedule type"] = "Karras"
        settings |= {"CFG scale": args.cfg_scale, "Seed": args.seed + i, "Size": f"{image.width}x{image.height}",
                     "Model": model_name, **extra, "Version": "latentdiff"}  # fmt: skip
        path = out if len(images) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
        save_png(image, path, {"parameters": format_parameters(args.prompt, args.negative_prompt, settings)})
        paths.append(path)
    print(f"wrote {', '.join(map(str, paths))} in {time.perf_counter() - start:.1f} s")
    return paths


def _sampling(args) -> dict:
    return dict(negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.cfg_scale,
                seed=args.seed, sampler=args.sampler, sigmas="karras" if args.karras else "default")  # fmt: skip


def cmd_demo(args) -> None:
    from .model import StableDiffusion
    from .pipeline import txt2img

    print(
        "latentdiff demo: the built-in trained model does not exist yet, so this runs the whole pipeline\n"
        "(tokenizer -> CLIP text encoder -> UNet with a sampler + guidance -> VAE decoder) with RANDOM\n"
        "weights in the 'tiny' architecture. It proves the pipeline runs end to end; the image is noise."
    )
    model = StableDiffusion.from_preset("tiny", seed=args.seed)
    states = txt2img(model, args.prompt, height=args.height, width=args.width, batch=args.batch, **_sampling(args))
    _write_images(model, states, args, "tiny-random", {})


def cmd_generate(args) -> None:
    from .pipeline import txt2img
    from .weights import load

    model = load(args.model, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    states = txt2img(model, args.prompt, height=args.height, width=args.width, batch=args.batch, **_sampling(args))
    _write_images(model, states, args, Path(args.model).stem, {})


def cmd_img2img(args) -> None:
    from .pipeline import img2img
    from .weights import load

    image = _load_image(args.image)
    model = load(args.model, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    states = img2img(model, [args.prompt] * args.batch, image, strength=args.strength, **_sampling(args))
    _write_images(model, states, args, Path(args.model).stem, {"Denoising strength": args.strength})


def cmd_inpaint(args) -> None:
    from .pipeline import inpaint
    from .weights import load

    image, mask = _load_image(args.image), _load_image(args.mask, mode="L")
    if mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"{args.mask}: mask is {mask.shape[3]}x{mask.shape[2]}, the image {image.shape[3]}x{image.shape[2]}"
        )
    model = load(args.model, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    states = inpaint(model, [args.prompt] * args.batch, image, mask, strength=args.strength, **_sampling(args))
    _write_images(model, states, args, Path(args.model).stem, {"Denoising strength": args.strength, "Mask": "yes"})


def cmd_train(args) -> None:
    from .train import clip, vae
    from .train.common import RecipeError, load_recipe

    trainers = {"vae": (vae, vae.VAERecipe, "held-out PSNR {:.2f} dB"), "clip": (clip, clip.CLIPRecipe,
                "held-out caption retrieval {:.1%}")}  # fmt: skip
    if args.component not in trainers:
        raise ValueError(f"training {args.component!r} is not built yet; choose one of {', '.join(trainers)}")
    module, recipe_cls, report = trainers[args.component]
    try:
        recipe = load_recipe(recipe_cls, args.recipe, args.set)
    except RecipeError as e:
        raise ValueError(str(e)) from None
    result = module.train(recipe, resume=args.resume)
    # Both: early in a run the EMA is still mostly the initial weights (0.999 ** 150 = 0.86).
    for name in ("model", "ema_model"):
        score = report.format(module.evaluate(result[name], recipe.data))
        print(f"step {result['step']}: {score} ({'EMA' if name == 'ema_model' else 'raw'})")


def cmd_convert(args) -> None:
    from .weights import load, save

    model = load(args.src, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    save(model, args.dst, format=args.to)
    print(f"wrote {args.dst} ({args.to})")


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


def _add_generation_args(p: argparse.ArgumentParser, default_out: str) -> None:
    from .samplers import SAMPLERS

    p.add_argument("--prompt", default="a red circle to the left of a blue square")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", "--guidance-scale", dest="cfg_scale", type=float, default=7.5)
    p.add_argument("--sampler", choices=list(SAMPLERS), default="euler_ancestral")
    p.add_argument("--karras", action="store_true", help="Karras sigma spacing (more steps at low noise)")
    p.add_argument("--seed", type=int, default=0, help="image i of a batch uses seed + i")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default=default_out, help="PNG path (numbered when --batch > 1)")


def _add_size_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=int, default=None, help="pixels; default: the model's native size")
    p.add_argument("--width", type=int, default=None)


def _add_loading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers folder or .safetensors single file")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.bin pickles (loaded with torch.load(weights_only=True))")  # fmt: skip
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default=None,
                   help="override for single files, which do not record it (SD 2.x base is epsilon)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="latentdiff", description="Stable Diffusion from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="run the whole pipeline once (random tiny weights until a model ships)")
    _add_generation_args(p, "out/demo.png")
    _add_size_args(p)
    p.set_defaults(func=cmd_demo, steps=10, height=64, width=64)

    p = sub.add_parser("generate", help="txt2img with SD weights (diffusers folder or single file)")
    _add_loading_args(p)
    _add_generation_args(p, "out/image.png")
    _add_size_args(p)
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
    p.add_argument("component", choices=["vae", "clip", "unet"])
    p.add_argument("--recipe", default=None, help="recipes/*.toml (default: the script's built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("convert", help="convert between the diffusers folder and the single-file layouts")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=["diffusers", "single_file"], required=True)
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default=None)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="a PNG's generation settings, or a checkpoint's config and size")
    p.add_argument("path")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenize", help="show a prompt's CLIP tokens and whether it exceeds 77")
    p.add_argument("prompt")
    p.add_argument("--tokenizer", default=None, help="a tokenizer/ folder (default: SD 1.x's CLIP vocabulary)")
    p.set_defaults(func=cmd_tokenize)
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
