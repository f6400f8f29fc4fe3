"""Compare runs: their summary metrics side by side, their recipe differences, their curves.

A run comes from a run directory or from W&B's public API (`ccrun compare --wandb ENTITY/PROJECT`);
either way it becomes a `RunView` (name, summary row, resolved recipe, logged metrics), so the
table, the recipe diff and the plot are the same code for both.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.clock import duration
from ..common.errors import CcrunError
from .rundir import RunDir

# Flat summary keys (besides pass@k) read back from a W&B run's summary: see RunSummary.flat.
HEADLINE_SUFFIXES = ("/strict_accuracy", "/test_case_average", "/val_loss")
# Curves read back from W&B (each its own history scan: a scan returns rows holding all its keys).
CURVES = ("train/loss", "val/loss", "train/lr", "throughput/tokens_per_s")
LABEL_PARTS = 3  # recipe differences named in a plot's legend entry; past it "+N more"
TIMES = ("wall_time_s",)  # row keys in seconds: shown as times in the table


class CompareError(CcrunError):
    """A W&B run to compare cannot be found or read (exit 1)."""


@dataclass
class RunView:
    name: str
    row: dict[str, Any]
    recipe: dict[str, Any] | None
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _number(value: Any) -> bool:
    """A finite number (metrics.jsonl may hold NaN, strings or anything else a hand made)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _median_speed(metrics: list[dict[str, Any]]) -> float | None:
    speeds = sorted(m["throughput/tokens_per_s"] for m in metrics
                    if _number(m.get("throughput/tokens_per_s")) and m["throughput/tokens_per_s"] > 0)
    return speeds[len(speeds) // 2] if speeds else None  # median of the logged windows


def run_row(run: RunDir) -> dict[str, Any]:
    """What a run achieved, flat: status ("dry run" for a directory `ccrun run --dry-run` made),
    its summary's headline numbers (RunSummary.flat), the median throughput and the wall time."""
    summary = run.summary()
    if summary is None:
        row: dict[str, Any] = {"status": "dry run" if run.dry_run() else "unknown"}
    else:
        row = {"status": summary.status, **summary.flat()}
    speed = _median_speed(run.metrics())
    if speed:
        row["tokens_per_s"] = speed
    if summary is not None and summary.wall_time_s is not None:
        row["wall_time_s"] = summary.wall_time_s
    return row


def local_run(run: RunDir) -> RunView:
    """A run directory as a RunView (its resolved recipe, validated, as the diff's input)."""
    from ..recipe.resolve import resolved_dict

    return RunView(run.path.name, run_row(run), resolved_dict(run.recipe().recipe), run.metrics())


# W&B run states → the words summary.json uses
_STATES = {"finished": "succeeded", "failed": "failed", "crashed": "failed", "running": "running",
           "killed": "failed", "preempted": "failed"}


def wandb_view(run: Any) -> RunView:
    """A W&B public-API run as a RunView: the same row keys as a run directory's, the resolved
    recipe from its config (ccrun logs it there), the curves from its history."""
    summary = dict(run.summary)
    row: dict[str, Any] = {"status": _STATES.get(run.state, run.state)}
    for key in ("train/loss", "val/loss", "val/perplexity"):
        if isinstance(summary.get(key), int | float):
            row[key] = summary[key]
    by_step: dict[int, dict[str, Any]] = {}
    for key in CURVES:
        for record in run.scan_history(keys=["_step", key]):
            if record.get(key) is not None:
                by_step.setdefault(int(record["_step"]), {"step": int(record["_step"])})[key] = record[key]
    metrics = [by_step[s] for s in sorted(by_step)]
    speed = _median_speed(metrics)
    if speed:
        row["tokens_per_s"] = speed
    for key in sorted(summary):  # the keys Tracker.results wrote: RunSummary.flat()
        if key.endswith(HEADLINE_SUFFIXES) or "/pass@" in key:
            if isinstance(summary[key], int | float):
                row[key] = summary[key]
    if isinstance(summary.get("_runtime"), int | float):
        row["wall_time_s"] = summary["_runtime"]
    config = {k: v for k, v in dict(run.config).items() if k != "ccrun"}
    return RunView(run.name or run.id, row, config or None, metrics)


def wandb_runs(project: str, refs: list[str], *, api: Any = None) -> list[RunView]:
    """Runs of ENTITY/PROJECT by id or by name (ccrun names a W&B run after its run directory)."""
    if api is None:
        try:
            import wandb

            api = wandb.Api(timeout=30)
        except Exception as exc:  # noqa: BLE001 - no key, no network: say so
            raise CompareError(f"W&B: cannot reach the API ({type(exc).__name__}: {exc})") from None
    views = []
    for ref in refs:
        try:
            found = list(api.runs(project, filters={"display_name": ref}))
            if not found:
                found = [api.run(f"{project}/{ref}")]
        except Exception as exc:  # noqa: BLE001
            raise CompareError(f"W&B: no run {ref!r} in {project} ({type(exc).__name__}: {exc})") from None
        if len(found) > 1:
            raise CompareError(f"W&B: {len(found)} runs in {project} are named {ref!r}; give a run id: "
                               + ", ".join(r.id for r in found))
        views.append(wandb_view(found[0]))
    return views


def table(views: list[RunView], rows: list[dict[str, Any]] | None = None) -> str:
    rows = [v.row for v in views] if rows is None else rows
    keys = list(dict.fromkeys(k for row in rows for k in row))
    header = ["metric", *[v.name for v in views]]

    def cell(key: str, v: Any) -> str:
        if key in TIMES and _number(v):
            return duration(v, precise=True)
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"
        return str(v)

    body = [[k.removesuffix("_s") if k in TIMES else k, *[cell(k, row.get(k, "-")) for row in rows]] for k in keys]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]) + "\n"


def report(views: list[RunView]) -> str:
    """The table, then the recipe differences between the first run and each other one."""
    from ..recipe.diff import differences, render

    parts = [table(views)]
    for other in views[1:]:
        if views[0].recipe is None or other.recipe is None:
            missing = views[0].name if views[0].recipe is None else other.name
            parts.append(f"\n(no recipe logged for {missing}: recipe differences not shown)\n")
            continue
        parts.append("\n" + render(differences(views[0].recipe, other.recipe), views[0].name, other.name, "text"))
    return "".join(parts)


def _value(flat: dict[str, Any], key: str) -> Any:
    """A flattened recipe's value at `key`; a key under a single value (`sweep: null`) has that value."""
    from ..recipe.diff import ancestors

    if key in flat:
        return flat[key]
    return next((flat[a] for a in reversed(ancestors(key)) if a in flat), None)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last segment (`schedule.peak_lr` → `peak_lr`, as a sweep point's label),
    or by as many last segments as tell it from the others (`evals[0].k`, `evals[1].k`)."""
    split = {k: k.split(".") for k in keys}
    out = {}
    for key, parts in split.items():
        n = 1
        while n < len(parts) and sum(p[-n:] == parts[-n:] for p in split.values()) > 1:
            n += 1
        out[key] = ".".join(parts[-n:])
    return out


def run_labels(views: list[RunView]) -> list[str]:
    """How a plot's legend names each run: by what differs between the runs' resolved recipes,
    `peak_lr=3e-05` (`lr=0.001, seed=2` for several keys, the recipe name first when the names
    differ, at most LABEL_PARTS parts then `+N more`). Runs whose recipes do not tell them apart
    (identical, or not logged) are named by their directories (W&B: run names)."""
    from ..recipe.diff import differences
    from ..recipe.resolve import flatten

    names = [v.name for v in views]
    if len(views) == 1:
        recipe = views[0].recipe or {}
        return [recipe["name"] if isinstance(recipe.get("name"), str) else names[0]]
    if any(not isinstance(v.recipe, dict) for v in views):
        return names
    keys = list(dict.fromkeys(d.key for v in views[1:] for d in differences(views[0].recipe, v.recipe)
                              if d.key != "description"))  # free text: not what tells runs apart
    if not keys:
        return names
    short = _short_keys([k for k in keys if k != "name"])
    labels = []
    for view in views:
        flat = flatten(view.recipe)
        parts = [_shown(view.recipe["name"])] if "name" in keys else []
        parts += [f"{short[k]}={_shown(_value(flat, k))}" for k in keys if k != "name"]
        more = len(parts) - LABEL_PARTS
        labels.append(", ".join(parts[:LABEL_PARTS]) + (f", +{more} more" if more > 0 else ""))
    if len(set(labels)) < len(labels):  # cut short alike: the directory tells them apart
        labels = [f"{label} ({name})" for label, name in zip(labels, names, strict=True)]
    return labels


def _path_view(path: Path) -> RunView:
    """A run directory for a plot: its curves, and its resolved recipe as written (not validated:
    a plot of a run's own curves never fails over its recipe)."""
    import yaml

    try:
        recipe = yaml.safe_load(RunDir(path).file("resolved.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        recipe = None
    return RunView(path.name, {}, recipe if isinstance(recipe, dict) else None, RunDir(path).metrics())


def figure(runs: list[RunView | Path], *, metric: str = "loss") -> Any:
    """The matplotlib figure `plot` writes: every run's curve against step, titled with the metric
    and the recipe name(s); with several runs, a legend naming each by `run_labels`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [run if isinstance(run, RunView) else _path_view(run) for run in runs]
    labels = run_labels(views) if views else []
    key = "train/loss" if metric == "loss" else metric
    fig, ax = plt.subplots(figsize=(8, 5))
    try:
        for view, label in zip(views, labels, strict=True):
            points = [(m["step"], m[key]) for m in view.metrics if _number(m.get(key)) and _number(m.get("step"))]
            if not points:
                continue
            line = ax.plot(*zip(*points, strict=True), label=label)[0]
            val = [(m["step"], m["val/loss"]) for m in view.metrics
                   if _number(m.get("val/loss")) and _number(m.get("step"))] if metric == "loss" else []
            if val:
                ax.plot(*zip(*val, strict=True), "--o", markersize=3, color=line.get_color())
        recipes = list(dict.fromkeys(v.recipe["name"] for v in views
                                     if isinstance(v.recipe, dict) and isinstance(v.recipe.get("name"), str)))
        what = "loss (train solid, validation dashed)" if metric == "loss" else metric
        shown = ", ".join(recipes[:LABEL_PARTS]) + (f", +{len(recipes) - LABEL_PARTS} more"
                                                    if len(recipes) > LABEL_PARTS else "")
        ax.set_title(f"{what}: {shown}" if shown else what)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        if len(views) > 1 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def plot(runs: list[RunView | Path], out: Path, *, metric: str = "loss", exclusive: bool = False) -> Path:
    """One PNG of every run's curve against step (`figure`): `loss` (training, and validation
    dashed) or any logged metric such as `train/lr`, written whole or not at all. `exclusive`
    (what `ccrun compare --plot` asks): `out` must be new, an existing file is never replaced
    (FileExistsError); without it, a run redrawing its own plots/ on resume replaces them."""
    import io

    from ..common.io import atomic_write

    fig = figure(runs, metric=metric)
    import matplotlib.pyplot as plt  # after figure() chose the Agg backend

    try:
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=120)
    finally:
        plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, png.getvalue(), overwrite=not exclusive)
    return out
