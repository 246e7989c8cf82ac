"""`POST /latentdiff/v1/explain`: `latentdiff explain` over HTTP, answered with its self-contained report.html.

The run goes through the Worker queue like any generation, so it never shares the model with one:
it denoises once with attention recorded, then once per guidance scale, once more for the one-word
prompt pair, and noises the result (explain/report.py). The page's Explain button opens the answer
in a new tab. /interrupt (or a client hanging up) stops it between two of those stages.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..explain.guidance import swap_word
from ..explain.report import ExplainSettings, explain
from .api import _outcome
from .auth import api_key_dependency
from .codec import RequestError
from .generate import _check_limits, _parse_sampler, native_size
from .settings import Limits, ServeOptions
from .worker import Interrupted, LoadedModel, Task, Worker


class ExplainRequest(BaseModel):
    """What to explain: one prompt and seed, as txt2img takes them, plus the explainer's own settings."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(description="what to generate and explain; must not be empty")
    negative_prompt: str = ""
    seed: int = Field(0, ge=-1, lt=2**63, description="-1: a random seed")
    steps: int = Field(20, ge=1)
    cfg_scale: float | None = Field(None, description="default: 2.5 for the built-in model, 7.5 otherwise")
    sampler_name: str | None = Field(None, description="A1111's name ('Euler a', 'DPM++ 2M', ...) or ours")
    scheduler: str | None = Field(None, description="'Automatic' only: the explainer draws the default spacing")
    scales: list[float] = Field([1.0, 3.0, 7.5, 15.0], min_length=1, description="guidance scales to compare")
    swap: str | None = Field(None, description="'OLD=NEW': the one-word change for the prompt pair; "
                             "default: a shapes colour -> the next, when the prompt names one")  # fmt: skip

    @model_validator(mode="after")
    def _check(self):
        if not self.prompt.strip():
            raise ValueError("prompt: must not be empty")
        if self.swap is not None:
            try:
                swap_word(self.prompt, self.swap)
            except ValueError as e:  # its messages name the CLI's --swap
                raise ValueError(str(e).replace("--swap", "swap", 1)) from None
        return self


def check(body: ExplainRequest, limits: Limits) -> tuple[ExplainSettings, str | None]:
    """The request, checked -> settings and our sampler name (None: the model's default); raises RequestError.

    The sampler and guidance scale in the settings are placeholders: run_explain sets them from the loaded model.
    """
    _check_limits(None, None, body.steps, 1, limits)
    if len(body.scales) > limits.max_images:
        raise RequestError(f"scales: {len(body.scales)} scales is over this server's limit of {limits.max_images} "
                           "images (latentdiff serve --max-images)")  # fmt: skip
    sampler, karras = _parse_sampler(body.sampler_name, body.scheduler)
    if karras:
        field = "sampler_name" if (body.sampler_name or "").endswith(" Karras") else "scheduler"
        raise RequestError(f"{field}: explain draws the default sigma spacing; leave out Karras")
    settings = ExplainSettings(
        prompt=body.prompt,
        seed=random.randrange(2**32 - 1) if body.seed == -1 else body.seed,  # as txt2img draws it
        steps=body.steps,
        negative_prompt=body.negative_prompt,
        scales=tuple(body.scales),
        swap=body.swap,
        mp4=False,  # the page is the answer; it embeds the GIF, and an MP4 would only be a dead link
    )
    return settings, sampler


def run_explain(loaded: LoadedModel, settings: ExplainSettings, sampler: str | None, cfg_scale: float | None,
                limits: Limits, stopped: Callable[[], bool]) -> str:  # fmt: skip
    """On the worker thread: fill in the model's defaults, explain into a temporary folder, return report.html."""
    defaults = loaded.entry.defaults
    settings.sampler = sampler or defaults["sampler"]
    settings.guidance_scale = cfg_scale if cfg_scale is not None else defaults["cfg_scale"]
    native = native_size(loaded.model)
    _check_limits(native, native, settings.steps, 1, limits)

    def say(line: str) -> None:  # called between the stages: where a stop request takes effect
        if stopped():
            raise Interrupted(f"interrupted before: {line}")

    with tempfile.TemporaryDirectory(prefix="latentdiff-explain-") as folder:
        report = explain(loaded.model, settings, Path(folder), say=say)
        return (report.folder / "report.html").read_text(encoding="utf-8")


def make_explain_router(worker: Worker, options: ServeOptions) -> APIRouter:
    guard = [Depends(api_key_dependency(options.api_key))] if options.api_key else []
    router = APIRouter(prefix="/latentdiff/v1", dependencies=guard)

    @router.post("/explain", response_class=HTMLResponse)
    async def explain_route(body: ExplainRequest, request: Request) -> HTMLResponse:
        """The explainer's report for one prompt and seed: one HTML page with every image inline.

        The denoising steps, per-word cross-attention, the same seed at each of `scales`, two prompts
        one word apart (`swap`), and forward diffusion. It runs 1 + len(scales) (+ 1 with a swap)
        generations of `steps` steps, queued behind the requests already waiting.
        """
        try:
            settings, sampler = check(body, options.limits)
        except RequestError as e:
            raise HTTPException(422, str(e)) from None
        task: Task | None = None  # its stop flag is what /interrupt and a hang-up set

        def work(loaded: LoadedModel, on_step) -> str:
            stopped = lambda: task is not None and task.stop.is_set()  # noqa: E731
            return run_explain(loaded, settings, sampler, body.cfg_scale, options.limits, stopped)

        task = worker.submit("explain", work)
        return HTMLResponse(await _outcome(task, worker, request))

    return router
