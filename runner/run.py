"""The conductor: a resolved recipe becomes a run directory, then each stage in order."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .recipe.load import Loaded
from .recipe.resolve import recipe_hash, to_yaml
from .recipe.yamlio import dump
from .track.rundir import RunDir, atomic_write, git_state, provenance, write_json

# Stage → the package that implements it. Until a package exists, `ccrun run` refuses to run.
STAGES = {"data": "runner.data", "model": "runner.model", "train": "runner.train", "evals": "runner.evals"}


class StagesMissing(Exception):
    """The pipeline cannot run yet: some stages are not built."""


def missing_stages() -> list[str]:
    return [stage for stage, module in STAGES.items() if importlib.util.find_spec(module) is None]


def create_run_dir(loaded: Loaded, *, runs_root: str | Path = "runs", argv: list[str] | None = None) -> RunDir:
    """Resolve and claim a fresh run directory holding what was asked and what it meant."""
    recipe = loaded.recipe
    assert recipe is not None, "fragments do not run"
    digest = recipe_hash(recipe)
    run = RunDir.create(runs_root, recipe.name, digest)
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


def run(loaded: Loaded, *, runs_root: str | Path = "runs", dry_run: bool = False, argv: list[str] | None = None) -> RunDir:
    if not dry_run:
        missing = missing_stages() or ["conductor"]  # the stages exist, but nothing calls them yet
        raise StagesMissing(
            f"cannot run {loaded.recipe.name}: the {', '.join(missing)} stage{'s are' if len(missing) > 1 else ' is'} "
            "not built yet, so nothing was run and no run directory was made. "
            "`ccrun run --dry-run` resolves the recipe and creates its run directory."
        )
    return create_run_dir(loaded, runs_root=runs_root, argv=argv)


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

