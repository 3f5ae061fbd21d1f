"""The Starlette app of `coda-lsp serve`: llama.cpp `/infill`, OpenAI `/v1/completions`, `/v1/models`, `/health`.

Why Starlette + uvicorn: small, well-kept ASGI pieces (Starlette is FastAPI's core), with streaming
responses that notice a client going away (the generator is cancelled), and uvicorn handles HTTP/1.1
keep-alive and limits; both are pure-Python wheels that install offline. Handlers stay thin: parse the
body (`schemas`), hand the request to the model thread (`worker`), write the answer (`responses`).

Security: `Guard` checks the Bearer key (constant-time) on every path but `/health`, and refuses
bodies larger than `max_body_bytes` before reading them. Nothing a client sends names a server file.
Prompts never reach the log at INFO.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from coda_lsp.http.config import ServeConfig
from coda_lsp.http.responses import LlamaDialect, OpenAIDialect, denoise_events, dumps, error_body, sse
from coda_lsp.http.schemas import BadRequest, HoleSpec, parse_completion, parse_infill
from coda_lsp.http.worker import BatchWorker, Failure, Pending, Progress

log = logging.getLogger(__name__)
PUBLIC_PATHS = ("/health", "/v1/health")


class CompactJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def error(status: int, message: str) -> Response:
    return CompactJSON(error_body(status, message), status_code=status)


class Guard:
    """ASGI middleware: API key (constant time) and the body-size limit, before any handler runs."""

    def __init__(self, app: Any, cfg: ServeConfig) -> None:
        self.app, self.cfg = app, cfg
        self.key = cfg.api_key.encode() if cfg.api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
            problem = self._check(scope["path"], headers)
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, path: str, headers: dict[str, bytes]) -> Any:
        if self.key is not None and path not in PUBLIC_PATHS:
            given = headers.get("authorization", b"")
            token = given[7:].strip() if given[:7].lower() == b"bearer " else headers.get("x-api-key", b"")
            if not hmac.compare_digest(token, self.key):
                return error(401, "invalid or missing API key: send 'Authorization: Bearer KEY'")
        length = headers.get("content-length", b"0")
        if not length.isdigit():
            return error(400, "bad Content-Length header")
        if int(length) > self.cfg.max_body_bytes:
            return error(413, f"request body of {int(length)} bytes is over the limit of {self.cfg.max_body_bytes}")
        return None


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON; 413 past `limit` bytes even without a Content-Length (chunked uploads)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


async def next_event(pending: Pending, deadline: float) -> Any:
    """The worker's next event for this request, or a 503 Failure once the request's time is up."""
    try:
        return await asyncio.wait_for(pending.events.get(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        pending.cancelled.set()
        return Failure(503, "request timed out: the model did not answer in time; retry later")


class Endpoints:
    def __init__(self, cfg: ServeConfig, worker: BatchWorker) -> None:
        self.cfg, self.worker = cfg, worker

    async def health(self, request: Request) -> Response:
        w = self.worker
        if w.state == "ready":
            return CompactJSON({"status": "ok"})
        if w.state == "loading":
            return CompactJSON({"status": "loading", **error_body(503, "Loading model")}, status_code=503)
        return CompactJSON({"status": "error", **error_body(500, w.message)}, status_code=500)

    async def models(self, request: Request) -> Response:
        return CompactJSON({"object": "list", "data": [{"id": self.worker.model_name, "object": "model",
                                                        "created": 0, "owned_by": "coda-lsp"}]})

    async def infill(self, request: Request) -> Response:
        spec = parse_infill(await read_json(request, self.cfg.max_body_bytes), self.cfg)
        return await self.answer(spec, LlamaDialect(self.worker.model_name))

    async def completions(self, request: Request) -> Response:
        spec = parse_completion(await read_json(request, self.cfg.max_body_bytes), self.cfg)
        return await self.answer(spec, OpenAIDialect(self.worker.model_name))

    async def answer(self, spec: HoleSpec, dialect: Any) -> Response:
        pending = self.worker.submit(spec)
        deadline = time.monotonic() + self.cfg.request_timeout_s
        if spec.stream:
            return StreamingResponse(self.stream(pending, dialect, deadline), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                event = await next_event(pending, deadline)
                if isinstance(event, Failure):
                    return error(event.status, event.message)
                if event.finished:
                    return CompactJSON(dialect.final(spec, event))
        finally:
            pending.cancelled.set()

    async def stream(self, pending: Pending, dialect: Any, deadline: float) -> AsyncIterator[str]:
        """SSE: content deltas of the settled text (+ `event: denoise` per step when asked); the generator
        is cancelled when the client disconnects, and `finally` drops the request from its batch."""
        sent = [""] * pending.spec.num_candidates
        try:
            while True:
                event = await next_event(pending, deadline)
                if isinstance(event, Failure):
                    yield sse(error_body(event.status, event.message), "error")
                    return
                assert isinstance(event, Progress)
                if pending.spec.stream_denoise:
                    for line in denoise_events(event):
                        yield line
                for line in dialect.chunks(pending.spec, event, sent):
                    yield line
                if event.finished:
                    return
        finally:
            pending.cancelled.set()


def build_app(cfg: ServeConfig, worker: BatchWorker) -> Any:
    """The ASGI app; the worker thread starts with the app (lifespan) and stops with it."""
    ep = Endpoints(cfg, worker)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, str(exc)[:200])
        return error(exc.status, str(exc))

    routes = [Route("/health", ep.health), Route("/v1/health", ep.health),
              Route("/v1/models", ep.models), Route("/models", ep.models),
              Route("/infill", ep.infill, methods=["POST"]),
              Route("/v1/completions", ep.completions, methods=["POST"]),
              Route("/completions", ep.completions, methods=["POST"]),
              Route("/v1/fim/completions", ep.completions, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={BadRequest: bad_request})
    return Guard(app, cfg)
