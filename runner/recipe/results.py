"""What a run achieved, typed once: the shape of `summary.json` (and `schemas/summary.schema.json`).

Every writer (the conductor, the evaluation suites) builds these models and every reader
(`ccrun compare`, the sweep table, the W&B summary, `ccrun runs`) reads them; nobody guesses
from the contents of a dict which part is which.

    RunSummary
      name, recipe_hash, status (running | succeeded | failed), error, wall_time_s
      train   TrainSummary: steps, resumed_from, latest_step, best (step, metric, value), weights_step
              (the step final/ and the evals use), final metrics (of the last step)
      evals   one SuiteResult per eval suite of the recipe, in recipe order, tagged by `suite`:
              loss       val_loss, val_perplexity, measured (training | eval), rows, batch_size
              humaneval  problems, pass_at_k, sampling (per sampling setting)
              apps       problems, pass_at_k, strict_accuracy, test_case_average, per_difficulty,
                         sampling (per sampling setting)

`flat()` is the one flat view of a summary (`train/loss`, `val/loss`, `humaneval/pass@1`,
`apps/strict_accuracy`, ...): the keys of the W&B run summary and of the `ccrun compare` table.
Like the rest of the recipe layer, this module imports no jax, flax, transformers or datasets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..common.errors import BadInput
from .schema_data import Difficulty


class Result(BaseModel):
    """Base of the result models: unknown keys are refused, so a reader never guesses."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BestCheckpoint(Result):
    """The checkpoint kept by `train.checkpoint.keep_best_by`."""

    step: int = Field(description="Optimizer step of the best checkpoint.")
    metric: str = Field(description="The metric it was chosen by (e.g. `val/loss`).")
    value: float | None = Field(None, description="Its value of that metric, when recorded.")


class TrainSummary(Result):
    """The training stage: how far it went and where it ended."""

    steps: int = Field(description="Optimizer steps of the run (from `train.steps` or `train.epochs`).")
    resumed_from: int | None = Field(None, description="The checkpoint step a resumed run continued from.")
    latest_step: int | None = Field(None, description="The step of the latest checkpoint.")
    best: BestCheckpoint | None = Field(None, description="The best checkpoint, when the recipe keeps one.")
    weights_step: int | None = Field(
        None, description="The step whose weights `final/` and every eval suite hold: the best checkpoint's when "
        "`train.checkpoint.keep_best_by` is set (as transformers' load_best_model_at_end), else the last step's.")
    final: dict[str, float] = Field(
        default_factory=dict, description="Metrics at the last step: `train/loss`, and `val/loss`, `val/perplexity` "
        "when there is validation data.")


class Scores(Result):
    """Generation scores of a set of problems."""

    problems: int = Field(description="Problems scored.")
    pass_at_k: dict[int, float] = Field(default_factory=dict, description="pass@k averaged over the problems.")
    omitted: dict[int, str] = Field(
        default_factory=dict, description="Each requested k left out, and why (too few samples per problem).")
    strict_accuracy: float | None = Field(
        None, description="APPS: fraction of problems whose first sample passes every test.")
    test_case_average: float | None = Field(
        None, description="APPS: mean over problems of the fraction of tests the first sample passes.")


class SamplingScores(Result):
    """The scores of one sampling setting of a suite."""

    setting: dict[str, Any] = Field(description="The sampling setting (temperature, top_p, top_k, n_samples, k).")
    overall: Scores
    per_difficulty: dict[Difficulty, Scores] = Field(default_factory=dict, description="APPS: per difficulty.")


class LossResult(Result):
    """A `loss` suite: validation loss and perplexity."""

    suite: Literal["loss"] = "loss"
    name: str
    val_loss: float
    val_perplexity: float
    measured: Literal["training", "eval"] = Field(
        description="`training`: the training's last validation measured the same thing and is reused; "
        "`eval`: a pass of its own.")
    rows: int | None = Field(None, description="Validation blocks scored (a pass of its own).")
    batch_size: int | None = Field(None, description="Rows per batch (a pass of its own).")


class GenerationResult(Result):
    """What every generation suite reports (HumanEval, APPS)."""

    name: str
    problems: int
    pass_at_k: dict[int, float] = Field(description="pass@k of every sampling setting, each k from the setting "
                                                    "that asked for it (the last one when two did).")
    sampling: list[SamplingScores]


class HumanEvalResult(GenerationResult):
    """A `humaneval` suite."""

    suite: Literal["humaneval"] = "humaneval"


class AppsResult(GenerationResult):
    """An `apps` suite. The headline accuracies are those of the first sampling setting."""

    suite: Literal["apps"] = "apps"
    strict_accuracy: float | None
    test_case_average: float | None
    per_difficulty: dict[Difficulty, Scores]


SuiteResult = Annotated[LossResult | HumanEvalResult | AppsResult, Field(discriminator="suite")]


class RunSummary(Result):
    """summary.json: rewritten as the run goes (status running → succeeded | failed)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="RunSummary")

    name: str = Field(description="The recipe's name.")
    recipe_hash: str = Field(description="The recipe hash (`ccrun resolve --hash`).")
    status: Literal["running", "succeeded", "failed"]
    error: str | None = Field(None, description="What stopped a failed run.")
    wall_time_s: float | None = Field(None, description="Seconds from the start of the run to its end.")
    train: TrainSummary | None = None
    evals: list[SuiteResult] = Field(default_factory=list, description="One entry per eval suite, in recipe order.")

    def suite(self, name: str) -> LossResult | HumanEvalResult | AppsResult | None:
        return next((e for e in self.evals if e.name == name), None)

    def flat(self) -> dict[str, float]:
        """Headline numbers under flat keys: `train/loss`, `val/loss` (the training's validation of
        the weights final/ holds, else the first loss suite's), `<suite>/pass@k`,
        `<apps suite>/strict_accuracy`, `<apps suite>/test_case_average`, and both per difficulty
        (`apps/introductory/strict_accuracy`, ...)."""
        out: dict[str, float] = {}
        final = self.train.final if self.train else {}
        for key in ("train/loss", "val/loss", "val/perplexity"):
            if key in final:
                out[key] = final[key]
        reused = next((e for e in self.evals if isinstance(e, LossResult) and e.measured == "training"), None)
        if reused is not None:  # the validation of the weights in use (the best checkpoint's, when kept)
            out["val/loss"], out["val/perplexity"] = reused.val_loss, reused.val_perplexity
        for e in self.evals:
            if isinstance(e, LossResult):
                out.setdefault("val/loss", e.val_loss)
                out.setdefault("val/perplexity", e.val_perplexity)
                if e.measured == "eval":
                    out[f"{e.name}/val_loss"] = e.val_loss
                continue
            out.update({f"{e.name}/pass@{k}": v for k, v in e.pass_at_k.items()})
            if isinstance(e, AppsResult):
                for key in ("strict_accuracy", "test_case_average"):
                    if getattr(e, key) is not None:
                        out[f"{e.name}/{key}"] = getattr(e, key)
                for difficulty, scores in e.per_difficulty.items():
                    for key in ("strict_accuracy", "test_case_average"):
                        if getattr(scores, key) is not None:
                            out[f"{e.name}/{difficulty}/{key}"] = getattr(scores, key)
        return out

    def generation(self) -> list[GenerationResult]:
        """The generation suites (HumanEval, APPS), in recipe order."""
        return [e for e in self.evals if isinstance(e, GenerationResult)]


def summary_schema() -> dict[str, Any]:
    """The JSON Schema of summary.json."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "summary.schema.json",
            **RunSummary.model_json_schema(mode="serialization")}


class SummaryError(BadInput):
    """A summary.json that cannot be read as a RunSummary."""


def read_summary(path: str | Path) -> RunSummary:
    """A run directory's summary.json, validated (SummaryError says what is wrong with it)."""
    from pydantic import ValidationError

    from ..common.io import read_bounded

    try:
        return RunSummary.model_validate_json(read_bounded(path, MAX_SUMMARY_BYTES))
    except OSError as exc:
        raise SummaryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise SummaryError(f"{path}: not a ccrun summary ({where}: {first['msg']})") from None
    except ValueError as exc:  # not a regular file, or too large
        raise SummaryError(f"{path}: cannot be read ({exc})") from None


MAX_SUMMARY_BYTES = 16 << 20  # a summary is a few kB; more is not one


def dump_summary(summary: RunSummary) -> str:
    return json.dumps(summary.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
