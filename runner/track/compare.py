"""Compare runs: their summary metrics side by side, their recipe differences, their curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUMMARY_KEYS = ("status", "val/loss", "train/loss", "tokens_per_s", "wall_time_s")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_row(run_dir: Path) -> dict[str, Any]:
    """What a run achieved, flat: status, final losses, pass@k per suite, throughput, wall time."""
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    results = summary.get("results", {})
    row: dict[str, Any] = {"status": summary.get("status", "unknown")}
    final = results.get("train", {}).get("final", {})
    for key in ("train/loss", "val/loss"):
        if key in final:
            row[key] = final[key]
    speeds = [m["throughput/tokens_per_s"] for m in read_metrics(run_dir) if m.get("throughput/tokens_per_s")]
    if speeds:
        row["tokens_per_s"] = sorted(speeds)[len(speeds) // 2]  # median of the logged windows
    for name, value in results.items():
        if name not in ("train", "loss") and isinstance(value, dict):
            for k, v in value.items():
                row[f"{name}/pass@{k}"] = v
    if "wall_time_s" in summary:
        row["wall_time_s"] = summary["wall_time_s"]
    return row


def table(runs: list[Path], rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    header = ["metric", *[r.name for r in runs]]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"
        return str(v)

    body = [[k, *[cell(row.get(k, "-")) for row in rows]] for k in keys]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]) + "\n"


def plot(runs: list[Path], out: Path, *, metric: str = "loss") -> Path:
    """One PNG of every run's curve against step: `loss` (training, and validation dashed) or any
    logged metric such as `train/lr`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs:
        metrics = read_metrics(run)
        key = "train/loss" if metric == "loss" else metric
        points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        if not points:
            continue
        line = ax.plot(*zip(*points, strict=True), label=f"{run.name} {key}")[0]
        val = [(m["step"], m["val/loss"]) for m in metrics if "val/loss" in m] if metric == "loss" else []
        if val:
            ax.plot(*zip(*val, strict=True), "--", color=line.get_color(), label=f"{run.name} val/loss")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
