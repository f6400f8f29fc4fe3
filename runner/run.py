"""The conductor: a resolved recipe becomes a run directory, then each stage in order.

  create_run_dir / shared_run_dir   claim a run directory and write what was asked and what it meant
  execute / execute_in              data → model → train → evals → final/ → summary.json (a RunSummary)
  eval_target                       what `ccrun eval` evaluates (a run directory or a recipe)
  reproduce                         a finished run's recipe again, every logged metric compared
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .common.errors import BadInput, CcrunError, RunFailed
from .common.io import atomic_write, write_json
from .common.procs import broadcast_flag, broadcast_text, is_primary
from .recipe.load import Loaded, load_recipe
from .recipe.results import BestCheckpoint, LossResult, RunSummary, TrainSummary, dump_summary
from .recipe.resolve import recipe_hash, to_yaml
from .recipe.yamlio import dump
from .track.rundir import PLAN_FILE, RunDir, git_state, provenance

Log = Callable[[str], None]


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def create_run_dir(loaded: Loaded, *, runs_root: str | Path = "runs", argv: list[str] | None = None,
                   sweep: dict | None = None, label: str | None = None, plan: dict | None = None) -> RunDir:
    """Resolve and claim a fresh run directory holding what was asked and what it meant. A sweep
    point ({"group", "index", "point"}) is kept in sweep.json; `label` ends the directory's name;
    `plan` (runner.plan) goes to plan.json, with the directory's path in it."""
    recipe = loaded.recipe
    assert recipe is not None, "fragments do not run"
    digest = recipe_hash(recipe)
    run = RunDir.create(runs_root, recipe.name, digest, label=label)
    if sweep:
        write_json(run.file("sweep.json"), sweep)
    if plan is not None:
        plan["run_dir"] = str(run.path)
        write_json(run.file(PLAN_FILE), plan)
    git = git_state(loaded.files[0].parent) or git_state(Path(__file__).resolve().parent)
    # Provenance first: whatever happens next, the directory says how it came to be.
    write_json(
        run.file("provenance.json"),
        provenance(
            recipe_hash=digest,
            seed=recipe.seed,
            files=loaded.files,
            argv=list(sys.argv if argv is None else argv),
            git=git,
            devices=None,  # probed by the stages that use devices; the recipe layer imports no jax
        ),
    )
    if git is not None and git["dirty"]:
        atomic_write(run.file("git.diff"), git["diff"])
    atomic_write(run.file("recipe.yaml"), loaded.files[0].read_text(encoding="utf-8"))
    atomic_write(run.file("overrides.yaml"), dump(loaded.overrides) if loaded.overrides else "{}\n")
    atomic_write(run.file("resolved.yaml"), to_yaml(recipe))
    return run


def shared_run_dir(loaded: Loaded, *, runs_root: str | Path = "runs", sweep: dict | None = None,
                   label: str | None = None, plan: dict | None = None) -> RunDir:
    """`create_run_dir` on process 0; every other process of a jax.distributed run gets the
    same directory (without writing to it)."""
    if not is_primary():
        path = broadcast_text(None)
        if not path:
            raise FollowerError("process 0 could not create the run directory (its output says why)")
        return RunDir(Path(path))
    try:
        run = create_run_dir(loaded, runs_root=runs_root, sweep=sweep, label=label, plan=plan)
    except BaseException:
        broadcast_text("")
        raise
    broadcast_text(str(run.path))
    return run


def _write_summary(run: RunDir, summary: RunSummary) -> RunSummary:
    """summary.json, rewritten as the run goes (status: running → succeeded | failed)."""
    atomic_write(run.file("summary.json"), dump_summary(summary), overwrite=True)
    return summary


def _record_devices(run: RunDir) -> None:
    """Add the devices to provenance.json once jax is up (the dry run never imports it)."""
    import jax

    path = run.file("provenance.json")
    prov = json.loads(path.read_text())
    prov["devices"] = [{"id": d.id, "platform": d.platform, "kind": d.device_kind, "process": d.process_index}
                       for d in jax.devices()]
    prov["process_count"] = jax.process_count()
    write_json(path, prov, overwrite=True)


def _data_outputs(run: RunDir, recipe):
    """(token blocks, tokenizer) the data stage wrote into the run directory. A streaming recipe's
    `train` is its stream (runner/data/stream.py), the blocks made while training."""
    from datasets import load_from_disk

    from .data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(run.file("data", "tokenizer"))
    if not recipe.data.streaming:
        return load_from_disk(str(run.file("data", "tokens"))), tokenizer
    from .data.stream import open_stream

    tokens = dict(load_from_disk(str(run.file("data", "tokens")))) if run.file("data", "tokens").is_dir() else {}
    tokens["train"] = open_stream(recipe, run.file("data"))
    return tokens, tokenizer


def _recipe_files(loaded: Loaded, run: RunDir) -> dict[str, Path]:
    """The files a run came from, named for the recipe artifact: the extends chain relative to
    the directory they share, then the run directory's overrides.yaml and resolved.yaml."""
    import os

    files = [Path(f).resolve() for f in loaded.files]
    common = Path(os.path.commonpath([f.parent for f in files])) if files else Path("/")
    named = {f"recipe/{f.relative_to(common).as_posix()}": f for f in files}
    named.update({name: run.file(name) for name in ("overrides.yaml", "resolved.yaml")})
    return named


def execute(loaded: Loaded, run: RunDir, *, log: Log | None = None) -> RunSummary:
    """data → model → train → evals → final/ in `run`; returns the summary. A failure marks
    summary.json `failed` with the error and re-raises, leaving everything written so far.

    Resuming (the same `run` again): a stage whose output is complete is read, not redone (data,
    training up to its latest checkpoint, each eval suite's results.json, final/); a run that
    succeeded is returned as it is, without writing a byte."""
    import time

    finished = _succeeded(run)
    if finished is not None:
        return finished
    if not is_primary():
        return _follow(loaded, run)
    log = log or stderr_line
    recipe = loaded.recipe
    started = time.time()
    summary = _write_summary(run, RunSummary(name=recipe.name, status="running", recipe_hash=recipe_hash(recipe)))
    tracker = _tracker(loaded, run, log)
    try:
        model, tokenizer, tokens = _build(recipe, run, log)
        train_summary = None
        if recipe.train is not None:
            from .train import train

            trained = train(recipe, model, tokens, run.path, log=log, on_metrics=tracker.metrics)
            train_summary = _train_summary(recipe, trained, run.metrics())
            final = train_summary.final
            log(f"train: {train_summary.steps} steps, loss {final.get('train/loss', float('nan')):.4f}"
                + (f", val loss {final['val/loss']:.4f}" if "val/loss" in final else ""))
            if train_summary.best is not None and train_summary.weights_step != train_summary.steps:
                log(f"train: final/ and the evals use the best checkpoint, step {train_summary.best.step} "
                    f"({train_summary.best.metric} {train_summary.best.value})")
        losses = {}
        for spec in (e for e in recipe.evals if e.suite == "loss"):
            done = run.file("eval", spec.name, "results.json")
            if done.is_file():  # resuming: measured before
                losses[spec.name] = LossResult.model_validate_json(done.read_bytes())
                continue
            losses[spec.name] = loss = _loss_suite(recipe, spec, model, tokens, train_summary, run.metrics())
            run.file("eval", spec.name).mkdir(parents=True, exist_ok=True)
            write_json(done, loss.model_dump(mode="json"))
            log(f"eval {spec.name}: val loss {loss.val_loss:.4f}, perplexity {loss.val_perplexity:.2f}")
        if recipe.train is not None:  # resuming: only what is missing is drawn; nothing drawn is replaced
            from .track.compare import plot

            for name, metric in (("loss.png", "loss"), ("lr.png", "train/lr")):
                if not run.file("plots", name).is_file():
                    plot([run.path], run.file("plots", name), metric=metric, exclusive=True)
        if not all(run.file("final", f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
            from .model import save_pretrained

            save_pretrained(model, run.file("final"), base_model=recipe.model.adapter_base)  # LoRA: merged + adapter/
            tokenizer.save_pretrained(str(run.file("final")))
        if recipe.model.lora is not None:
            from .model.lora import merge_lora

            merge_lora(model)  # the evals sample from final/'s weights: no adapter matmuls per token
        generated = {}
        if any(e.suite != "loss" for e in recipe.evals):
            import shutil

            from .evals.suites import run_evals

            for spec in recipe.evals:  # resuming: a suite that did not finish starts over
                partial = run.file("eval", spec.name)
                if spec.suite != "loss" and partial.exists() and not (partial / "results.json").is_file():
                    shutil.rmtree(partial)
            for result in run_evals(recipe, model, tokenizer, run.file("eval")):
                generated[result.name] = result
                log(f"eval {result.name}: {eval_line(result)}")
        evals = [losses.get(spec.name) or generated[spec.name] for spec in recipe.evals]
        summary = _write_summary(run, summary.model_copy(update=dict(
            status="succeeded", train=train_summary, evals=evals, wall_time_s=round(time.time() - started, 1))))
        tracker.results(summary)
        tracker.eval_tables(run.file("eval"))
        tracker.finish()
        return summary
    except BaseException as exc:
        _write_summary(run, summary.model_copy(update=dict(
            status="failed", error=f"{type(exc).__name__}: {exc}", wall_time_s=round(time.time() - started, 1))))
        tracker.finish(exit_code=1)
        raise


def eval_line(result) -> str:
    """A generation suite's headline: `pass@1 0.0100, pass@5 0.0300`, and for APPS the strict
    accuracy and test-case average, overall and per difficulty (strict/tests)."""
    from .recipe.results import AppsResult

    parts = [f"pass@{k} {v:.4f}" for k, v in result.pass_at_k.items()]
    if isinstance(result, AppsResult) and None not in (result.strict_accuracy, result.test_case_average):
        parts.append(f"strict accuracy {result.strict_accuracy:.4f}, test-case average {result.test_case_average:.4f}")
        by = [f"{d} {s.strict_accuracy:.4f}/{s.test_case_average:.4f}" for d, s in result.per_difficulty.items()
              if s.strict_accuracy is not None and s.test_case_average is not None]
        if by:
            parts[-1] += f" ({', '.join(by)} strict/tests)"
    return ", ".join(parts)


def _succeeded(run: RunDir) -> RunSummary | None:
    """The summary of a run that already succeeded (resuming it changes nothing), else None."""
    from .recipe.results import read_summary

    path = run.file("summary.json")
    if not path.is_file() or '"succeeded"' not in path.read_text(encoding="utf-8", errors="replace"):
        return None
    summary = read_summary(path)
    return summary if summary.status == "succeeded" else None


def _tracker(loaded: Loaded, run: RunDir, log: Log):
    """W&B for this run: the resolved recipe (and ccrun's version, git sha, sweep) as config, the
    recipe files as an artifact."""
    from .recipe.resolve import resolved_dict
    from .track.wandb import Tracker

    recipe = loaded.recipe
    provenance_file = run.file("provenance.json")
    prov = json.loads(provenance_file.read_text()) if provenance_file.is_file() else {}
    config = {**resolved_dict(recipe), "ccrun": {"recipe_hash": recipe_hash(recipe), "version": prov.get("ccrun_version"),
                                                 "git_sha": (prov.get("git") or {}).get("sha")}}
    sweep = json.loads(run.file("sweep.json").read_text()) if run.file("sweep.json").is_file() else None
    if sweep:
        config["ccrun"]["sweep"] = sweep
    tracker = Tracker(recipe, run.path, config=config, job_type="train" if recipe.train else "eval", log=log,
                      group=sweep["group"] if sweep else None, tags=["sweep"] if sweep else [])
    tracker.recipe_artifact(recipe.name, _recipe_files(loaded, run), metadata=config["ccrun"])
    return tracker


def _build(recipe, run: RunDir, log: Log):
    """(model, tokenizer, token blocks or None): the data stage (or its earlier output when
    resuming), then the model. Other processes wait on process 0's word after each step."""
    from .data.tokenizer import build_tokenizer
    from .model import build_model

    tokens = None
    if recipe.data is not None:
        from .data import describe, prepare_data

        try:
            if run.file("data", "manifest.json").is_file():  # resuming: the data stage finished before
                manifest = json.loads(run.file("data", "manifest.json").read_text())
                log(f"data: reused ({'streaming' if manifest.get('streaming') else manifest['cache_key'][:12]})")
            else:
                manifest = prepare_data(recipe, run.file("data"))
                for line in describe(manifest).splitlines():
                    log(f"data: {line}")
        except BaseException:
            broadcast_flag(False)  # the other processes stop too
            raise
        broadcast_flag(True)  # the other processes read the data this one wrote
        tokens, tokenizer = _data_outputs(run, recipe)
    else:
        tokenizer = build_tokenizer(recipe.tokenizer)
    try:
        model = build_model(recipe.model, tokenizer=tokenizer, seed=recipe.seed)
    except BaseException:
        broadcast_flag(False)
        raise
    broadcast_flag(True)
    _record_devices(run)
    c = model.config
    log(f"model: {recipe.model.arch} {recipe.model.init}, {c.n_layer} layers, d_model {c.d_model}, "
        f"{c.num_params() / 1e6:.2f}M parameters")
    if recipe.model.lora is not None:
        from .model.lora import count_lora_params

        lora = recipe.model.lora
        log(f"model: LoRA rank {lora.rank}, alpha {lora.alpha:g} on {', '.join(lora.targets)}: "
            f"{count_lora_params(model) / 1e6:.3f}M trainable parameters, the base frozen")
    return model, tokenizer, tokens


def _train_summary(recipe, trained: dict, metrics: list[dict]) -> TrainSummary:
    """The training stage's summary; the best checkpoint's metric value comes from the logged metrics."""
    best = None
    metric = recipe.train.checkpoint.keep_best_by
    if metric is not None and trained.get("best_step") is not None:
        value = next((m[metric] for m in metrics if m.get("step") == trained["best_step"] and metric in m), None)
        best = BestCheckpoint(step=trained["best_step"], metric=metric, value=value)
    return TrainSummary(steps=trained["steps"], resumed_from=trained.get("resumed_from"),
                        latest_step=trained.get("latest_step"), best=best, final=trained["final"],
                        weights_step=trained.get("weights_step", trained["steps"]))


def _loss_suite(recipe, spec, model, tokens, trained: TrainSummary | None, metrics: list[dict]) -> LossResult:
    """A loss suite's results: the training's validation of the weights in use (the last step's,
    or the best checkpoint's) when it measured the same thing (all validation blocks, in
    micro-batches), else a pass of its own over the validation blocks."""
    measured = {}
    if trained is not None:
        at = [m for m in metrics if m.get("step") == trained.weights_step and "val/loss" in m]
        measured = at[-1] if at else trained.final if trained.weights_step == trained.steps else {}
    same = spec.max_batches is None and spec.batch_size in (None, recipe.train.micro_batch_size if recipe.train else None)
    if same and "val/loss" in measured:
        return LossResult(name=spec.name, val_loss=measured["val/loss"], val_perplexity=measured["val/perplexity"],
                          measured="training")
    from .train.loop import loss_eval

    out = loss_eval(recipe, spec, model, tokens["validation"])
    return LossResult(name=spec.name, val_loss=out["val/loss"], val_perplexity=out["val/perplexity"], measured="eval",
                      rows=out["rows"], batch_size=out["batch_size"])


class FollowerError(RunFailed):
    """Process 0 of a multi-process run failed before training; this process stops too."""


def _follow(loaded: Loaded, run: RunDir) -> RunSummary:
    """A process other than 0 under jax.distributed: it computes its part of training and writes
    only its checkpoint shards; process 0 writes everything else (run directory files, metrics,
    W&B, final/, evals). The collective calls mirror `execute`'s, in the same order."""
    from .data.tokenizer import build_tokenizer
    from .model import build_model

    recipe = loaded.recipe
    tokens = None
    if recipe.data is not None:
        if not broadcast_flag(True):
            raise FollowerError("process 0 failed in the data stage (its output says why)")
        tokens, tokenizer = _data_outputs(run, recipe)
    else:
        tokenizer = build_tokenizer(recipe.tokenizer)
    model = build_model(recipe.model, tokenizer=tokenizer, seed=recipe.seed)
    if not broadcast_flag(True):
        raise FollowerError("process 0 failed to build the model (its output says why)")
    summary = RunSummary(name=recipe.name, recipe_hash=recipe_hash(recipe), status="running")
    if recipe.train is None:
        return summary
    from .train import train

    trained = train(recipe, model, tokens, run.path)
    return summary.model_copy(update=dict(train=_train_summary(recipe, trained, [])))  # metrics: process 0's


def eval_target(target: Path, overrides: Sequence[str] = (), *, checkpoint: str | None = None
                ) -> tuple[Loaded, RunDir | None, str]:
    """What `ccrun eval TARGET` evaluates and where the results go: a run directory (its recipe;
    its eval/, or eval-<checkpoint>/ for `--checkpoint best|latest`, so evaluating the other
    checkpoint never overwrites the run's own evals) or a recipe (a new run directory is made once
    the model loads; results in its eval/). Bad targets are BadInput."""
    if target.is_dir():
        run = RunDir.open(target)
        loaded = run.recipe(overrides)
    else:
        run, loaded = None, load_recipe(target, overrides)
        if checkpoint is not None:
            raise BadInput("--checkpoint applies to a run directory, not a recipe")
        model, tokenizer = loaded.recipe.model, loaded.recipe.tokenizer
        if model.init == "scratch" and tokenizer.train is not None:
            raise BadInput(f"{target}: the model is trained from scratch and the tokenizer in the data stage, so there "
                           f"is nothing to evaluate yet: `ccrun run {target}`, then `ccrun eval RUN_DIR`")
    suites = [e for e in loaded.recipe.evals if e.suite != "loss"]
    if not suites:
        raise BadInput(f"{target}: the recipe has no humaneval or apps suite to run")
    if run is None:  # a recipe: its checkpoint, tokenizer and problems, before a run directory is made
        from .preflight import require

        require([loaded.recipe], ("model", "evals"))
    out = "eval" if checkpoint is None else f"eval-{checkpoint}"
    for spec in suites:
        if run is not None and run.file(out, spec.name).exists():
            raise BadInput(f"{run.file(out, spec.name)}: already evaluated (nothing was overwritten)")
    return loaded, run, out


def execute_in(loaded: Loaded, run: RunDir, *, log: Log | None = None) -> RunSummary:
    """`execute`, with the run directory named in the message of any error it raises."""
    try:
        return execute(loaded, run, log=log)
    except CcrunError as exc:
        exc.hint = exc.hint or f"(the run directory keeps what was written: {run.path})"
        raise


@dataclass(frozen=True)
class Reproduction:
    run: RunDir  # the new run directory
    matches: bool
    message: str


def reproduce(original: RunDir, *, runs_root: str | Path | None = None, log: Log | None = None) -> Reproduction | None:
    """Run `original`'s resolved recipe again into a new directory (beside it by default) and
    compare every logged metric but throughput (timing varies). None on processes other than 0."""
    from .plan import make_plan
    from .preflight import require

    loaded = original.recipe()
    (inputs,) = require([loaded.recipe])
    again = shared_run_dir(loaded, runs_root=runs_root or original.path.parent.parent,
                           plan=make_plan(loaded.recipe, inputs=inputs))
    if is_primary():
        (log or stderr_line)(f"run directory: {again.path}")
    execute_in(loaded, again, log=log)
    if not is_primary():
        return None

    def logged(run: RunDir) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in run.metrics()]

    a, b = logged(original), logged(again)
    if a == b:
        return Reproduction(again, True, f"reproduced: {len(a)} logged steps match exactly ({again.path})")
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    where = a[first]["step"] if first < len(a) else "?"
    return Reproduction(again, False, f"differs from step {where}: {len(a)} vs {len(b)} logged steps ({again.path})")
