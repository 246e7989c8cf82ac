"""`latentdiff explain`: the arguments, and the handler that loads the model and writes the report.

latentdiff explain --prompt "a red circle above a blue square"          # built-in model -> out/explain/
latentdiff explain --prompt "a cat" --model sd15/ --swap cat=dog --scales 1,4,8 --steps 25
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _numbers(kind):
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one number")
        return values

    return parse


def add_explain_parser(subparsers) -> None:
    from ..cli import _add_generation_args, _add_loading_args

    p = subparsers.add_parser("explain", help="one HTML report: denoising steps, per-word attention, guidance, noising")
    _add_loading_args(p)
    _add_generation_args(p, "out/explain")
    p.add_argument("--scales", type=_numbers(float), default=(1.0, 3.0, 7.5, 15.0),
                   help="guidance scales to compare on the same seed (default 1,3,7.5,15)")  # fmt: skip
    p.add_argument("--swap", default=None, metavar="OLD=NEW",
                   help="the one-word change for the prompt pair (default: a shapes colour -> the next)")  # fmt: skip
    p.add_argument(
        "--image", default=None, help="the image to noise for forward diffusion (default: the generated one)"
    )
    p.add_argument("--timesteps", type=_numbers(int), default=(0, 100, 250, 500, 750, 999),
                   help="training timesteps to noise it to")  # fmt: skip
    p.add_argument("--no-mp4", action="store_true", help="skip the MP4 (the GIF is always written)")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> None:
    from ..cli import _load_image, _model_path, _sampling
    from ..weights import load
    from .report import ExplainSettings, explain

    out = Path(args.out)
    if out.exists() and not out.is_dir():  # found now, not after minutes of sampling
        raise ValueError(f"--out {out}: exists and is not a folder")
    if args.batch != 1:
        raise ValueError("explain follows one image; leave --batch at 1")
    if args.karras:
        raise ValueError("explain draws the default sigma spacing; leave out --karras")
    if args.cfg_max_sigma is not None:
        raise ValueError("explain guides every step (its panels compare whole runs); leave out --cfg-max-sigma")
    args.karras = False  # even for the built-in model, whose generate default is Karras
    _sampling(args)  # fills in the model's defaults on args (steps, CFG, sampler; the interval goes unused)
    image = _load_image(args.image)[0] if args.image else None
    model = load(_model_path(args), allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    f = model.config.vae.downsample_factor
    if image is not None and (image.shape[1] % f or image.shape[2] % f):
        raise ValueError(f"{args.image}: {image.shape[2]}x{image.shape[1]} pixels; both sides must be multiples of {f}")
    settings = ExplainSettings(
        prompt=args.prompt, seed=args.seed, steps=args.steps, sampler=args.sampler, guidance_scale=args.cfg_scale,
        negative_prompt=args.negative_prompt, scales=args.scales, swap=args.swap, timesteps=args.timesteps,
        image=image, mp4=not args.no_mp4,
    )  # fmt: skip
    start = time.perf_counter()
    report = explain(model, settings, out, say=lambda line: print(f"  {line}", flush=True))
    print(f"wrote {report.folder / 'report.html'} and {len(report.files) - 1} more files in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
