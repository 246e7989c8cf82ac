"""A real latentdiff server for the server and browser tests: uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn

from latentdiff import weights
from latentdiff.model import StableDiffusion
from latentdiff.serve.app import create_app
from latentdiff.serve.settings import ServeOptions


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A random tiny model as a diffusers folder (64x64 images, 2x latent factor), so load() is exercised too."""
    weights.save(StableDiffusion.from_preset("tiny", seed=seed), folder)
    return folder


@contextmanager
def running_server(options: ServeOptions) -> Iterator[str]:
    """Yields the base URL, e.g. http://127.0.0.1:40123; stops the server afterwards."""
    torch.set_num_threads(1)  # the machine's other core belongs to whatever else runs
    server = uvicorn.Server(uvicorn.Config(create_app(options), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
