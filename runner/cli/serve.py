"""serve: a trained run (or a Hugging Face model directory) over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..common.errors import BadInput
from .app import app, checkpoint_choice


@app.command()
def serve(
    source: Annotated[
        Path, typer.Argument(metavar="RUN_DIR|HF_DIR", help="A run directory, or a Hugging Face model directory.",
                             show_default=False)
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    checkpoint: Annotated[
        Optional[str], typer.Option(help="Serve a run's checkpoint: best or latest (default: its final/ export).")
    ] = None,
    max_batch: Annotated[int, typer.Option(
        min=1, max=1024, help="Sequences decoded together at most, rounded up to a power of two (1: no batching); "
                              "every batch shape is compiled at start, before /health says ready.")] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="How long a lone request waits for others to share its batch.")
    ] = 5.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="The most tokens one request may ask for.")] = 1024,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        help="Also accept this Host header (repeatable; '*': any). Loopback names and IP addresses are always "
             "accepted; other names are refused against DNS rebinding.")] = None,
    allow_origin: Annotated[Optional[list[str]], typer.Option(
        help="Also accept browser requests from this Origin, e.g. https://example.org (repeatable; '*': any). "
             "By default only the server's own page may post.")] = None,
    max_connections: Annotated[Optional[int], typer.Option(
        min=1, max=65536, help="Open connections at most (default: min(256, a quarter of the file limit)); "
                               "past it the oldest idle or half-sent one is closed.")] = None,
) -> None:
    """Serve a model over HTTP: Hugging Face Inference API text generation at /models/NAME (the Code
    Clippy VS Code extension), OpenAI completions at /v1/completions, a problem-solver page at /."""
    from ..serve.source import listen, open_hf, open_run
    from ..track.rundir import RunDir

    checkpoint_choice(checkpoint)
    if not source.is_dir():
        raise BadInput(f"{source}: no such directory (a run directory or a Hugging Face model directory)")
    run = RunDir.open(source) if (source / "resolved.yaml").is_file() else None
    if checkpoint is not None and run is None:
        raise BadInput("--checkpoint applies to a run directory")
    recipe = run.recipe().recipe if run else None
    sock = listen(host, port)  # before the slow load: a busy port fails at once
    try:
        served = open_run(source, recipe, checkpoint=checkpoint) if run else open_hf(source)
    except BaseException:
        sock.close()
        raise
    from ..serve.app import serve as run_server

    run_server(served, sock, max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_new_tokens=max_new_tokens,
               allow_hosts=allow_host or (), allow_origins=allow_origin or (), max_connections=max_connections)
