"""The `/sdapi/v1` routes: the part of AUTOMATIC1111's API that its clients use, over one Worker.

txt2img and img2img (with `mask`: inpainting) queue a task and await it; everything else answers at
once, from the worker's state or the model catalogue.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from ..config import ConfigError
from ..metadata import A1111_SAMPLERS, parse_parameters
from ..tokenizer import TokenizerError
from ..weights import WeightsError
from .auth import api_key_dependency
from .catalogue import find_model, list_models
from .codec import RequestError, decode_image
from .generate import from_request, native_size, run
from .schemas import (
    GenerationRequest,
    GenerationResponse,
    Img2ImgRequest,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    ScriptsList,
    SDModelItem,
    Txt2ImgRequest,
)
from .settings import ServeOptions
from .worker import Interrupted, Task, Worker

# Errors in what a client asked for (a model that fails to load counts: the client picked it).
_CLIENT_ERRORS = (ValueError, WeightsError, ConfigError, TokenizerError)


def make_router(worker: Worker, options: ServeOptions) -> APIRouter:
    guard = [Depends(api_key_dependency(options.api_key))] if options.api_key else []
    router = APIRouter(prefix="/sdapi/v1", dependencies=guard)

    async def generate(body: GenerationRequest, request: Request) -> GenerationResponse:
        try:  # image decoding and resizing off the event loop
            generation = await run_in_threadpool(from_request, body, options.limits)
            title = body.override_settings.get("sd_model_checkpoint")
            model = None if title is None else find_model(title, options.model, options.models_dir)
        except RequestError as e:
            raise HTTPException(422, str(e)) from None
        task = worker.submit(
            generation.mode,
            lambda loaded, on_step: run(loaded.model, loaded.entry, generation, options.limits, on_step),
            task_id=body.force_task_id,
            iterations=generation.n_iter,
            model=model,
            keep=(generation.image, generation.mask) if generation.mode == "inpaint" else None,
        )
        result = await _outcome(task, worker, request)
        echo = body.model_dump()
        if isinstance(body, Img2ImgRequest) and not body.include_init_images:
            echo |= {"init_images": None, "mask": None}  # A1111 leaves them out too: megabytes of base64
        images = result["images"] if body.send_images else []
        return GenerationResponse(images=images, parameters=echo, info=json.dumps(result["info"], ensure_ascii=False))

    @router.post("/txt2img", response_model=GenerationResponse)
    async def txt2img(body: Txt2ImgRequest, request: Request):
        """Text to images. Each PNG carries its settings as A1111 `parameters`, as the CLI writes them."""
        return await generate(body, request)

    @router.post("/img2img", response_model=GenerationResponse)
    async def img2img(body: Img2ImgRequest, request: Request):
        """Image (+ text) to images; with `mask`, inpainting: white repaints, black keeps."""
        return await generate(body, request)

    @router.get("/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = Query(False)):
        """The running request: fraction done, ETA, and a preview of its current estimate."""
        return await run_in_threadpool(worker.progress, not skip_current_image)

    @router.post("/interrupt")
    async def interrupt() -> dict[str, bool]:
        """Stop the running request after its current step; it answers 409. Waiting requests still run."""
        return {"interrupted": worker.interrupt()}

    @router.get("/samplers", response_model=list[SamplerItem])
    async def samplers():
        return [{"name": a1111, "aliases": [ours], "options": {}} for ours, a1111 in A1111_SAMPLERS.items()]

    @router.get("/schedulers", response_model=list[SchedulerItem])
    async def schedulers():
        return [{"name": "automatic", "label": "Automatic"}, {"name": "karras", "label": "Karras"}]

    @router.get("/sd-models", response_model=list[SDModelItem])
    async def sd_models():
        """The built-in model, the one the server started with, and those in --models-dir."""
        entries = list_models(options.model, options.models_dir)
        return [{"title": e.title, "model_name": e.path.stem, "filename": str(e.path)} for e in entries]

    @router.get("/scripts", response_model=ScriptsList)
    async def scripts():
        return {"txt2img": [], "img2img": []}

    @router.get("/options")
    async def get_options() -> dict[str, Any]:
        """sd_model_checkpoint (settable), and the loaded model's defaults and this server's limits (read-only)."""
        loaded = worker.loaded
        native = native_size(loaded.model)
        defaults = loaded.entry.defaults
        return {
            "sd_model_checkpoint": loaded.entry.title,
            "sd_checkpoint_hash": None,
            "latentdiff_defaults": {
                "steps": defaults["steps"],
                "cfg_scale": defaults["cfg_scale"],
                "width": native,
                "height": native,
                "sampler_name": A1111_SAMPLERS[defaults["sampler"]],
                "scheduler": "Karras" if defaults["karras"] else "Automatic",
                "cfg_max_sigma": defaults["cfg_max_sigma"],  # guidance only up to this noise level; None: always
            },
            "latentdiff_limits": asdict(options.limits),
            "latentdiff_previews": worker.previews,
        }

    @router.post("/options")
    async def set_options(body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Only sd_model_checkpoint can be set: the model loads after the requests already queued."""
        unknown = set(body) - {"sd_model_checkpoint"}
        if unknown:
            raise HTTPException(422, f"{', '.join(sorted(unknown))}: not settable; only sd_model_checkpoint is")
        if "sd_model_checkpoint" in body:
            try:
                entry = find_model(str(body["sd_model_checkpoint"]), options.model, options.models_dir)
            except RequestError as e:
                raise HTTPException(422, str(e)) from None
            await _outcome(worker.switch_model(entry), worker, request)
        return await get_options()

    @router.post("/png-info", response_model=PNGInfoResponse)
    async def png_info(body: PNGInfoRequest):
        """The settings a PNG was made with (what the web page reads from a dropped image)."""
        try:
            image = await run_in_threadpool(decode_image, body.image, "image")
        except RequestError as e:
            raise HTTPException(422, str(e)) from None
        chunks = {k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}
        text = chunks.pop("parameters", "")
        return {"info": text, "items": chunks, "parameters": _a1111_parameters(text) if text else {}}

    return router


async def _outcome(task: Task, worker: Worker, request: Request):
    """The task's result, or its error as an HTTP answer; a client that hangs up cancels its task."""
    waiting = asyncio.wrap_future(task.future)
    while not waiting.done():
        await asyncio.wait([waiting], timeout=0.5)
        if not waiting.done() and await request.is_disconnected():
            worker.cancel(task)
            raise HTTPException(499, "client closed the connection")  # nobody is there to read it
    try:
        return waiting.result()
    except Interrupted as e:
        raise HTTPException(409, str(e)) from None
    except _CLIENT_ERRORS as e:
        raise HTTPException(422, str(e)) from None
    except FloatingPointError as e:
        raise HTTPException(500, str(e)) from None


def _a1111_parameters(text: str) -> dict[str, str]:
    """Our parse of a `parameters` text, keyed as A1111's png-info answers (Prompt, Size-1, ...)."""
    parsed = parse_parameters(text)
    result = {"Prompt": parsed.pop("prompt"), "Negative prompt": parsed.pop("negative_prompt")} | parsed
    width, _, height = parsed.get("Size", "").partition("x")
    if height:
        result |= {"Size-1": width, "Size-2": height}
    return result
