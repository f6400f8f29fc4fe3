"""The HTTP server: routes, limits that depend on the served model, and uvicorn.

  POST /models/{name}   Hugging Face Inference API text generation (the Code Clippy VS Code extension)
  POST /v1/completions  OpenAI completions
  POST /v1/solve        the problem page: APPS prompt of training → solutions
  GET  /                the problem page;   GET /health   liveness + batching counters;   GET /info
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from ..data.apps import apps_prompt
from ..evals.sample import Sampling
from .api import CompletionRequest, InferenceRequest, SolveRequest
from .batcher import Batcher, Job, Result
from .errors import RequestError, parse
from .source import Served

log = logging.getLogger("ccrun.serve")
MAX_BODY = 8 * 1024 * 1024  # bytes; MAX_INPUT_CHARS of text fits with room to spare


class Limits:
    """What a request may ask of this server: depends on the model's context and the command line."""

    def __init__(self, served: Served, max_batch: int, max_new_tokens: int):
        self.positions = served.model.config.max_positions
        self.vocab = served.model.config.vocab_size
        self.max_new_tokens = min(max_new_tokens, self.positions - 1)  # at least one prompt token must fit
        self.max_batch = max_batch

    def check(self, sampling: Sampling, *, tokens_at: str, top_k_at: str = "") -> None:
        problems = []
        if sampling.max_new_tokens > self.max_new_tokens:
            why = (f"the model has {self.positions} positions" if self.max_new_tokens == self.positions - 1
                   else "--max-new-tokens")
            problems.append((tokens_at, f"must be <= {self.max_new_tokens} on this server ({why}) "
                                        f"(got {sampling.max_new_tokens})"))
        if top_k_at and sampling.top_k > self.vocab:
            problems.append((top_k_at, f"must be <= the vocabulary size {self.vocab} (got {sampling.top_k})"))
        if problems:
            raise RequestError(problems)


def _fn_name(starter_code: str) -> str | None:
    found = re.search(r"def\s+([A-Za-z_]\w*)\s*\(", starter_code)
    return found.group(1) if found else None


def build_app(served: Served, batcher: Batcher, *, max_new_tokens: int = 1024) -> FastAPI:
    """The FastAPI app serving `served` through `batcher` (closed when the app shuts down)."""
    limits = Limits(served, batcher.max_batch, max_new_tokens)
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="ccrun serve", summary=f"{served.name}: code completion", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refused(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def failed(_request: Request, exc: Exception) -> JSONResponse:  # a bug answers 500; the server goes on
        message = f"internal error: {type(exc).__name__}: {exc}"
        return JSONResponse({"error": message, "detail": message}, status_code=500)

    async def body_of(request: Request, model: type) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY:
            raise RequestError([("", f"the body is {int(size)} bytes; at most {MAX_BODY}")], status=413)
        chunks, total = [], 0
        async for chunk in request.stream():  # a chunked upload has no Content-Length: count as it comes
            total += len(chunk)
            if total > MAX_BODY:
                raise RequestError([("", f"the body is over {MAX_BODY} bytes")], status=413)
            chunks.append(chunk)
        return parse(b"".join(chunks), model)

    async def generate(text: str, sampling: Sampling, n: int, stop: tuple[str, ...] = (),
                       max_time: float | None = None) -> Result:
        deadline = None if max_time is None else time.monotonic() + max_time
        try:
            return await asyncio.wrap_future(batcher.submit(Job(text, n, sampling, stop, deadline)))
        except Exception as exc:  # noqa: BLE001 - one request failed; say why, keep serving
            log.exception("generation failed")
            raise RequestError([("", f"generation failed: {type(exc).__name__}: {exc}")], status=500) from None

    @app.post("/models/{name:path}")
    async def inference_api(name: str, request: Request) -> list[dict[str, str]]:
        """Hugging Face Inference API text generation: [{"generated_text": ...}, ...] (any model name)."""
        body: InferenceRequest = await body_of(request, InferenceRequest)
        p = body.parameters
        sampling = body.sampling()
        limits.check(sampling, tokens_at="parameters.max_new_tokens", top_k_at="parameters.top_k")
        result = await generate(body.inputs, sampling, p.num_return_sequences or 1, tuple(p.stop or ()), p.max_time)
        prefix = body.inputs if p.return_full_text is not False else ""
        return [{"generated_text": prefix + c.text} for c in result.completions]

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        """OpenAI completions (no streaming)."""
        body: CompletionRequest = await body_of(request, CompletionRequest)
        sampling = body.sampling()
        limits.check(sampling, tokens_at="max_tokens")
        result = await generate(body.prompt, sampling, body.n, body.stops())
        prefix = body.prompt if body.echo else ""
        generated = sum(c.tokens for c in result.completions)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": served.name,
            "choices": [{"text": prefix + c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason}
                        for i, c in enumerate(result.completions)],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": generated,
                      "total_tokens": result.prompt_tokens + generated},
        }

    @app.post("/v1/solve")
    async def solve(request: Request) -> dict[str, Any]:
        """A programming problem → solutions, prompted exactly as APPS was trained and evaluated."""
        body: SolveRequest = await body_of(request, SolveRequest)
        sampling = body.sampling()
        limits.check(sampling, tokens_at="max_new_tokens")
        # apps_prompt reads only whether there is a function name: call-based problems have one
        fn_name = (_fn_name(body.starter_code) or "solution") if body.format == "call_based" else None
        prompt = apps_prompt(body.question, body.starter_code or None, fn_name)
        result = await generate(prompt, sampling, body.n)
        return {"prompt": prompt, "prompt_tokens": result.prompt_tokens,
                "solutions": [c.text for c in result.completions],
                "finish_reasons": [c.finish_reason for c in result.completions]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), "batching": batcher.stats()}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {**served.info(), "limits": {"max_new_tokens": limits.max_new_tokens, "max_batch": limits.max_batch},
                "batching": batcher.stats()}

    return app


def serve(served: Served, sock: socket.socket, *, max_batch: int = 8, batch_wait_ms: float = 5.0,
          max_new_tokens: int = 1024, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM) on the already-bound `sock`."""
    import uvicorn

    batcher = Batcher(served.model, served.tokenizer, max_batch=max_batch, wait_s=batch_wait_ms / 1000)
    app = build_app(served, batcher, max_new_tokens=max_new_tokens)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"ccrun serve: {served.name} ({served.kind}: {served.source}) on http://{shown}:{port}/\n"
          f"  editor (Inference API): POST http://{shown}:{port}/models/{served.name}\n"
          f"  OpenAI completions:     POST http://{shown}:{port}/v1/completions", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
