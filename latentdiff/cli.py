"""`latentdiff` command line: thin over pipeline.py and weights/.

User errors (bad paths, corrupt or mismatched weights, bad sizes) print one line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import ConfigError


def _user_errors() -> tuple[type[BaseException], ...]:
    from .tokenizer import TokenizerError
    from .weights import WeightsError

    return (WeightsError, ConfigError, TokenizerError, ValueError, FileNotFoundError, PermissionError)


def _generate(model, args) -> list[Path]:
    from tqdm import tqdm

    from .images import save_png
    from .pipeline import Step, to_pil, txt2img

    warning = model.tokenizer.truncation_warning(model.tokenizer(args.prompt), [args.prompt])
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    start = time.perf_counter()
    steps = txt2img(
        model,
        [args.prompt] * args.batch,
        args.negative_prompt,
        args.steps,
        args.guidance_scale,
        args.height,
        args.width,
        args.seed,
    )
    with tqdm(total=args.steps, desc="denoising", unit="step") as bar:
        for state in steps:
            if isinstance(state, Step):
                bar.update(1)
            else:
                images = state
    paths = []
    out = Path(args.out)
    for i, image in enumerate(to_pil(images)):
        path = out if args.batch == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
        save_png(image, path, {"prompt": args.prompt, "seed": str(args.seed), "steps": str(args.steps)})
        paths.append(path)
    print(f"wrote {', '.join(map(str, paths))} in {time.perf_counter() - start:.1f} s")
    return paths


def cmd_demo(args) -> None:
    from .model import StableDiffusion

    print(
        "latentdiff demo: the built-in trained model does not exist yet, so this runs the whole pipeline\n"
        "(tokenizer -> CLIP text encoder -> UNet with DDIM + guidance -> VAE decoder) with RANDOM weights\n"
        "in the 'tiny' architecture. It proves the pipeline runs end to end; the image is structured noise."
    )
    model = StableDiffusion.from_preset("tiny", seed=args.seed)
    _generate(model, args)


def cmd_generate(args) -> None:
    from .weights import load

    model = load(args.model, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    _generate(model, args)


def cmd_convert(args) -> None:
    from .weights import load, save

    model = load(args.src, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    save(model, args.dst, format=args.to)
    print(f"wrote {args.dst} ({args.to})")


def cmd_info(args) -> None:
    from .weights import load

    model = load(args.model, allow_pickle=args.allow_pickle)
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
    p.add_argument("--prompt", default="a red circle to the left of a blue square")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--height", type=int, default=None, help="pixels; default: the model's native size")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default=default_out, help="PNG path (numbered when --batch > 1)")


def _add_loading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow .ckpt/.bin pickles (loaded with torch.load(weights_only=True))",
    )
    p.add_argument(
        "--prediction-type",
        choices=["epsilon", "v_prediction"],
        default=None,
        help="override for single files, which do not record it (SD 2.x base is epsilon)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentdiff", description="Stable Diffusion from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline once (random tiny weights until a model ships)")
    _add_generation_args(p, "out/demo.png")
    p.set_defaults(func=cmd_demo, steps=10, height=64, width=64)

    p = sub.add_parser("generate", help="txt2img with SD weights (diffusers folder or single file)")
    p.add_argument("--model", required=True, help="diffusers folder or .safetensors single file")
    _add_generation_args(p, "out/image.png")
    _add_loading_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("convert", help="convert between the diffusers folder and the single-file layouts")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=["diffusers", "single_file"], required=True)
    _add_loading_args(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    p.add_argument("model")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenize", help="show a prompt's CLIP tokens and whether it exceeds 77")
    p.add_argument("prompt")
    p.add_argument("--tokenizer", default=None, help="a tokenizer/ folder (default: SD 1.x's CLIP vocabulary)")
    p.set_defaults(func=cmd_tokenize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except _user_errors() as e:
        print(f"latentdiff: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
