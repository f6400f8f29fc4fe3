"""The training loop: seeded data order, logging, validation, checkpoints, exact resume, guards.

`train(recipe, model, tokens, run_dir)` trains `model` on the data stage's blocks and writes
run_dir/metrics.jsonl (one JSON object per logged step) and run_dir/checkpoints/. Run again on the
same run_dir, it resumes from the latest checkpoint: the data order and every random key are
functions of (seed, step), so the resumed run reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from ..common.clock import duration
from ..common.errors import BadInput, Interrupted, RunFailed
from ..common.procs import is_primary
from ..common.streams import stream_key
from ..model import load_params, set_remat
from ..recipe.schema import Recipe
from .checkpoint import Checkpoints, restore_params
from .mesh import batch_sharding, make_mesh, place, replicated, rows_sharding, to_host
from .optim import optimizer, schedule
from .mesh import tree_shardings
from .step import BATCH_COLUMNS, make_eval_step, make_train_step, split_trainable, uses_dropout

# Dense bf16 peak FLOP/s by device kind (the sparse figures are twice these: never divide by them).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


class MetricsError(BadInput):
    """A run's metrics.jsonl damaged (not by a kill mid-write): resuming would lose or invent records."""


class TrainingError(RunFailed):
    """Training cannot go on (a non-finite loss, data too small for a batch)."""


def peak_flops(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_FLOPS.items() if k in device_kind), None)


def flops_per_token(config: Any, seq_len: int) -> float:
    """PaLM convention: 6N + 12·L·d·T, N without position embeddings (the tied head counted once)."""
    return 6 * config.num_params(embeddings=False) + 12 * config.n_layer * config.d_model * seq_len


def stream_state(run_dir: Path, step: int) -> Path:
    """Where a streaming run keeps the stream's position of checkpoint `step`."""
    return run_dir / "stream" / f"{step}.npz"


def steps_per_epoch(rows: int, batch_size: int) -> int:
    if rows < batch_size:
        raise TrainingError(f"train.batch_size {batch_size} is more than the {rows} training blocks")
    return rows // batch_size


def total_steps(spec: Any, rows: int) -> int:
    if spec.steps is not None:
        return spec.steps
    return max(1, math.ceil(spec.epochs * steps_per_epoch(rows, spec.batch_size)))


def batch_rows(step: int, rows: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of optimizer step `step` (0-based): a seeded permutation per epoch, the tail dropped."""
    per_epoch = steps_per_epoch(rows, batch_size)
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 0x64617461, epoch]).permutation(rows)  # the "data" stream
    return np.sort(order[within * batch_size : (within + 1) * batch_size])


class MetricsLog:
    """metrics.jsonl: appended line by line; on resume, cut back to the checkpoint's step."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Keep the records up to `step` (resuming from its checkpoint). A last line cut short (the
        process was killed while writing it) is dropped; a damaged line before it is bad input."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record_step = record.get("step", 0) if isinstance(record, dict) else None
                if not isinstance(record_step, int):
                    raise ValueError("no integer step")
            except (ValueError, RecursionError) as exc:
                if number == len(lines) and not data.endswith(b"\n"):  # cut by a kill mid-write
                    continue
                raise MetricsError(f"{self.path}:{number}: a damaged record ({type(exc).__name__}); "
                                   f"remove that line (or the run) to resume") from None
            if record_step <= step:
                kept.append(line.decode("utf-8", "replace"))
        if data.endswith(b"\n") and len(kept) == sum(1 for line in lines if line.strip()):
            return  # nothing after the checkpoint (a run resumed after its last step): the file stays as it is
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


class _Signals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, _frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _to_device(arrays: dict[str, np.ndarray], accum: int, sharding) -> dict[str, jax.Array]:
    out = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        value = value.reshape(accum, value.shape[0] // accum, value.shape[1])
        out[name] = jax.device_put(value, sharding)
    return out


def evaluate(eval_step, params, blocks: Any, batch_size: int, mesh) -> dict[str, float]:
    """Validation loss (token-weighted mean) and perplexity over every validation block."""
    total, weight = 0.0, 0.0
    n = len(blocks)
    sharding = rows_sharding(mesh)
    for start in range(0, n, batch_size):
        rows = blocks[start : start + batch_size]
        arrays = {k: np.asarray(rows[k]) for k in BATCH_COLUMNS if k in rows}  # segments: packed apps
        pad = batch_size - len(arrays["input_ids"])  # weight-0 rows: one shape, one compilation
        if pad:
            arrays = {k: np.concatenate([v, np.zeros((pad, v.shape[1]), v.dtype)]) for k, v in arrays.items()}
        ids, w, *segments = (jax.device_put(v, sharding) for v in arrays.values())
        s, c = eval_step(params, ids, w, *segments)
        total, weight = total + float(s), weight + float(c)
    loss = total / max(weight, 1.0)
    return {"val/loss": loss, "val/perplexity": math.exp(min(loss, 700.0))}


def loss_eval(recipe: Recipe, spec: Any, model: Any, blocks: Any) -> dict[str, float]:
    """The loss suite: validation loss and perplexity of `model` over `blocks`, in batches of
    spec.batch_size rows (default train.micro_batch_size, or 8), at most spec.max_batches of them.
    Runs data-parallel over this process's own devices (after training, the model is on the host)."""
    from ..recipe.schema_train import MeshSpec

    mesh = make_mesh(MeshSpec(), devices=jax.local_devices())
    size = spec.batch_size or (recipe.train.micro_batch_size if recipe.train else 8)
    size = math.ceil(size / mesh.size) * mesh.size  # rows split evenly over the devices
    if spec.max_batches is not None:
        blocks = blocks.select(range(min(len(blocks), spec.max_batches * size)))
    graphdef, params = nnx.split(model)
    params = jax.device_put(params, tree_shardings(params, mesh))
    out = evaluate(make_eval_step(graphdef), params, blocks.with_format("numpy"), size, mesh)
    return {**out, "rows": len(blocks), "batch_size": size}


@dataclasses.dataclass
class TrainSetup:
    """What the step loop needs, made once: data, optimizer, mesh, jitted steps, checkpoints, and
    the parameters and optimizer state to start from (restored when resuming)."""

    recipe: Recipe
    run_dir: Path
    train_blocks: Any  # datasets.Dataset (numpy format): input_ids, loss_weights [rows, T]; None when streaming
    stream: Any | None  # runner.data.stream.BlockStream (data.streaming), else None
    val_blocks: Any | None
    seq_len: int  # tokens per block
    steps: int  # optimizer updates in all
    start: int  # updates already done (a resumed run's checkpoint step, else 0)
    resumed: bool
    lr: optax.Schedule
    mesh: Mesh
    params: nnx.State
    opt_state: Any
    train_step: Callable
    eval_step: Callable
    ckpt: Checkpoints
    metrics_log: MetricsLog
    primary: bool  # this process records (metrics.jsonl, logs, on_metrics)
    log: Callable[[str], None]
    on_metrics: Callable[[dict[str, Any]], None] | None
    flops_per_token: float


def _setup(recipe: Recipe, model: Any, tokens: Any, run_dir: Path, log, on_metrics) -> TrainSetup:
    spec = recipe.train
    stream = tokens["train"] if hasattr(tokens["train"], "next_blocks") else None
    val_blocks = tokens["validation"].with_format("numpy") if "validation" in tokens else None
    if stream is None:
        train_blocks = tokens["train"].with_format("numpy")
        rows, seq_len = len(train_blocks), len(train_blocks[0]["input_ids"])
        steps = total_steps(spec, rows)
    else:  # a stream has no length: the schema asks for train.steps
        train_blocks, seq_len, steps = None, stream.seq_len, spec.steps
    lr = schedule(recipe.schedule, steps)
    tx = optimizer(recipe.optimizer, lr)
    mesh = make_mesh(spec.mesh)
    if spec.micro_batch_size % mesh.size:
        raise TrainingError(f"train.micro_batch_size {spec.micro_batch_size} does not split over {mesh.size} devices")

    set_remat(model, spec.remat)  # activation checkpointing rides in the graphdef
    # With LoRA only the adapters train: the optimizer state, gradients and checkpoints hold them
    # alone, and the frozen base rides along each step as an argument.
    graphdef, params, frozen = split_trainable(model)
    params, opt_state, shardings = place(params, tx.init(params), mesh)
    if frozen is not None:
        frozen = jax.device_put(frozen, tree_shardings(frozen, mesh))
    step = make_train_step(graphdef, tx, dropout=uses_dropout(model), out_shardings=(*shardings, replicated(mesh)))
    evaluate_step = make_eval_step(graphdef)

    def train_step(params, opt_state, batch, key):
        return step(params, opt_state, batch, key, frozen)

    def eval_step(params, *columns):
        return evaluate_step(params, *columns, frozen=frozen)

    ckpt = Checkpoints(run_dir / "checkpoints", keep_best_by=spec.checkpoint.keep_best_by, mode=spec.checkpoint.mode)
    # Several processes: all of them compute and save their checkpoint shards; process 0 alone
    # writes metrics.jsonl, logs and reports metrics.
    primary = is_primary()
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    if not primary:
        log, on_metrics = (lambda line: None), None
    latest = ckpt.latest_step()
    if latest is not None:
        params, opt_state, record = ckpt.restore(latest, params, opt_state)
        if record.get("seed") != recipe.seed:
            raise TrainingError(
                f"checkpoint {latest} was made with seed {record.get('seed')}, the recipe says {recipe.seed}"
            )
        if stream is not None:
            state = stream_state(run_dir, latest)
            if not state.is_file():
                raise TrainingError(f"checkpoint {latest} has no stream position ({state}); it cannot be resumed exactly")
            stream.restore(stream.load(state))
        if primary:
            metrics_log.truncate_after(latest)
        log(f"train: resumed from step {latest}")
    return TrainSetup(
        recipe=recipe, run_dir=run_dir, train_blocks=train_blocks, stream=stream, val_blocks=val_blocks, seq_len=seq_len, steps=steps,
        start=latest or 0, resumed=latest is not None, lr=lr, mesh=mesh, params=params, opt_state=opt_state,
        train_step=train_step, eval_step=eval_step, ckpt=ckpt, metrics_log=metrics_log,
        primary=primary, log=log, on_metrics=on_metrics, flops_per_token=flops_per_token(model.config, seq_len),
    )


def _loop(s: TrainSetup) -> tuple[nnx.State, dict[str, float]]:
    """Steps s.start+1 … s.steps: log, validate, checkpoint; returns the trained parameters (on
    the mesh) and the last metrics (train/loss and the last validation). A non-finite loss raises
    TrainingError; SIGINT/SIGTERM saves a checkpoint and raises Interrupted."""
    from tqdm.auto import tqdm

    spec, recipe, mesh = s.recipe.train, s.recipe, s.mesh
    rows = len(s.train_blocks) if s.stream is None else None
    params, opt_state = s.params, s.opt_state
    device_kind = jax.devices()[0].device_kind
    peak = peak_flops(device_kind)
    dropout_key = stream_key(recipe.seed, "dropout")
    sharding = batch_sharding(mesh)
    last_val: dict[str, float] = {}
    loss = math.nan
    keep_best = spec.checkpoint.keep_best_by is not None
    window_tokens, window_start = 0, time.perf_counter()

    def save(step: int, metrics: dict[str, float], *, force: bool = False) -> None:
        # Only this step's own metrics: a checkpoint scored by an older validation could be kept
        # as the best for a loss it never had.
        record = {"step": step, "seed": recipe.seed}
        if s.stream is not None and s.primary:  # the stream's position first: a checkpoint never lacks it
            s.stream.save(stream_state(s.run_dir, step))
        s.ckpt.save(step, params, opt_state, record, {"train/loss": loss, **metrics}, force=force)
        if s.stream is not None and s.primary:
            keep = {*s.ckpt.manager.all_steps(), step}
            for old in stream_state(s.run_dir, 0).parent.glob("*.npz"):
                if old.stem.isdigit() and int(old.stem) not in keep:
                    old.unlink(missing_ok=True)

    bar = tqdm(total=s.steps, initial=s.start, desc="train", unit="step",
               disable=not (s.primary and sys.stderr.isatty()))
    # Not a terminal (Slurm, nohup, CI): no bar, one plain line every log_every steps instead.
    lines = s.primary and not sys.stderr.isatty()
    loop_start = time.perf_counter()
    with _Signals() as signals:
        for i in range(s.start, s.steps):
            if s.stream is None:
                batch = s.train_blocks[batch_rows(i, rows, spec.batch_size, recipe.seed)]
            else:
                batch = s.stream.next_blocks(spec.batch_size)
            device_batch = _to_device({k: batch[k] for k in BATCH_COLUMNS if k in batch},
                                      spec.grad_accum_steps, sharding)
            params, opt_state, m = s.train_step(params, opt_state, device_batch, jax.random.fold_in(dropout_key, i))
            step = i + 1  # optimizer updates done
            window_tokens += spec.batch_size * s.seq_len
            bar.update(1)
            loss = float(m["loss"])
            if not math.isfinite(loss):
                s.ckpt.wait()
                kept = s.ckpt.latest_step()
                raise TrainingError(
                    f"step {step}: the training loss is {loss}; stopped. "
                    + (f"The last good checkpoint (step {kept}) is kept in {s.run_dir / 'checkpoints'}." if kept
                       else "No checkpoint was saved before it.")
                )
            record: dict[str, Any] = {}
            if step % spec.log_every == 0 or step == s.steps:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / elapsed if elapsed > 0 else None  # all devices
                record.update({
                    "train/loss": loss,
                    "train/lr": float(s.lr(i)),
                    "train/grad_norm": float(m["grad_norm"]),
                    "train/tokens": float(m["tokens"]),
                    "throughput/tokens_per_s": tokens_per_s,
                    "throughput/tokens_per_s_per_device": tokens_per_s / mesh.size if tokens_per_s else None,
                    "throughput/mfu": (s.flops_per_token * tokens_per_s / (peak * mesh.size))
                    if peak and tokens_per_s else None,
                    "throughput/peak_flops_per_device": peak,
                    "throughput/device_kind": device_kind,
                })
                if s.stream is not None:  # documents read, kept, duplicates, blocks, epochs so far
                    record.update({f"data/{k}": v for k, v in s.stream.report().items()})
                window_tokens, window_start = 0, time.perf_counter()
                if lines:
                    done = step - s.start
                    eta = (time.perf_counter() - loop_start) / done * (s.steps - step)
                    print(progress_line(step, s.steps, loss, record["train/lr"], tokens_per_s, eta), file=sys.stderr,
                          flush=True)
            every = spec.checkpoint.every
            scheduled = step == s.steps or bool(every and step % every == 0)
            # With keep_best_by, every checkpoint is validated: each one is a candidate for the best.
            validated = s.val_blocks is not None and (
                (spec.eval_every and step % spec.eval_every == 0) or step == s.steps or (keep_best and scheduled))
            if validated:
                last_val = evaluate(s.eval_step, params, s.val_blocks, spec.micro_batch_size, mesh)
                record.update(last_val)
            if record and s.primary:
                s.metrics_log.append({"step": step, **record})
                if s.on_metrics is not None:
                    s.on_metrics({"step": step, **record})
                bar.set_postfix(loss=f"{loss:.4f}")
            if scheduled:
                save(step, last_val if validated else {}, force=step == s.steps)
            if signals.received is not None:
                if not scheduled:  # a step is saved once (orbax refuses a second save of it)
                    save(step, last_val if validated else {}, force=True)
                s.ckpt.close()  # waits for the save
                bar.close()
                raise Interrupted(f"signal {signals.received} at step {step}: checkpoint saved; the run can be resumed")
    bar.close()
    if s.start == s.steps:  # resumed after the last step: its metrics are the logged ones
        return params, logged_final(s.metrics_log.path, s.steps)
    return params, {"train/loss": loss, **last_val}


def progress_line(step: int, total: int, loss: float, lr: float, tokens_per_s: float | None, eta_s: float) -> str:
    """One plain progress line: `train: step 30/300 (10%) loss 4.1234 lr 1.2e-04 3,456 tokens/s ETA 1m23s`."""
    speed = f" {tokens_per_s:,.0f} tokens/s" if tokens_per_s else ""
    return f"train: step {step}/{total} ({100 * step // total}%) loss {loss:.4f} lr {lr:.2e}{speed} ETA {duration(eta_s)}"


def logged_final(path: Path, step: int) -> dict[str, float]:
    """train/loss and val/* of `step` as metrics.jsonl logged them."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
    at = next((r for r in reversed(records) if r.get("step") == step), {})
    return {k: v for k, v in at.items() if k == "train/loss" or k.startswith("val/")}


def _finish(s: TrainSetup, model: Any, params: nnx.State, final: dict[str, float]) -> dict[str, Any]:
    """Wait for the last checkpoint, put the weights to use into the caller's model: the best
    checkpoint's when the recipe keeps one (as transformers' load_best_model_at_end), else the
    last step's. The summary says which (weights_step)."""
    s.ckpt.wait()
    if s.stream is not None:
        s.stream.close()
    best = s.ckpt.best_step()
    summary = {"steps": s.steps, "resumed_from": s.start if s.resumed else None, "final": final,
               "best_step": best, "latest_step": s.ckpt.latest_step(),
               "weights_step": best if best is not None else s.steps}
    s.ckpt.close()
    if best is not None and best != s.steps:
        restore_params(model, s.run_dir / "checkpoints", best)
    else:
        load_params(model, to_host(params))
    return summary


def train(
    recipe: Recipe,
    model: Any,
    tokens: Any,
    run_dir: str | Path,
    *,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) per recipe.train; the caller's `model` ends up holding the trained weights.
    Returns a summary: steps, resumed_from, final (train/loss and the last val/*), best_step,
    latest_step, weights_step (the step whose weights `model` holds: the best checkpoint's when
    train.checkpoint.keep_best_by is set and one carries the metric, else the last step's)."""
    setup = _setup(recipe, model, tokens, Path(run_dir), log, on_metrics)
    params, final = _loop(setup)
    return _finish(setup, model, params, final)
