"""A recipe's generation suites (HumanEval, APPS): sample with the model, score in the sandbox,
write eval/<name>/samples.jsonl (every completion) and eval/<name>/results.json.

The loss suite needs the training data and is computed by the training stage's validation.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ..data.apps import apps_prompt, fn_name_of
from ..recipe.results import AppsResult, HumanEvalResult, SamplingScores, Scores
from ..recipe.schema_eval import AppsEval, HumanEvalEval
from . import apps as apps_scoring
from . import humaneval
from .sample import Sampling, complete


def _progress(name: str, total: int):
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"sample {name}", unit="problem")

    def update(done: int) -> None:
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _sample_all(spec: Any, model: Any, tokenizer: Any, prompts: list[str], ids: list[str], seed: int) -> list[dict]:
    """Every sampling setting of the suite: rows {task_id, completion, sampling, sample}."""
    rows = []
    for index, setting in enumerate(spec.sampling):
        sampling = Sampling(temperature=setting.temperature, top_p=setting.top_p, top_k=setting.top_k,
                            max_new_tokens=spec.max_new_tokens)
        completions = complete(model, tokenizer, prompts, n=setting.n_samples, sampling=sampling, stop=spec.stop,
                               seed=seed + index, batch_size=spec.batch_size,
                               progress=_progress(f"{spec.name}[{index}]", len(prompts)))
        for task_id, samples in zip(ids, completions, strict=True):
            rows.extend({"task_id": task_id, "completion": c, "sampling": index, "sample": j}
                        for j, c in enumerate(samples))
    return rows


def run_humaneval(spec: HumanEvalEval, model: Any, tokenizer: Any, sandbox: Any, *, seed: int,
                  workers: int) -> tuple[list[dict], dict]:
    problems = humaneval.load_problems()
    ids = sorted(problems, key=lambda t: int(t.split("/")[1]))[: spec.limit]
    rows = _sample_all(spec, model, tokenizer, [problems[t]["prompt"] for t in ids], ids, seed)
    scored_all, results = [], {"suite": "humaneval", "problems": len(ids), "sampling": []}
    for index, setting in enumerate(spec.sampling):
        part = [r for r in rows if r["sampling"] == index]
        scored, summary = humaneval.score(part, problems, sandbox, timeout_s=spec.timeout_s, workers=workers,
                                          ks=setting.k, progress=sys.stderr.isatty())
        scored_all += scored
        results["sampling"].append({"setting": setting.model_dump(mode="json"), **summary})
    results["pass_at_k"] = {k: v for s in results["sampling"] for k, v in s["pass_at_k"].items()}
    return scored_all, results


def load_apps(spec: AppsEval) -> list[dict]:
    from ..data.apps import read_problems

    return read_problems(spec.path, hub=spec.hub, split=spec.split, difficulties=spec.difficulties, limit=spec.limit,
                         where=f"evals: {spec.name}")


def run_apps(spec: AppsEval, model: Any, tokenizer: Any, sandbox: Any, *, seed: int, workers: int) -> tuple[list[dict], dict]:
    problems = apps_scoring.problems_by_id(load_apps(spec))
    ids = list(problems)
    prompts = [apps_prompt(p["question"], p.get("starter_code"), fn_name_of(p.get("input_output")), spec.prompt)
               for p in problems.values()]
    rows = _sample_all(spec, model, tokenizer, prompts, ids, seed)
    scored_all, results = [], {"suite": "apps", "problems": len(ids), "sampling": []}
    for index, setting in enumerate(spec.sampling):
        part = [r for r in rows if r["sampling"] == index]
        scored, summary = apps_scoring.score(part, problems, sandbox, timeout_s=spec.timeout_s, workers=workers,
                                             ks=setting.k)
        scored_all += scored
        results["sampling"].append({"setting": setting.model_dump(mode="json"), **summary})
    return scored_all, results


def _scores(block: dict[str, Any]) -> Scores:
    """One block of a results.json (overall or a difficulty) as Scores."""
    keys = ("problems", "pass_at_k", "omitted", "strict_accuracy", "test_case_average")
    return Scores(**{k: block[k] for k in keys if k in block})


def suite_result(name: str, results: dict[str, Any]) -> HumanEvalResult | AppsResult:
    """The summary entry of a generation suite, from its results.json."""
    merged: dict[Any, float] = {}
    sampling = []
    for part in results["sampling"]:
        if results["suite"] == "humaneval":
            overall = _scores({"problems": results["problems"], **part})
            per_difficulty = {}
        else:
            overall = _scores(part["overall"])
            per_difficulty = {d: _scores(part[d]) for d in apps_scoring.DIFFICULTIES if part.get(d, {}).get("problems")}
        merged.update(overall.pass_at_k)
        sampling.append(SamplingScores(setting=part["setting"], overall=overall, per_difficulty=per_difficulty))
    if results["suite"] == "humaneval":
        return HumanEvalResult(name=name, problems=results["problems"], pass_at_k=merged, sampling=sampling)
    head = sampling[0] if sampling else None
    return AppsResult(name=name, problems=results["problems"], pass_at_k=merged,
                      strict_accuracy=head.overall.strict_accuracy if head else None,
                      test_case_average=head.overall.test_case_average if head else None,
                      per_difficulty=head.per_difficulty if head else {}, sampling=sampling)


def run_evals(recipe: Any, model: Any, tokenizer: Any, out_dir: str | Path, *, workers: int = 2,
              sandbox: Any = None) -> list[HumanEvalResult | AppsResult]:
    """Every generation suite of the recipe into out_dir/<name>/; returns their summary entries
    in recipe order. A suite whose results.json exists (a resumed run) is read, not run again."""
    from ..common.io import atomic_write
    from .sandbox import Sandbox

    if sandbox is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sandbox = Sandbox()
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    out = []
    for spec in recipe.evals:
        if spec.suite == "loss":
            continue  # computed with the training data by the training stage
        done = Path(out_dir) / spec.name / "results.json"
        if done.is_file():  # already evaluated (a resumed run): keep it
            out.append(suite_result(spec.name, json.loads(done.read_text())))
            continue
        run = run_humaneval if spec.suite == "humaneval" else run_apps
        scored, results = run(spec, model, tokenizer, sandbox, seed=recipe.seed, workers=workers)
        target = Path(out_dir) / spec.name
        target.mkdir(parents=True, exist_ok=False)
        atomic_write(target / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in scored))
        atomic_write(target / "results.json", json.dumps(results, indent=2) + "\n")
        out.append(suite_result(spec.name, results))
    return out
