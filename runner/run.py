"""The conductor: a resolved recipe becomes a run directory, then each stage in order."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .recipe.load import Loaded
from .recipe.resolve import recipe_hash, to_yaml
from .recipe.yamlio import dump
from .track.compare import generation_rates
from .track.rundir import RunDir, atomic_write, git_state, provenance, write_json


class StagesMissing(Exception):
    """What a command needs is not there (e.g. a run directory without a model to evaluate)."""


def create_run_dir(loaded: Loaded, *, runs_root: str | Path = "runs", argv: list[str] | None = None,
                   sweep: dict | None = None) -> RunDir:
    """Resolve and claim a fresh run directory holding what was asked and what it meant. A sweep
    point ({"group", "index", "point"}) names the directory after its values and is kept in sweep.json."""
    recipe = loaded.recipe
    assert recipe is not None, "fragments do not run"
    digest = recipe_hash(recipe)
    run = RunDir.create(runs_root, recipe.name, digest, label=point_label(sweep["point"]) if sweep else None)
    if sweep:
        write_json(run.file("sweep.json"), sweep)
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


def shared_run_dir(loaded: Loaded, *, runs_root: str | Path = "runs", sweep: dict | None = None) -> RunDir:
    """`create_run_dir` on process 0; every other process of a jax.distributed run gets the
    same directory (without writing to it)."""
    from .common.procs import broadcast_text, is_primary

    if not is_primary():
        path = broadcast_text(None)
        if not path:
            raise FollowerError("process 0 could not create the run directory (its output says why)")
        return RunDir(Path(path))
    try:
        run = create_run_dir(loaded, runs_root=runs_root, sweep=sweep)
    except BaseException:
        broadcast_text("")
        raise
    broadcast_text(str(run.path))
    return run


def _summary(run: RunDir, **fields) -> None:
    """summary.json, rewritten as the run goes (status: running → succeeded | failed)."""
    path = run.file("summary.json")
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(fields)
    write_json(path, current, overwrite=True)


def _record_devices(run: RunDir) -> None:
    """Add the devices to provenance.json once jax is up (the dry run never imports it)."""
    import jax

    path = run.file("provenance.json")
    prov = json.loads(path.read_text())
    prov["devices"] = [{"id": d.id, "platform": d.platform, "kind": d.device_kind, "process": d.process_index}
                       for d in jax.devices()]
    prov["process_count"] = jax.process_count()
    write_json(path, prov, overwrite=True)


def _data_outputs(run: RunDir):
    """(token blocks, tokenizer) the data stage wrote into the run directory."""
    from datasets import load_from_disk

    from .model import load_tokenizer

    return load_from_disk(str(run.file("data", "tokens"))), load_tokenizer(run.file("data", "tokenizer"))


def _recipe_files(loaded: Loaded, run: RunDir) -> dict[str, Path]:
    """The files a run came from, named for the recipe artifact: the extends chain relative to
    the directory they share, then the run directory's overrides.yaml and resolved.yaml."""
    import os

    files = [Path(f).resolve() for f in loaded.files]
    common = Path(os.path.commonpath([f.parent for f in files])) if files else Path("/")
    named = {f"recipe/{f.relative_to(common).as_posix()}": f for f in files}
    named.update({name: run.file(name) for name in ("overrides.yaml", "resolved.yaml")})
    return named


def execute(loaded: Loaded, run: RunDir, *, log=None) -> dict:
    """data → model → train → evals → final/ in `run`; returns the summary. A failure marks
    summary.json `failed` with the error and re-raises, leaving everything written so far."""
    import time

    from .common.procs import broadcast_flag, is_primary

    if not is_primary():
        return _follow(loaded, run)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    recipe = loaded.recipe
    started = time.time()
    _summary(run, name=recipe.name, status="running", recipe_hash=recipe_hash(recipe))
    from .recipe.resolve import resolved_dict
    from .track.wandb import Tracker

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
    try:
        from .model import build_model, save_pretrained
        from .model.from_recipe import build_tokenizer

        tokens = None
        if recipe.data is not None:
            from .data import describe, prepare_data

            try:
                if run.file("data", "manifest.json").is_file():  # resuming: the data stage finished before
                    manifest = json.loads(run.file("data", "manifest.json").read_text())
                    log(f"data: reused ({manifest['cache_key'][:12]})")
                else:
                    manifest = prepare_data(recipe, run.file("data"))
                    for line in describe(manifest).splitlines():
                        log(f"data: {line}")
            except BaseException:
                broadcast_flag(False)  # the other processes stop too
                raise
            broadcast_flag(True)  # the other processes read the data this one wrote
            tokens, tokenizer = _data_outputs(run)
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
        results: dict = {}
        if recipe.train is not None:
            from .train import train

            summary = train(recipe, model, tokens, run.path, log=log, on_metrics=tracker.metrics)
            results["train"] = {k: v for k, v in summary.items() if k != "params"}
            final = summary["final"]
            log(f"train: {summary['steps']} steps, loss {final['train/loss']:.4f}"
                + (f", val loss {final['val/loss']:.4f}" if "val/loss" in final else ""))
        for spec in (e for e in recipe.evals if e.suite == "loss"):
            results[spec.name] = loss = _loss_suite(recipe, spec, model, tokens, results.get("train"))
            run.file("eval", spec.name).mkdir(parents=True, exist_ok=True)
            write_json(run.file("eval", spec.name, "results.json"), loss, overwrite=True)
            log(f"eval {spec.name}: val loss {loss['val/loss']:.4f}, perplexity {loss['val/perplexity']:.2f}")
        if recipe.train is not None:
            from .track.compare import plot

            plot([run.path], run.file("plots", "loss.png"))
            plot([run.path], run.file("plots", "lr.png"), metric="train/lr")
        save_pretrained(model, run.file("final"))
        tokenizer.save_pretrained(str(run.file("final")))
        if any(e.suite != "loss" for e in recipe.evals):
            import shutil

            from .evals.suites import pass_rates, run_evals

            for spec in recipe.evals:  # resuming: a suite that did not finish starts over
                partial = run.file("eval", spec.name)
                if spec.suite != "loss" and partial.exists() and not (partial / "results.json").is_file():
                    shutil.rmtree(partial)
            for name, r in run_evals(recipe, model, tokenizer, run.file("eval")).items():
                results[name] = rates = pass_rates(r)
                log(f"eval {name}: " + ", ".join(f"pass@{k} {v:.4f}" for k, v in rates.items()))
        _summary(run, status="succeeded", results=results, wall_time_s=round(time.time() - started, 1))
        tracker.results(results)
        tracker.eval_tables(run.file("eval"))
        tracker.finish()
        return json.loads(run.file("summary.json").read_text())
    except BaseException as exc:
        _summary(run, status="failed", error=f"{type(exc).__name__}: {exc}", wall_time_s=round(time.time() - started, 1))
        tracker.finish(exit_code=1)
        raise


def _loss_suite(recipe, spec, model, tokens, trained: dict | None) -> dict:
    """A loss suite's results: the training's last validation when it measured the same thing
    (all validation blocks, in micro-batches), else a pass of its own over the validation blocks."""
    final = (trained or {}).get("final", {})
    same = spec.max_batches is None and spec.batch_size in (None, recipe.train.micro_batch_size if recipe.train else None)
    if same and "val/loss" in final:
        return {"val/loss": final["val/loss"], "val/perplexity": final["val/perplexity"], "from": "training"}
    from .train.loop import loss_eval

    return {**loss_eval(recipe, spec, model, tokens["validation"]), "from": "eval"}


class FollowerError(RuntimeError):
    """Process 0 of a multi-process run failed before training; this process stops too."""


def _follow(loaded: Loaded, run: RunDir) -> dict:
    """A process other than 0 under jax.distributed: it computes its part of training and writes
    only its checkpoint shards; process 0 writes everything else (run directory files, metrics,
    W&B, final/, evals). The collective calls mirror `execute`'s, in the same order."""
    from .model import build_model
    from .model.from_recipe import build_tokenizer
    from .common.procs import broadcast_flag

    recipe = loaded.recipe
    tokens = None
    if recipe.data is not None:
        if not broadcast_flag(True):
            raise FollowerError("process 0 failed in the data stage (its output says why)")
        tokens, tokenizer = _data_outputs(run)
    else:
        tokenizer = build_tokenizer(recipe.tokenizer)
    model = build_model(recipe.model, tokenizer=tokenizer, seed=recipe.seed)
    if not broadcast_flag(True):
        raise FollowerError("process 0 failed to build the model (its output says why)")
    if recipe.train is None:
        return {"status": "follower"}
    from .train import train

    summary = train(recipe, model, tokens, run.path)
    return {"status": "follower", "results": {"train": {k: v for k, v in summary.items() if k != "params"}}}


def load_for_eval(target: Path, recipe, *, checkpoint: str | None = None):
    """(model, tokenizer) to evaluate: a run directory's final/ export, or one of its checkpoints
    (`checkpoint` = "latest" | "best"), or the recipe's own model and tokenizer."""
    import json

    from .model import build_model, from_pretrained, load_tokenizer
    from .model.from_recipe import build_tokenizer

    if not target.is_dir():
        return build_model(recipe.model, seed=recipe.seed), build_tokenizer(recipe.tokenizer)
    tokenizer_dir = next((d for d in (target / "final", target / "data" / "tokenizer") if (d / "tokenizer.json").is_file()), None)
    tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else build_tokenizer(recipe.tokenizer)
    if checkpoint is None and (target / "final" / "config.json").is_file():
        return from_pretrained(target / "final", dtype=recipe.model.dtype.compute), tokenizer
    ckpt_dir = target / "checkpoints"
    if not ckpt_dir.is_dir():
        raise StagesMissing(f"{target}: no final/ export and no checkpoints/ to evaluate")
    from flax import nnx

    from .train.checkpoint import restore_params
    from .train.step import split

    model = build_model(recipe.model, tokenizer=tokenizer, seed=recipe.seed)
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    if not steps:
        raise StagesMissing(f"{ckpt_dir}: no checkpoint")
    step = steps[-1]
    if checkpoint == "best":
        metric = recipe.train.checkpoint.keep_best_by if recipe.train else None
        scored = []
        for s in steps:
            meta = ckpt_dir / str(s) / "_CHECKPOINT_METADATA"
            metrics = json.loads(meta.read_text()).get("metrics") if meta.is_file() else None
            if metric and metrics and metric in metrics:
                scored.append((metrics[metric], s))
        if not scored:
            raise StagesMissing(f"{ckpt_dir}: no checkpoint carries {metric!r}; use --checkpoint latest")
        pick = min if recipe.train.checkpoint.mode == "min" else max
        step = pick(scored)[1]
    params = restore_params(ckpt_dir, step, split(model).params)
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    return model, tokenizer


def sweep_points(sweep: dict | None) -> list[dict]:
    """The grid of a sweep, in order (the last key varies fastest); [{}] without a sweep."""
    import itertools

    if not sweep:
        return [{}]
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep[k] for k in keys))]


def point_label(point: dict) -> str:
    """A sweep point as a directory-name suffix: `peak_lr=0.001,seed=1` (last key segment=value)."""
    text = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)[:80]


def sweep_group(recipe) -> str:
    """The W&B group of a sweep's points: the recipe name and the hash of the recipe with its
    sweep, the same in every job of a job array."""
    return f"{recipe.name}-sweep-{recipe_hash(recipe)[:8]}"


def point_overrides(point: dict) -> list[str]:
    """--set arguments for a sweep point (values written so the schema reads them back)."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in point.items()]


def sweep_table(rows: list[tuple[dict, dict, Path]]) -> str:
    """One line per point: its values, status, final losses, pass@k, run directory."""
    lines = []
    for point, summary, path in rows:
        results = summary.get("results", {})
        final = results.get("train", {}).get("final", {})
        cells = [", ".join(f"{k}={v}" for k, v in point.items()), summary.get("status", "?")]
        if "val/loss" in final:
            cells.append(f"val/loss {final['val/loss']:.4f}")
        for name, rates in generation_rates(results):
            cells.append(f"{name} " + " ".join(f"pass@{k} {v:.3f}" for k, v in rates.items()))
        cells.append(str(path))
        lines.append("  ".join(cells))
    return "sweep:\n" + "\n".join(f"  {line}" for line in lines)

