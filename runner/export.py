"""`ccrun export`: a run directory as a Hugging Face model directory, with a model card, and its
push to the hub.

  export_run    final/ (copied byte for byte, a LoRA run's adapter/ too) or a checkpoint (best |
                latest, saved as final/ is)
                into a new directory, with README.md: the model card
  model_card    the card: front matter the hub reads (library_name, tags, datasets, base_model,
                model-index with the eval results), then the results, training metrics, data
                manifest summary, the resolved recipe and its provenance
  push_to_hub   create_repo(exist_ok) + upload_folder through huggingface_hub

The directory is written beside OUT under a temporary name and renamed into place at the end, so
a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .common.clock import duration
from .common.errors import BadInput, CcrunError
from .recipe.base import looks_local
from .recipe.results import AppsResult, GenerationResult, RunSummary
from .track.rundir import RunDir

CARD = "README.md"
ADAPTER = "adapter"  # final/adapter/: a LoRA run's adapters (runner.model.hf.save_pretrained)
# model-index dataset ids of the suites (the hub's names of the benchmarks)
BENCHMARKS = {"humaneval": ("openai_humaneval", "HumanEval"), "apps": ("codeparrot/apps", "APPS")}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PushFailed(CcrunError):
    """The hub could not be reached or refused the upload (the export itself is kept). Exit 1."""


@dataclass(frozen=True)
class Weights:
    """Which weights an export holds: final/ (`source` "final") or a checkpoint ("best" | "latest")."""

    source: str
    step: int | None


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, *,
               checkpoint: Literal["best", "latest"] | None = None, repo: str | None = None) -> Path:
    """Write `run_dir`'s model (its final/ export, or a checkpoint) with its tokenizer and a model
    card into `out` (new, or empty). The card's usage example loads `repo` (a hub id), else `out`.
    Returns `out`."""
    run = RunDir.open(run_dir)
    loaded = run.recipe()
    summary = run.summary()
    out = Path(out)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if checkpoint is None:
            weights = _copy_final(run, summary, work)
        else:
            weights = _save_checkpoint(run, loaded.recipe, checkpoint, work)
        card = model_card(run, loaded.recipe, summary, weights, where=repo or str(out))
        (work / CARD).write_text(card, encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # checked empty by the caller; a file that appeared since makes this fail
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _copy_final(run: RunDir, summary: RunSummary | None, work: Path) -> Weights:
    final = run.file("final")
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (final / f).is_file()]
    if missing:
        raise BadInput(f"{run.path}: no complete final/ export (missing {', '.join(missing)}); "
                       f"export a checkpoint with --checkpoint latest")
    for path in sorted(final.iterdir()):
        if path.is_file() and path.name != CARD:
            shutil.copy2(path, work / path.name)
    if (final / ADAPTER).is_dir():  # a LoRA run: its adapters in PEFT's format, beside the merged model
        shutil.copytree(final / ADAPTER, work / ADAPTER, symlinks=False)
    step = summary.train.weights_step if summary and summary.train else None
    return Weights("final", step)


def _save_checkpoint(run: RunDir, recipe: Any, which: str, work: Path) -> Weights:
    from .model import save_pretrained
    from .train.checkpoint import ModelMissing, load_run_model, select_step

    if not run.file("checkpoints").is_dir():
        raise ModelMissing(f"{run.path}: no checkpoints/ to export (the run's final/ export: leave out --checkpoint)")
    spec = recipe.train.checkpoint if recipe.train else None
    step = select_step(run.file("checkpoints"), which, spec.keep_best_by if spec else None,
                       spec.mode if spec else "min")
    model, tokenizer = load_run_model(run.path, recipe, checkpoint=which)
    save_pretrained(model, work, base_model=recipe.model.adapter_base)  # a LoRA checkpoint: merged, and adapter/
    tokenizer.save_pretrained(str(work))
    return Weights(which, step)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _datasets(recipe: Any) -> list[str]:
    """Hub dataset ids the recipe trained on (local files have none)."""
    found: list[str] = []
    for source in recipe.data.sources if recipe.data else ():
        name = getattr(source, "name", None) if source.type == "hf" else (
            source.hub if source.type == "apps" and source.path is None else None)
        if name and name not in found:
            found.append(name)
    return found


def _results(run: RunDir, summary: RunSummary | None, weights: Weights) -> tuple[list[GenerationResult], str]:
    """The generation suites' results of the exported weights, and a sentence saying where they come from."""
    if weights.source != "final":
        from .evals.suites import suite_result

        own = []
        for path in sorted(run.file(f"eval-{weights.source}").glob("*/results.json")):
            data = _read_json(path)
            if data is not None and data.get("suite") in BENCHMARKS:
                own.append(suite_result(path.parent.name, data))
        if own:
            return own, f"From `ccrun eval --checkpoint {weights.source}` (eval-{weights.source}/)."
        trained = summary.train if summary else None
        if not (trained and trained.weights_step is not None and trained.weights_step == weights.step):
            return [], (f"The run's evaluations are of other weights (step "
                        f"{trained.weights_step if trained else '?'}); `ccrun eval RUN_DIR --checkpoint "
                        f"{weights.source}` evaluates this checkpoint.")
    return (summary.generation() if summary else []), "From the run's summary.json."


def _model_index(name: str, results: list[GenerationResult]) -> list[dict[str, Any]]:
    entries = []
    for result in results:
        dataset, pretty = BENCHMARKS[result.suite]
        metrics = [{"type": f"pass@{k}", "name": f"pass@{k}", "value": round(v, 6)}
                   for k, v in sorted(result.pass_at_k.items())]
        if isinstance(result, AppsResult):
            metrics += [{"type": key, "name": key.replace("_", " "), "value": round(getattr(result, key), 6)}
                        for key in ("strict_accuracy", "test_case_average") if getattr(result, key) is not None]
        entries.append({"task": {"type": "text-generation", "name": "Code generation"},
                        "dataset": {"type": dataset, "name": pretty}, "metrics": metrics})
    return [{"name": name, "results": entries}] if entries else []


def model_card(run: RunDir, recipe: Any, summary: RunSummary | None, weights: Weights, *, where: str) -> str:
    """README.md of the exported directory (a Hugging Face model card); its usage example loads `where`."""
    import yaml

    from . import __version__

    provenance = _read_json(run.file("provenance.json")) or {}
    manifest = _read_json(run.file("data", "manifest.json"))
    results, origin = _results(run, summary, weights)
    checkpoint = recipe.model.checkpoint
    base = checkpoint if recipe.model.init == "pretrained" and checkpoint and not looks_local(checkpoint) \
        and HUB_ID.match(checkpoint) else None
    front: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation",
                             "tags": ["ccrun", "code", recipe.model.arch, "jax", "flax"]}
    if base:
        front["base_model"] = base
    if datasets := _datasets(recipe):
        front["datasets"] = datasets
    if index := _model_index(recipe.name, results):
        front["model-index"] = index

    held = {"final": "the run's final/ export"}.get(weights.source, f"the {weights.source} checkpoint")
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {recipe.name}", ""]
    if recipe.description:
        lines += [" ".join(recipe.description.split()), ""]
    lines += [f"A {recipe.model.arch} model trained with ccrun from the recipe below"
              + (f", starting from [{base}](https://huggingface.co/{base})" if base else "")
              + f". These weights are {held}" + (f" (step {weights.step})" if weights.step is not None else "") + ".",
              "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f"model = AutoModelForCausalLM.from_pretrained({where!r})",
              f"tokenizer = AutoTokenizer.from_pretrained({where!r})", "```", ""]

    lines += ["## Evaluation results", ""]
    if results:
        lines += [origin, "", "| suite | problems | metric | value |", "| --- | --- | --- | --- |"]
        for result in results:
            rows = [(f"pass@{k}", v) for k, v in sorted(result.pass_at_k.items())]
            if isinstance(result, AppsResult):
                rows += [(key.replace("_", " "), getattr(result, key)) for key in ("strict_accuracy", "test_case_average")
                         if getattr(result, key) is not None]
            suite = result.name if result.name == result.suite else f"{result.name} ({result.suite})"
            lines += [f"| {suite} | {result.problems} | {metric} | {value:.4f} |" for metric, value in rows]
    else:
        lines.append(origin if weights.source != "final" and origin.startswith("The run's") else
                     "No HumanEval or APPS suite was run.")
    lines.append("")

    lines += ["## Training", ""]
    if summary is None:
        lines += ["The run has no summary.json.", ""]
    else:
        flat = summary.flat()
        rows = [("status", summary.status)]
        if summary.train:
            rows.append(("steps", str(summary.train.steps)))
            if summary.train.best:
                b = summary.train.best
                rows.append(("best checkpoint", f"step {b.step} by {b.metric}"
                             + (f" ({b.value:.4f})" if b.value is not None else "")))
        rows += [(key, f"{flat[key]:.4f}") for key in ("train/loss", "val/loss", "val/perplexity") if key in flat]
        if summary.wall_time_s is not None:
            rows.append(("wall time", duration(summary.wall_time_s)))
        lines += ["| metric | value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""]
        if summary.train and summary.train.final:
            lines += ["`train/loss` is the last step's; `val/*` are those of the weights final/ holds.", ""]

    lines += ["## Data", ""]
    if manifest is not None:
        from .data import describe

        try:
            text = describe(manifest)
        except (KeyError, TypeError, ValueError, AttributeError):
            text = json.dumps({k: manifest[k] for k in ("documents", "tokens") if k in manifest}, indent=2)[:4000]
        lines += ["The data stage's manifest (data/manifest.json of the run):", "", "```text", text, "```", ""]
    else:
        lines += ["The run has no data stage (no data/manifest.json).", ""]

    resolved = run.file("resolved.yaml").read_text(encoding="utf-8")
    lines += ["## Recipe", "", "The resolved recipe (every default filled, `extends` merged):", "",
              "```yaml", resolved.rstrip(), "```", ""]

    git = provenance.get("git") or {}
    sha = git.get("sha")
    lines += ["## Provenance", "",
              f"- ccrun version (run): {provenance.get('ccrun_version', 'unknown')}; exported with {__version__}",
              f"- git sha: {sha or 'unknown'}" + (" with uncommitted changes (the run directory keeps them: git.diff)"
                                                  if git.get("dirty") else ""),
              f"- recipe hash: {(summary.recipe_hash if summary else provenance.get('recipe_hash')) or 'unknown'}",
              f"- created: {provenance.get('created_utc', 'unknown')}",
              f"- run directory: {run.path.name}", ""]
    return "\n".join(lines)


def check_repo_id(repo: str) -> str:
    """A hub repository id (`user/name`), checked before anything is written; offline mode refused."""
    from huggingface_hub import constants
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except ValueError as exc:
        raise BadInput(f"--push-to-hub {repo!r}: not a hub repository id ({exc})") from None
    if "/" not in repo:
        raise BadInput(f"--push-to-hub {repo!r}: give the owner too, as USER/NAME or ORG/NAME")
    if constants.is_offline_mode():
        raise BadInput("--push-to-hub: the hub is offline here (HF_HUB_OFFLINE is set); "
                       "unset it to push, or push the directory later (nothing was written)")
    return repo


def push_to_hub(folder: str | os.PathLike, repo: str, *, private: bool | None = None) -> str:
    """Upload `folder` as the model repository `repo` (created when missing). Returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi()
    later = f"the export is kept in {folder}; push it later with `hf upload {repo} {folder}`"
    try:
        url = api.create_repo(repo, repo_type="model", exist_ok=True, private=private)
        api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                          commit_message="ccrun export")
    except OfflineModeIsEnabled:
        raise PushFailed("--push-to-hub: the hub is offline here (HF_HUB_OFFLINE is set)", hint=later) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        why = {401: "not logged in (`hf auth login`, or HF_TOKEN)", 403: "not allowed to write there"}.get(
            status, " ".join(str(exc).split())[:200])
        raise PushFailed(f"--push-to-hub {repo}: {why}", hint=later) from None
    except Exception as exc:
        # the hub cannot be reached (connection refused, DNS, timeout): an OSError, or the
        # TransportError of the HTTP client huggingface_hub uses (httpx, or its fork httpx2)
        if not isinstance(exc, OSError) and "TransportError" not in {c.__name__ for c in type(exc).__mro__}:
            raise
        raise PushFailed(f"--push-to-hub {repo}: the hub cannot be reached ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]})", hint=later) from None
    return str(getattr(url, "url", url))
