"""`latentdiff lab LESSON`: the arguments, and the handler that loads the data and runs the lesson."""

from __future__ import annotations

import argparse
from pathlib import Path

LESSONS = ("ae-vs-pca", "conv-vs-dense", "denoising-ae")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_lab_parser(subparsers) -> None:
    """The `lab` subcommand on the `latentdiff` parser."""
    from .data import DATASETS, TEST_SIZE, TRAIN_SIZE

    p = subparsers.add_parser("lab", help="the lectures' autoencoder lessons: train in minutes, write figure + JSON")
    p.add_argument("lesson", choices=LESSONS)
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--out", default="out/lab", help="folder for <lesson>-<dataset>.png and .json")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="passes over the training images (default: the lesson's own, minutes on 1 thread)")  # fmt: skip
    p.add_argument("--train-size", type=_positive_int, default=TRAIN_SIZE, help="at most this many training images")
    p.add_argument("--test-size", type=_positive_int, default=TEST_SIZE, help="at most this many held-out images")
    p.add_argument("--seed", type=int, default=0, help="picks the images, the initial weights and the noise")
    # One thread by default: the lessons are small, and the README's wall times were measured so.
    p.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for torch (default 1)")
    p.set_defaults(func=run_lab)


def run_lab(args: argparse.Namespace) -> None:
    import torch

    from .ae_vs_pca import ae_vs_pca
    from .conv_vs_dense import conv_vs_dense
    from .data import load_lab_data
    from .denoising import denoising_ae

    out = Path(args.out)
    if out.exists() and not out.is_dir():  # found now, not after minutes of training
        raise ValueError(f"--out {out}: exists and is not a folder")
    torch.set_num_threads(args.threads)
    lesson = {"ae-vs-pca": ae_vs_pca, "conv-vs-dense": conv_vs_dense, "denoising-ae": denoising_ae}[args.lesson]
    data = load_lab_data(args.dataset, args.train_size, args.test_size, args.seed)
    options = {} if args.epochs is None else {"epochs": args.epochs}
    metrics = lesson(data, out, seed=args.seed, **options)
    stem = out / f"{args.lesson}-{data.name}"
    print(f"wrote {stem}.png and {stem}.json in {metrics['wall_seconds']} s")
