"""What a server serves: a run directory's model (final/ export or a checkpoint) or a Hugging Face
model directory, with what /info says about it; and the listening socket, claimed before the slow
load so that a busy port fails at once."""

from __future__ import annotations

import errno
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.errors import BadInput


class ServeError(BadInput):
    """Something to serve that cannot be served, or an address that cannot be listened on."""


@dataclass
class Served:
    model: Any  # GPTNeo
    tokenizer: Any  # transformers fast tokenizer
    name: str
    source: Path
    kind: str  # "run" | "hf"
    recipe_hash: str | None = None  # a run's; None for a bare HF directory
    checkpoint: str | None = None  # None: final/ export (or the HF directory itself)

    def info(self) -> dict[str, Any]:
        config = self.model.config
        return {
            "model": {
                "name": self.name,
                "type": config.arch,
                "layers": config.n_layer,
                "d_model": config.d_model,
                "heads": config.n_head,
                "vocab_size": config.vocab_size,
                "max_positions": config.max_positions,
                "parameters": config.num_params(),
            },
            "source": str(self.source),
            "kind": self.kind,
            "checkpoint": self.checkpoint,
            "recipe_hash": self.recipe_hash,
        }


def _run_hash(run_dir: Path, recipe: Any) -> str:
    """The hash the run recorded (summary.json, else provenance.json), else the recipe's own."""
    for name in ("summary.json", "provenance.json"):
        path = run_dir / name
        if path.is_file():
            try:
                digest = json.loads(path.read_text()).get("recipe_hash")
            except ValueError:
                continue
            if isinstance(digest, str) and digest:
                return digest
    from ..recipe.resolve import recipe_hash

    return recipe_hash(recipe)


def open_run(run_dir: Path, recipe: Any, *, checkpoint: str | None = None) -> Served:
    """A run directory's model and tokenizer, as `ccrun eval` loads them."""
    from ..train.checkpoint import ModelMissing, load_run_model

    try:
        model, tokenizer = load_run_model(run_dir, recipe, checkpoint=checkpoint)
    except (BadInput, ModelMissing) as exc:  # files that do not load, or no such model: exit 2 here
        raise ServeError(f"{run_dir}: nothing to serve: {exc}") from None
    return Served(model, tokenizer, recipe.name, run_dir.resolve(), "run", _run_hash(run_dir, recipe), checkpoint)


def open_hf(directory: Path) -> Served:
    """A Hugging Face model directory: config.json + weights + tokenizer files."""
    from ..data.tokenizer import TokenizerError, load_tokenizer
    from ..model import CheckpointError, from_pretrained

    if not (directory / "config.json").is_file():
        raise ServeError(f"{directory}: neither a run directory (no resolved.yaml) "
                         "nor a Hugging Face model directory (no config.json)")
    try:
        tokenizer = load_tokenizer(directory)
        model = from_pretrained(directory)
    except (CheckpointError, TokenizerError) as exc:
        raise ServeError(f"{directory}: {exc}") from None
    return Served(model, tokenizer, directory.resolve().name, directory.resolve(), "hf")


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for `host:port` (uvicorn listens on it)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ServeError(f"--host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may rebind over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "; pick another with --port" if exc.errno == errno.EADDRINUSE else ""
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    return sock
