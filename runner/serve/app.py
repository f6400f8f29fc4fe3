"""The HTTP server: routes, limits that depend on the served model, and uvicorn.

  POST /models/{name}   Hugging Face Inference API text generation (the Code Clippy VS Code extension)
  POST /v1/completions  OpenAI completions (stream: true: server-sent events)
  POST /v1/solve        the problem page: APPS prompt of training → solutions
  GET  /                the problem page;   GET /health   readiness + batching counters;   GET /info

A request is read (body within `body_timeout`), tokenized in a thread pool, checked, and queued for
the batcher; while it waits, the handler watches its connection, and a client that leaves takes its
job out of the queue (or ends its rows at the next chunk). `guard.py` holds the limits below HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from ..data.apps import apps_prompt
from ..data.tokenizer import encode_prompt, fit_prompt, prefix_ids
from ..evals.sample import Sampling
from .api import CompletionRequest, InferenceRequest, SolveRequest
from .batcher import Batcher, Job, Result
from .decode import compiled_programs
from .errors import RequestError, parse
from .guard import BODY_TIMEOUT, Guard, server_config
from .source import Served
from .stream import DONE, TextStream, chunk, event

log = logging.getLogger("ccrun.serve")
MAX_BODY = 8 * 1024 * 1024  # bytes; MAX_INPUT_CHARS of text fits with room to spare
TOKENIZERS = 4  # threads that tokenize prompts (a 1M-character prompt takes seconds: never on the model thread)
BODIES = {"/models/{name}": InferenceRequest, "/v1/completions": CompletionRequest, "/v1/solve": SolveRequest}


class ClientGone(Exception):
    """The client closed its connection before it was answered: nothing to send, nothing to log."""


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


def completion_head(model: str) -> dict[str, Any]:
    """The fields every OpenAI completion object starts with (a streamed chunk's too)."""
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": model}


def usage_of(result: Result) -> dict[str, int]:
    """OpenAI's `usage` of a finished generation."""
    generated = sum(c.tokens for c in result.completions)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": generated,
            "total_tokens": result.prompt_tokens + generated}


def _fn_name(starter_code: str) -> str | None:
    found = re.search(r"def\s+([A-Za-z_]\w*)\s*\(", starter_code)
    return found.group(1) if found else None


def build_app(served: Served, batcher: Batcher, *, max_new_tokens: int = 1024, allow_hosts: Iterable[str] = (),
              allow_origins: Iterable[str] = (), body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """The FastAPI app serving `served` through `batcher` (closed when the app shuts down).

    allow_hosts: Host names answered besides loopback names and IP addresses ("*": any);
    allow_origins: origins whose pages may POST here besides the server's own ("*": any).
    """
    limits = Limits(served, batcher.max_batch, min(max_new_tokens, batcher.max_new_tokens))
    started = time.time()
    tokenizers = ThreadPoolExecutor(TOKENIZERS, thread_name_prefix="ccrun-tokenize")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        tokenizers.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="ccrun serve", summary=f"{served.name}: code completion", lifespan=lifespan)
    allow_origins = list(allow_origins)
    if allow_origins:  # pages from there may also read the answers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=allow_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    app.add_middleware(Guard, allow_hosts=allow_hosts, allow_origins=allow_origins)  # added last: runs first

    @app.exception_handler(RequestError)
    async def refused(_request: Request, exc: RequestError) -> JSONResponse:
        close = {"connection": "close"} if exc.status == 408 else None  # a slow body: do not wait for the rest
        return JSONResponse(exc.body(), status_code=exc.status, headers=close)

    @app.exception_handler(ClientGone)
    async def gone(_request: Request, _exc: ClientGone) -> JSONResponse:
        return JSONResponse({"error": "the client closed the connection", "detail": []}, status_code=499)

    @app.exception_handler(Exception)
    async def failed(_request: Request, exc: Exception) -> JSONResponse:  # a bug answers 500; the server goes on
        message = f"internal error: {type(exc).__name__}: {exc}"
        return JSONResponse({"error": message, "detail": message}, status_code=500)

    async def body_of(request: Request, model: type) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY:
            raise RequestError([("", f"the body is {int(size)} bytes; at most {MAX_BODY}")], status=413)
        chunks, total = [], 0
        try:
            async with asyncio.timeout(body_timeout):
                async for part in request.stream():  # a chunked upload has no Content-Length: count as it comes
                    total += len(part)
                    if total > MAX_BODY:
                        raise RequestError([("", f"the body is over {MAX_BODY} bytes")], status=413)
                    chunks.append(part)
        except TimeoutError:
            raise RequestError([("", f"the body did not arrive within {body_timeout:g} s")], status=408) from None
        except ClientDisconnect:
            raise ClientGone() from None
        return parse(b"".join(chunks), model)

    # The tokenizer's own prefix (BOS for Llama-family tokenizers, none for GPT-2's) first, as in
    # training and the evals; asked of the tokenizer once, not per request.
    bos_prefix = prefix_ids(served.tokenizer)

    def tokenize(text: str, max_new_tokens: int) -> list[int]:
        # the cursor is at the end: a long document loses its start, not the BOS
        ids = encode_prompt(served.tokenizer, text, bos_prefix)
        return fit_prompt(ids, limits.positions - max_new_tokens, len(bos_prefix))

    async def left(request: Request) -> None:
        """Returns when the client has closed the connection (the body is read: nothing else can come)."""
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def submit(request: Request, text: str, sampling: Sampling, n: int, stop: tuple[str, ...] = (),
                     max_time: float | None = None,
                     progress: Callable[[int, list[int]], None] | None = None) -> tuple[Job, asyncio.Future]:
        """Tokenize and queue a job → the job and its answer (a Result)."""
        ids = await asyncio.get_running_loop().run_in_executor(tokenizers, tokenize, text, sampling.max_new_tokens)
        if await request.is_disconnected():
            raise ClientGone()
        deadline = None if max_time is None else time.monotonic() + max_time
        job = Job(ids, n, sampling, stop, deadline, progress=progress)
        try:
            return job, asyncio.wrap_future(batcher.submit(job))
        except RuntimeError as exc:  # shutting down
            raise RequestError([("", str(exc))], status=503) from None

    def failure(exc: BaseException) -> RequestError:
        log.error("generation failed: %s: %s", type(exc).__name__, exc)
        return RequestError([("", f"generation failed: {type(exc).__name__}: {exc}")], status=500)

    async def generate(request: Request, text: str, sampling: Sampling, n: int, stop: tuple[str, ...] = (),
                       max_time: float | None = None) -> Result:
        job, answer = await submit(request, text, sampling, n, stop, max_time)
        watch = asyncio.ensure_future(left(request))
        try:
            await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the client left, or this handler was cancelled: decode nothing more for it
            watch.cancel()
            if not answer.done():
                job.abandon()
        if not answer.done() or answer.cancelled():
            raise ClientGone()
        try:
            return answer.result()
        except Exception as exc:  # noqa: BLE001 - one request failed; say why, keep serving
            raise failure(exc) from None

    async def stream(request: Request, body: CompletionRequest, sampling: Sampling) -> StreamingResponse:
        """OpenAI's streamed completion: text_completion chunks as server-sent events, then [DONE].
        Anything wrong before the first event is a JSON error with its status, as without stream."""
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[tuple[int, list[int]]] = asyncio.Queue()

        def progress(sample: int, ids: list[int]) -> None:  # on the decoding thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                loop.call_soon_threadsafe(updates.put_nowait, (sample, ids))

        stops = body.stops()
        job, answer = await submit(request, body.prompt, sampling, body.n, stops, progress=progress)
        texts = [TextStream(served.tokenizer.decode, stops) for _ in range(body.n)]
        head = completion_head(served.name)
        usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[bytes]:
            got: asyncio.Future | None = None
            try:
                if body.echo:
                    for i in range(body.n):
                        yield chunk(head, i, body.prompt, None, usage)
                while not answer.done():
                    got = asyncio.ensure_future(updates.get())
                    await asyncio.wait({got, answer}, return_when=asyncio.FIRST_COMPLETED)
                    if not got.done():
                        got.cancel()
                        continue
                    latest = dict([got.result()])
                    while not updates.empty():  # the newest tokens of each sample are enough
                        sample, ids = updates.get_nowait()
                        latest[sample] = ids
                    for sample, ids in sorted(latest.items()):
                        piece = await loop.run_in_executor(tokenizers, texts[sample].update, ids)
                        if piece:
                            yield chunk(head, sample, piece, None, usage)
                if answer.cancelled():
                    return
                try:
                    result: Result = answer.result()
                except Exception as exc:  # noqa: BLE001 - after the first event, an error is an event
                    yield event({"error": {"message": str(failure(exc)), "type": "server_error", "code": 500}})
                    return
                for i, completion in enumerate(result.completions):
                    yield chunk(head, i, texts[i].finish(completion.text), completion.finish_reason, usage)
                if usage:
                    yield event({**head, "choices": [], "usage": usage_of(result)})
                yield DONE
            finally:  # the client left (the response is cancelled) or the answer is out
                if got is not None:
                    got.cancel()
                if not answer.done():
                    job.abandon()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    @app.post("/models/{name:path}")
    async def inference_api(name: str, request: Request) -> list[dict[str, str]]:
        """Hugging Face Inference API text generation: [{"generated_text": ...}, ...] (any model name)."""
        body: InferenceRequest = await body_of(request, InferenceRequest)
        p = body.parameters
        sampling = body.sampling()
        limits.check(sampling, tokens_at="parameters.max_new_tokens", top_k_at="parameters.top_k")
        result = await generate(request, body.inputs, sampling, p.num_return_sequences or 1, tuple(p.stop or ()),
                                p.max_time)
        prefix = body.inputs if p.return_full_text is not False else ""
        return [{"generated_text": prefix + c.text} for c in result.completions]

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> dict[str, Any] | StreamingResponse:
        """OpenAI completions; with stream: true, server-sent events."""
        body: CompletionRequest = await body_of(request, CompletionRequest)
        sampling = body.sampling()
        limits.check(sampling, tokens_at="max_tokens")
        if body.stream_options is not None and not body.stream:
            raise RequestError([("stream_options", "only allowed with stream: true")])
        if body.stream:
            return await stream(request, body, sampling)
        result = await generate(request, body.prompt, sampling, body.n, body.stops())
        prefix = body.prompt if body.echo else ""
        return {
            **completion_head(served.name),
            "choices": [{"text": prefix + c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason}
                        for i, c in enumerate(result.completions)],
            "usage": usage_of(result),
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
        result = await generate(request, prompt, sampling, body.n)
        return {"prompt": prompt, "prompt_tokens": result.prompt_tokens,
                "solutions": [c.text for c in result.completions],
                "finish_reasons": [c.finish_reason for c in result.completions]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 once every program is compiled; 503 while starting ("starting") or if that failed ("failed")."""
        status = "failed" if batcher.warm_error else "ok" if batcher.ready.is_set() else "starting"
        body = {"status": status, "uptime_s": round(time.time() - started, 1),
                "compiled": {"programs": batcher.shapes.programs, "done": batcher.compiled},
                "batching": batcher.stats()}
        if batcher.warm_error:
            body["error"] = f"compiling failed: {batcher.warm_error}"
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """OpenAI's model list: the one model served (any name is answered at /models/NAME)."""
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> JSONResponse:
        """OpenAI's model retrieval: the served model by its name; any other name is 404."""
        if model != served.name:
            return JSONResponse({"error": f"no model {model!r} here; this server serves {served.name!r}"},
                                status_code=404)
        return JSONResponse(model_card())

    def model_card() -> dict[str, Any]:
        return {"id": served.name, "object": "model", "created": int(started), "owned_by": "ccrun"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {**served.info(), "limits": {"max_new_tokens": limits.max_new_tokens, "max_batch": limits.max_batch},
                "decoding": {**batcher.shapes.describe(), "chunk": batcher.chunk, "ready": batcher.ready.is_set(),
                             "compile_s": round(batcher.warm_s, 1), "compiled_in_process": compiled_programs()},
                "batching": batcher.stats()}

    def openapi() -> dict[str, Any]:
        """FastAPI's description, with the request bodies (read by hand, for clear messages) described."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for path, model in BODIES.items():
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
                schema["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
            answers = schema["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]
            answers["text/event-stream"] = {"schema": {"type": "string", "description": (
                "with stream: true: `data: {text_completion chunk}` events, then `data: [DONE]`")}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def serve(served: Served, sock: socket.socket, *, max_batch: int = 8, batch_wait_ms: float = 5.0,
          max_new_tokens: int = 1024, log_level: str = "info", allow_hosts: Iterable[str] = (),
          allow_origins: Iterable[str] = (), max_connections: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM) on the already-bound `sock`. /health answers 200
    once every program is compiled (the first requests wait for that)."""
    import uvicorn

    batcher = Batcher(served.model, served.tokenizer, max_batch=max_batch, wait_s=batch_wait_ms / 1000,
                      max_new_tokens=max_new_tokens)
    app = build_app(served, batcher, max_new_tokens=max_new_tokens, allow_hosts=allow_hosts,
                    allow_origins=allow_origins)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"ccrun serve: {served.name} ({served.kind}: {served.source}) on http://{shown}:{port}/\n"
          f"  editor (Inference API): POST http://{shown}:{port}/models/{served.name}\n"
          f"  OpenAI completions:     POST http://{shown}:{port}/v1/completions\n"
          f"  compiling {batcher.shapes.programs} programs (rows {list(batcher.shapes.rows)} x slots "
          f"{list(batcher.shapes.slots)}); /health answers 200 when done", flush=True)
    uvicorn.Server(server_config(app, log_level=log_level, max_connections=max_connections)).run(sockets=[sock])
