"""The `latentdiff serve` subcommand; its web stack (FastAPI, uvicorn) is imported only when it runs."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from .settings import Limits, ServeOptions


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API (AUTOMATIC1111's /sdapi/v1) and a web page at /")
    p.add_argument("--model", default=None, help="diffusers folder or .safetensors file (default: the built-in model)")
    p.add_argument("--models-dir", type=Path, default=None, help="more models to switch to (web page, /options)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="A1111's port, so its clients find it as they are")
    p.add_argument("--api-key", default=os.environ.get("LATENTDIFF_API_KEY"),
                   help="require this key on /sdapi/v1 (default: $LATENTDIFF_API_KEY; unset: no key)")  # fmt: skip
    limits = Limits()
    p.add_argument("--max-width", type=int, default=limits.max_width, help="pixels")
    p.add_argument("--max-height", type=int, default=limits.max_height, help="pixels")
    p.add_argument("--max-steps", type=int, default=limits.max_steps)
    p.add_argument("--max-images", type=int, default=limits.max_images, help="batch_size * n_iter of one request")
    p.add_argument("--max-body-mb", type=float, default=limits.max_body_mb, help="request size in MiB")
    p.add_argument("--no-previews", dest="previews", action="store_false",
                   help="no live previews (each is a VAE decode: seconds for SD 512x512 on a CPU)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    import torch

    from ..cli import _model_path

    try:
        from .app import serve
    except ImportError as e:
        raise ValueError(f"the server needs {e.name}, not installed: pip install 'latentdiff[serve]'") from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.api_key is None and not _is_loopback(args.host):
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it")
    limits = Limits(args.max_width, args.max_height, args.max_steps, args.max_images, args.max_body_mb)
    options = ServeOptions(_model_path(args), args.models_dir, args.api_key, limits, args.previews)
    serve(options, args.host, args.port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return host == "localhost"
