"""compare: runs side by side (local run directories, or W&B runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..common.errors import BadInput
from .app import app, directory_option


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Run directories; with --wandb, W&B run names or ids.",
                                              show_default=False)],
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Write their loss curves to this new .png file, each run named by what differs in its "
                  "recipe (an existing file is never replaced).")] = None,
    wandb: Annotated[Optional[str], typer.Option("--wandb", metavar="ENTITY/PROJECT",
                                                 help="Read the runs from W&B's public API.")] = None,
) -> None:
    """Runs side by side: summary metrics (losses, pass@k, APPS accuracies, tokens/s, wall time; a
    directory `ccrun run --dry-run` made shows status "dry run"), then the recipe differences
    between the first run and each other one.

    A damaged run (a metrics.jsonl, summary.json or resolved.yaml that cannot be read) is not skipped: the
    command exits 2 naming the file and line, and shows nothing, so a table never silently lacks
    a run. Leave that run out of the arguments to compare the others."""
    from ..track.compare import local_run, report, wandb_runs
    from ..track.compare import plot as draw
    from ..track.rundir import RunDir

    if plot is not None:  # before any run is read: a taken name fails at once
        if plot.suffix.lower() != ".png":
            raise BadInput(f"--plot {plot}: a .png file name expected")
        if plot.exists() or plot.is_symlink():
            raise BadInput(f"--plot {plot}: exists; give a new file name (nothing was overwritten)")
        directory_option(plot.parent, "--plot")
    if wandb is not None:
        if wandb.count("/") != 1 or not all(wandb.split("/")):
            raise BadInput(f"--wandb: expected ENTITY/PROJECT (got {wandb!r})")
        views = wandb_runs(wandb, runs)
    else:
        views = [local_run(RunDir.open(r)) for r in runs]
    typer.echo(report(views), nl=False)
    if plot is not None:
        try:
            typer.echo(f"plot: {draw(views, plot, exclusive=True)}")
        except FileExistsError:  # it appeared while the runs were read
            raise BadInput(f"--plot {plot}: exists; give a new file name (nothing was overwritten)") from None
