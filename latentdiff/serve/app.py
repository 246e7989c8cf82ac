"""The ASGI app: the A1111 API under /sdapi/v1, the explainer at /latentdiff/v1/explain, the web page at /,
OpenAPI docs at /docs.

The docs page uses the Swagger UI that `fastapi-offline` ships, so it works with no network.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from .. import __version__
from .api import make_router
from .catalogue import ModelEntry
from .explain_route import make_explain_router
from .settings import ServeOptions
from .worker import Worker

STATIC = Path(__file__).parent / "static"


def create_app(options: ServeOptions) -> FastAPI:
    """Loads the model (errors in the weights surface here, before any port is opened)."""
    worker = Worker(ModelEntry(options.model.name, options.model), options.previews)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()

    app = FastAPIOffline(
        title="latentdiff",
        version=__version__,
        description="Stable Diffusion from scratch: AUTOMATIC1111's /sdapi/v1 API (the part clients use).",
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.add_middleware(BodySizeLimit, max_bytes=int(options.limits.max_body_mb * 2**20))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(make_router(worker, options))
    app.include_router(make_explain_router(worker, options))
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")  # last: the routes above come first
    return app


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of error objects -> one line that names each wrong field."""
    messages = []
    for error in exc.errors():
        if error["type"] == "json_invalid":
            messages.append(f"body: not valid JSON ({error['ctx']['error']} at character {error['loc'][1]})")
            continue
        field = ".".join(str(part) for part in error["loc"][1:])
        if field:
            messages.append(f"{field}: {error['msg']}")
        elif error["type"] == "value_error":  # our own checks, which name their field
            messages.append(error["msg"].removeprefix("Value error, "))
        else:  # the body as a whole: missing, not an object, or not sent as JSON
            messages.append("body: expected a JSON object, sent with Content-Type: application/json")
    return JSONResponse({"detail": "; ".join(messages)}, status_code=422)


class BodySizeLimit:
    """Refuse request bodies over max_bytes with 413, before anything parses them.

    Checks Content-Length, and counts the bytes of bodies sent without one (chunked).
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: lets the app notice a client hanging up
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        limit = f"{self.max_bytes / 2**20:g} MiB"
        response = JSONResponse({"detail": f"request body is over {limit} (latentdiff serve --max-body-mb)"}, 413)
        await response(scope, receive, send)


def serve(options: ServeOptions, host: str, port: int) -> None:
    import uvicorn

    app = create_app(options)
    print(f"latentdiff: serving {options.model.name} on http://{host}:{port}/ (API: /sdapi/v1, docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
