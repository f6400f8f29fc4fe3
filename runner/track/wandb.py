"""Weights & Biases: the resolved recipe as config, the recipe files as an artifact, every
metrics.jsonl record as a step, eval results in the summary and every scored sample as a table.
W&B never stops a run: if it cannot start online (no key, no network) the run goes on offline,
and if it cannot start at all, local logs carry on after one warning."""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..recipe.results import RunSummary


class Tracker:
    def __init__(self, recipe: Any, run_dir: Path, *, config: dict[str, Any], job_type: str,
                 log=lambda line: print(line, file=sys.stderr, flush=True), group: str | None = None,
                 tags: Sequence[str] = ()):
        self.run = None
        self.log_line = log
        spec = recipe.logging.wandb
        if spec.mode == "disabled":
            return
        id_file = run_dir / "wandb_id"
        kwargs = dict(
            project=spec.project, entity=spec.entity, group=spec.group or group or recipe.name,
            tags=list(dict.fromkeys([*spec.tags, *tags])),
            notes=spec.notes, name=run_dir.name, dir=str(run_dir), config=config, job_type=job_type,
            resume="allow",
        )
        try:
            import wandb

            run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(6)
            id_file.write_text(run_id + "\n")  # reused on resume: the same W&B run continues
            settings = wandb.Settings(silent=True, init_timeout=60)
            try:
                self.run = wandb.init(id=run_id, mode=spec.mode, settings=settings, **kwargs)
            except Exception as exc:  # noqa: BLE001 - online without key or network: go offline
                if spec.mode != "online":
                    raise
                log(f"wandb: online logging is off ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                    "logging offline instead (`wandb sync` uploads it later)")
                self.run = wandb.init(id=run_id, mode="offline", settings=settings, **kwargs)
        except Exception as exc:  # noqa: BLE001 - never let W&B stop a run
            log(f"wandb: off for this run ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "metrics.jsonl has everything")
            self.run = None

    def metrics(self, record: dict[str, Any]) -> None:
        if self.run is None:
            return
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float) and v is not None}
        try:
            self.run.log(values, step=int(record["step"]))
        except Exception as exc:  # noqa: BLE001
            self._off(exc)

    def results(self, summary: RunSummary) -> None:
        """The run's headline numbers (RunSummary.flat: losses, pass@k, APPS accuracies) in the
        W&B run summary, under the keys `ccrun compare --wandb` reads back."""
        if self.run is None:
            return
        try:
            for key, value in summary.flat().items():
                self.run.summary[key] = value
        except Exception as exc:  # noqa: BLE001
            self._off(exc)

    def recipe_artifact(self, name: str, files: dict[str, Path], *, metadata: dict[str, Any]) -> None:
        """The recipe files (the extends chain as written, overrides, the resolved form) as one
        artifact of type `recipe`, so a W&B run links to exactly what it ran."""
        if self.run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"recipe-{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}", type="recipe",
                                      metadata=metadata)
            for arcname, path in files.items():
                if Path(path).is_file():
                    artifact.add_file(str(path), name=arcname)
            self.run.log_artifact(artifact)
        except Exception as exc:  # noqa: BLE001
            self._off(exc)

    def eval_tables(self, eval_dir: Path) -> None:
        """eval/<name>/samples.jsonl as the table `eval/<name>/samples` (one row per completion with
        its verdict)."""
        if self.run is None or not eval_dir.is_dir():
            return
        try:
            import wandb

            tables = {}
            for samples in sorted(eval_dir.glob("*/samples.jsonl")):
                name = samples.parent.name
                rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line.strip()]
                columns = list(dict.fromkeys(k for row in rows for k in row))
                data = [[_cell(row.get(c)) for c in columns] for row in rows]
                tables[f"eval/{name}/samples"] = wandb.Table(columns=columns, data=data)
            if tables:
                self.run.log(tables)  # one step after the last training step
        except Exception as exc:  # noqa: BLE001
            self._off(exc)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            self._off(exc)
        self.run = None

    def _off(self, exc: Exception) -> None:
        self.log_line(f"wandb: off for the rest of this run ({type(exc).__name__}: {exc})")
        self.run = None


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are, anything nested as JSON text."""
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value)
