"""launch: a recipe submitted as a job through submitit (Slurm, or this machine), not run here.

A thin layer: the job runs `ccrun run RECIPE` (submitit's CommandFunction) in every task, and the
tasks join as any `srun ccrun run` does (runner.common.procs). Queueing, arrays, logs and
cancelling are Slurm's and submitit's; ccrun adds only the command and its parameters.

One task (process) per GPU on Slurm: that is what jax's Slurm detection expects (the i-th task of a
node drives the node's i-th GPU). On this machine (`--executor local`) one process drives all
the GPUs it is given, as `ccrun run` does."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..common.errors import BadInput
from .app import SetOption, app, directory_option, recipe_argument

EXECUTORS = ("slurm", "local")
INSTALL = "pip install 'ccrun[slurm]'"


@dataclass(frozen=True)
class Job:
    """One job to submit: the command each of its tasks runs, and what it runs (a sweep point)."""

    command: list[str]
    label: str  # the recipe's name, with the point's values for a job of an array


def jobs_for(points: list, recipe: Path, sets: list[str], *, runs_dir: Path,
             array: bool | None) -> tuple[list[Job], bool]:
    """The jobs a launch submits for the recipe's `points` (runner.sweep.expand), and whether they
    form an array: one job per sweep point (its --sweep-index) for a recipe with a sweep unless
    `array` is False, else one job running the recipe (all of a sweep's points, one after another)."""
    swept = points[0].sweep is not None
    if array and not swept:
        raise BadInput(f"--array: {recipe} has no sweep; it is one job (leave out --array)")
    array = swept if array is None else array
    # absolute paths: the job may start elsewhere (and runs in the directory launch ran in)
    run = [sys.executable, "-m", "runner.cli", "run", str(recipe.resolve()), "--runs-dir", str(runs_dir.resolve()),
           *(arg for value in sets for arg in ("--set", value))]
    name = points[0].loaded.recipe.name
    if not array:
        return [Job(run, name)], False
    return [Job([*run, "--sweep-index", str(p.sweep["index"])], f"{name} {p.label}") for p in points], True


def parameters(*, executor: str, name: str, nodes: int, gpus_per_node: int, cpus_per_task: int | None,
               partition: str | None, minutes: int, sbatch: dict[str, str]) -> dict[str, Any]:
    """submitit's AutoExecutor parameters (its shared names, and slurm_* for Slurm's own)."""
    tasks = max(gpus_per_node, 1) if executor == "slurm" else 1  # see the module's docstring
    params: dict[str, Any] = {"name": name, "nodes": nodes, "tasks_per_node": tasks, "timeout_min": minutes}
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    if executor == "slurm":
        if partition:
            params["slurm_partition"] = partition
        if sbatch:
            params["slurm_additional_parameters"] = sbatch
    return params


def sbatch_options(pairs: list[str]) -> dict[str, str]:
    """--slurm KEY=VALUE pairs as sbatch options (account=proj → #SBATCH --account=proj)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise BadInput(f"--slurm: expected KEY=VALUE, an sbatch option such as account=myproject (got {pair!r})")
        options[key] = value
    return options


def sbatch_script(folder: Path, params: dict[str, Any], jobs: list[Job], array: bool) -> str:
    """The batch script submitit writes for these parameters (for --dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string

    names = {"name": "job_name", "timeout_min": "time", "tasks_per_node": "ntasks_per_node",
             "slurm_partition": "partition", "slurm_additional_parameters": "additional_parameters"}
    submit = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=submit, folder=folder, map_count=len(jobs) if array else None,
                               **{names.get(k, k): v for k, v in params.items()})


@app.command()
def launch(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (or a recipe's name).", show_default=False)],
    set_: SetOption = None,
    nodes: Annotated[int, typer.Option(min=1, help="Nodes (hosts) of each job.")] = 1,
    gpus_per_node: Annotated[int, typer.Option(
        min=0, help="GPUs of each node; on Slurm one task (process) per GPU, as jax expects.")] = 0,
    cpus_per_task: Annotated[Optional[int], typer.Option(min=1, help="CPU cores of each task (Slurm's default: 1; "
                                                                     "the data stage uses them).")] = None,
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition.")] = None,
    time: Annotated[int, typer.Option("--time", min=1, metavar="MINUTES",
                                      help="Time limit of each job, in minutes.")] = 24 * 60,
    array: Annotated[Optional[bool], typer.Option(
        "--array/--no-array", help="One job per sweep point, as a job array (the default for a recipe with a "
        "sweep); --no-array runs the points one after another in one job.")] = None,
    executor: Annotated[str, typer.Option(help="slurm (sbatch), or local: this machine, in the background.")] = "slurm",
    slurm: Annotated[Optional[list[str]], typer.Option(
        "--slurm", metavar="KEY=VALUE", help="Any other sbatch option, e.g. --slurm account=myproject --slurm "
        "qos=high --slurm mem=200G.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Root of the run directories (a filesystem every node sees).")] = Path(
        "runs"),
    logs: Annotated[Optional[Path], typer.Option(
        help="submitit's folder: each job's stdout, stderr and pickles in JOB_ID/ below it (default: "
        "RUNS_DIR/.submitit).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print each job's command (stdout) and the batch script (stderr); submit nothing.")] = False,
) -> None:
    """Submit `ccrun run RECIPE` as a job through submitit: on Slurm, NODES x GPUS_PER_NODE tasks
    that join as one jax.distributed run; a recipe with a sweep as a job array, one job per point.
    Prints each job's id and its log (stdout), and returns once they are queued."""
    if executor not in EXECUTORS:
        raise BadInput(f"--executor: slurm or local (got {executor!r})")
    if executor == "local" and nodes > 1:
        raise BadInput("--executor local runs on this machine: --nodes 1 (Slurm for more)")
    try:
        import submitit
    except ImportError:
        raise BadInput(f"ccrun launch needs submitit: {INSTALL}") from None
    recipe = Path(recipe_argument(str(recipe)))
    directory_option(runs_dir, "--runs-dir")
    folder = (logs or runs_dir / ".submitit").resolve() / "%j"
    directory_option(folder.parent, "--logs")
    sbatch = sbatch_options(slurm or [])
    from ..preflight import check_recipes
    from ..sweep import expand

    points = expand(recipe, set_ or [])  # a bad recipe or --set fails here, before anything is queued
    jobs, is_array = jobs_for(points, recipe, set_ or [], runs_dir=runs_dir, array=array)
    # Inputs are checked from here, which may not see what the nodes see (node-local disks, their
    # own Hugging Face cache): a warning, and the job's own `ccrun run` refuses at once if they are missing.
    missing = {s.input.key(): s for statuses in check_recipes([p.loaded.recipe for p in points])
               for s in statuses if s.missing}
    for status in missing.values():
        typer.echo(f"ccrun: warning: not found from here (the job stops at once if its nodes do not see it "
                   f"either): {status.line()}", err=True)
    params = parameters(executor=executor, name=jobs[0].label.split()[0], nodes=nodes, gpus_per_node=gpus_per_node,
                        cpus_per_task=cpus_per_task, partition=partition, minutes=time, sbatch=sbatch)
    if dry_run:
        if executor == "slurm":
            typer.echo(sbatch_script(folder, params, jobs, is_array), err=True)
        else:
            typer.echo(f"local executor, parameters: {params}", err=True)
        for job in jobs:
            typer.echo(shlex.join(job.command))
        return
    try:
        auto = submitit.AutoExecutor(folder=folder, cluster=executor)
    except RuntimeError as exc:  # submitit: no srun here
        raise BadInput(f"--executor slurm: {exc} (--executor local runs on this machine; --dry-run shows the "
                       "job)") from None
    auto.update_parameters(**params)
    functions = [submitit.helpers.CommandFunction(job.command, cwd=os.getcwd()) for job in jobs]
    try:  # submitit prints a refusing sbatch's stderr too: kept for the one-line error below
        with contextlib.redirect_stderr(io.StringIO()):
            if is_array:
                with auto.batch():
                    submitted = [auto.submit(function) for function in functions]
            else:
                submitted = [auto.submit(functions[0])]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
        # sbatch refused it (or answered no job id): its own last line says why
        raise BadInput(f"sbatch refused the job: {str(exc).strip().splitlines()[-1]}") from None
    for job, handle in zip(jobs, submitted, strict=True):
        typer.echo(f"{handle.job_id}\t{job.label}\t{handle.paths.stdout}")
    where = "queued on Slurm" if executor == "slurm" else "started here, in the background"
    typer.echo(f"{len(submitted)} job(s) {where}" + (" as a job array" if is_array else "")
               + f"; run directories under {runs_dir}/, logs in {folder.parent}/", err=True)
