"""runs, init, export: list the run directories, start a recipe, hand a run over as a Hugging Face
model (runner.export does the export)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..common.errors import BadInput
from .app import CheckpointOption, app, checkpoint_choice, complete_recipe, directory_option, new_directory

MAX_DEPTH = 3  # runs/<name>/<time-hash>: a run directory is at most this far below DIR
STAMP = re.compile(r"^(\d{8}-\d{6})-([0-9a-f]{8})")  # RunDir.create's <yyyymmdd-HHMMSS>-<hash8>


@dataclass
class Listed:
    """One row of `ccrun runs`."""

    status: str  # running | succeeded | failed | dry run | incomplete | damaged
    recipe: str
    hash: str
    steps: int | None
    val_loss: float | None
    pass_at_1: float | None
    wall_time_s: float | None
    path: str
    created: str  # UTC, ISO 8601
    error: str | None = None  # why a run failed, or why its summary.json cannot be read


def run_directories(root: Path) -> list[Path]:
    """Directories holding resolved.yaml at most MAX_DEPTH below root (root itself included); a run
    directory is not searched further. Unreadable directories are skipped."""
    found, level = [], [root]
    for _ in range(MAX_DEPTH + 1):
        below = []
        for directory in level:
            if (directory / "resolved.yaml").is_file():
                found.append(directory)
                continue
            try:
                below += sorted(Path(e.path) for e in os.scandir(directory)
                                if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
        level = below
    return found


def _created(path: Path, provenance: dict[str, Any]) -> dt.datetime:
    stamp = STAMP.match(path.name)
    if stamp:
        return dt.datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)
    try:
        return dt.datetime.fromisoformat(provenance["created_utc"])
    except (KeyError, TypeError, ValueError):
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)


def _last_step(path: Path) -> int | None:
    """The step of metrics.jsonl's last record (read from its end: a running run's progress)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - 65536))
            lines = stream.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def listed(path: Path) -> Listed:
    """What `ccrun runs` shows of one run directory; a damaged summary.json becomes a `damaged` row."""
    from ..recipe.results import SummaryError
    from ..track.rundir import RunDir

    run = RunDir(path)
    try:
        provenance = json.loads(run.file("provenance.json").read_text(encoding="utf-8"))
        provenance = provenance if isinstance(provenance, dict) else {}
    except (OSError, ValueError):
        provenance = {}
    stamp = STAMP.match(path.name)
    row = Listed(status="incomplete", recipe=path.parent.name, steps=None, val_loss=None, pass_at_1=None,
                 hash=(provenance.get("recipe_hash") or (stamp.group(2) if stamp else "?"))[:8], wall_time_s=None,
                 path=str(path), created=_created(path, provenance).isoformat(timespec="seconds"))
    try:
        summary = run.summary()
    except SummaryError as exc:
        row.status, row.error = "damaged", str(exc)
        return row
    if summary is None:
        row.status = "dry run" if run.dry_run() else "incomplete"
        row.steps = _last_step(run.file("metrics.jsonl"))
        return row
    flat = summary.flat()
    generation = summary.generation()
    row.status, row.recipe, row.hash, row.error = summary.status, summary.name, summary.recipe_hash[:8], summary.error
    row.steps = summary.train.steps if summary.train else _last_step(run.file("metrics.jsonl"))
    row.val_loss = flat.get("val/loss")
    row.pass_at_1 = generation[0].pass_at_k.get(1) if generation else None
    row.wall_time_s = summary.wall_time_s
    return row


def table(rows: list[Listed]) -> str:
    from ..common.clock import duration

    def shown(value: Any, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    cells = [("status", "recipe", "hash", "steps", "val loss", "pass@1", "wall", "path")]
    cells += [(r.status, r.recipe, r.hash, shown(r.steps), shown(r.val_loss, "{:.4f}"), shown(r.pass_at_1, "{:.4f}"),
               "-" if r.wall_time_s is None else duration(r.wall_time_s), r.path) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    right = {3, 4, 5, 6}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in cells]
    lines += [f"damaged: {r.error}" for r in rows if r.status == "damaged"]
    return "\n".join(lines) + "\n"


@app.command("runs")
def runs_(
    directory: Annotated[Path, typer.Argument(metavar="[DIR]", help="Where the run directories are.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list, one object per run.")] = False,
) -> None:
    """The run directories under DIR, newest first: status, recipe, hash, steps, validation loss,
    pass@1 (the first generation suite's), wall time. A run whose summary.json cannot be read is
    listed as damaged, with the reason."""
    if not directory.exists():
        raise BadInput(f"{directory}: no such directory (run directories are made by `ccrun run`, under runs/)")
    if not directory.is_dir():
        raise BadInput(f"{directory}: not a directory")
    rows = [listed(path) for path in run_directories(directory)]
    rows.sort(key=lambda r: (r.created, r.path), reverse=True)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif not rows:
        typer.echo(f"no run directories under {directory} (`ccrun run RECIPE` makes one)", err=True)
    else:
        typer.echo(table(rows), nl=False)


STARTER = """\
description: >-
  What this experiment asks. (A starter: a tiny GPT-Neo trained from scratch on the Python
  standard library, offline and on a CPU in about a minute. Change what you need; `ccrun validate`
  checks every key, `ccrun resolve` shows every default.)
seed: 0
# The model: a hub checkpoint to fine-tune ({init: pretrained, checkpoint: EleutherAI/gpt-neo-125M})
# or a fresh one sized here.
model:
  arch: gpt-neo
  init: scratch
  config: {n_layer: 2, d_model: 64, n_head: 4, max_positions: 256, window_size: 32}
# A hub tokenizer ({name: EleutherAI/gpt-neo-125M}), or one trained on the corpus.
tokenizer:
  train: {vocab_size: 512}
data:
  sources:
    # Your code: {type: files, root: path/to/code, include: ["*.py"]}, or JSON Lines, Parquet, hub datasets.
    - {type: files, stdlib: true, include: ["*.py"]}
  seq_len: 128
  validation: {fraction: 0.1}
optimizer: {type: adamw, b1: 0.9, b2: 0.95, weight_decay: 0.1}
schedule: {type: warmup_cosine, peak_lr: 3.0e-3, warmup_steps: 10, decay_steps: 90, end_lr: 3.0e-4}
train:
  batch_size: 8  # sequences per optimizer step, all devices together
  steps: 100
  eval_every: 50
evals:
  - {suite: loss}
  # HumanEval on a few problems: {suite: humaneval, limit: 4, sampling: [{temperature: 0.8, n_samples: 4, k: [1]}]}
"""


def schema_line(target_dir: Path) -> str | None:
    """The editor's schema line for a recipe in target_dir: the nearest schemas/recipe.schema.json
    above it, else ccrun's own checkout's; None when there is neither."""
    here = target_dir.resolve()
    own = Path(__file__).resolve().parents[2] / "schemas"
    for place in [*(p / "schemas" for p in (here, *here.parents)), own]:
        if (place / "recipe.schema.json").is_file():
            return f"# yaml-language-server: $schema={Path(os.path.relpath(place / 'recipe.schema.json', here)).as_posix()}"
    return None


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="The recipe's name (runs go to runs/NAME/).", show_default=False)],
    from_: Annotated[Optional[Path], typer.Option(
        "--from", metavar="RECIPE", help="Start from this recipe (extends it) instead of the starter.",
        autocompletion=complete_recipe)] = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where the recipe goes.")] = Path("recipes"),
) -> None:
    """Write a new recipe DIR/NAME.yaml: the editor's schema line, its name, and either `extends:
    RECIPE` or a small starter that runs offline. An existing file is never replaced."""
    from ..common.io import atomic_write
    from ..recipe.schema import MAX_NAME, NAME_PATTERN

    if not re.match(NAME_PATTERN, name) or len(name) > MAX_NAME:
        raise BadInput(f"{name!r}: not a recipe name (letters, digits, '.', '_', '-', starting with a letter or digit; "
                       f"at most {MAX_NAME} characters)")
    directory_option(directory, "--dir")
    target = directory / f"{name}.yaml"
    if target.exists() or target.is_symlink():
        raise BadInput(f"{target}: exists; give another name (nothing was overwritten)")
    if from_ is not None and not from_.is_file():
        raise BadInput(f"--from {from_}: no such recipe file")
    directory.mkdir(parents=True, exist_ok=True)
    line = schema_line(directory)
    if from_ is not None:
        body = f"extends: {Path(os.path.relpath(from_.resolve(), directory.resolve())).as_posix()}\n"
    else:
        body = STARTER
    text = (f"{line}\n" if line else "") + f"name: {name}\n" + body
    try:
        atomic_write(target, text)
    except FileExistsError:
        raise BadInput(f"{target}: exists; give another name (nothing was overwritten)") from None
    if line is None:
        typer.echo(f"warning: no schemas/recipe.schema.json found above {directory} or in ccrun's checkout, so "
                   f"{target} has no editor schema line (`ccrun schema` writes the schemas)", err=True)
    typer.echo(str(target))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="New (or empty) directory for the model.", show_default=False)],
    checkpoint: CheckpointOption = None,
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", metavar="REPO", help="Then upload it to this hub model repository (created if missing).")
    ] = None,
) -> None:
    """A run as a Hugging Face model directory: config.json, model.safetensors, tokenizer files (its
    final/, or a checkpoint) and README.md, a model card with the recipe, data, metrics and eval
    results. It loads with transformers' AutoModelForCausalLM / AutoTokenizer.from_pretrained."""
    from ..export import check_repo_id, export_run, push_to_hub as push
    from ..track.rundir import RunDir

    checkpoint_choice(checkpoint)
    RunDir.open(run_dir)
    new_directory(out, "--out")
    if push_to_hub is not None:
        check_repo_id(push_to_hub)
    typer.echo(str(export_run(run_dir, out, checkpoint=checkpoint, repo=push_to_hub)))
    if push_to_hub is not None:
        typer.echo(push(out, push_to_hub))
