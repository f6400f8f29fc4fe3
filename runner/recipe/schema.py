"""The Recipe: one experiment, from model and data to training and evaluation.

The recipe layer imports no jax, flax, transformers or datasets, so validating is instant.
"""


from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from .base import Path, Spec, deriving, each
from .schema_data import DataSpec
from .schema_eval import EvalSuite
from .schema_model import ModelSpec, TokenizerSpec
from .schema_optim import Optimizer, Schedule
from .schema_train import TrainSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# A name is a directory name (runs/<name>/, eval/<name>/) and part of W&B's run names; file
# systems take 255 bytes per name, W&B shows far fewer.
MAX_NAME = 100
# Seeds reach jax.random.key (a 64-bit seed) and NumPy, plus small offsets per stream and per
# sampling setting; below 2**32 every use stays in range, as most tools' seeds do.
MAX_SEED = 2**32 - 1
# A sweep is a grid of whole runs; past these it is a typo (or an attack), not an experiment,
# and validating each of its values would take long.
MAX_SWEEP_KEYS = 64
MAX_SWEEP_RUNS = 10_000


class WandbSpec(Spec):
    """Weights & Biases logging. Offline by default: `wandb sync` uploads a run later."""

    project: str = Field(default="ccrun", min_length=1, description="W&B project.")
    entity: str | None = Field(default=None, description="W&B entity (user or team); unset: your default entity.")
    group: str | None = Field(default=None, description="W&B group; unset: the recipe name (or the sweep).")
    tags: list[str] = Field(default=[], description="W&B tags.")
    notes: str | None = Field(default=None, description="W&B notes.")
    mode: Literal["offline", "online", "disabled"] = Field(
        default="offline", description="offline writes locally; online uploads as it runs; disabled logs nothing to W&B."
    )


class LoggingSpec(Spec):
    """Where metrics go besides metrics.jsonl. Not part of the recipe hash."""

    wandb: WandbSpec = Field(default={}, validate_default=True, description="Weights & Biases.")


class Recipe(Spec):
    """One experiment. Defaults live here, once; `ccrun resolve` shows them all."""

    name: str = Field(pattern=NAME_PATTERN, description="Run name: runs go to runs/<name>/.")
    description: str = Field(default="", description="What this experiment is for, and where its numbers come from.")
    extends: str | list[str] | None = Field(
        default=None,
        description="Recipe file(s) this one builds on, relative to this file. Mappings merge deeply (this file "
        "wins), lists are replaced; with a list, later files win over earlier ones.",
    )
    seed: int = Field(default=0, ge=0, description="Root of every random stream (init, data order, dropout, sampling).")
    model: ModelSpec = Field(description="The network.")
    tokenizer: TokenizerSpec = Field(default={}, validate_default=True, description="The tokenizer.")
    data: DataSpec | None = Field(default=None, description="Training (and validation) data; needed by train and loss evals.")
    optimizer: Optimizer | None = Field(default=None, description="Optimizer; needed by train.")
    schedule: Schedule | None = Field(default=None, description="Learning-rate schedule; needed by train.")
    train: TrainSpec | None = Field(default=None, description="Training loop; unset: evaluate only.")
    evals: list[EvalSuite] = Field(default=[], description="Evaluation suites, run after training.")
    sweep: dict[str, list[Any]] | None = Field(
        default=None,
        description="Grid of runs: dotted key -> values. Each point of the grid is this recipe with those values set.",
    )
    logging: LoggingSpec = Field(default={}, validate_default=True, description="Experiment tracking.")

    def complete(self) -> None:
        tok = self.tokenizer
        with deriving(tok, "name", "revision"):
            if tok.name is None and tok.train is None and self.model.init == "pretrained" and self.model.checkpoint:
                tok.derive(name=self.model.checkpoint, revision=tok.revision or self.model.revision)
        for spec in self.evals if isinstance(self.evals, list) else ():
            with deriving(spec, "name"):
                if spec.name is None:
                    spec.derive(name=spec.suite)

    def check(self) -> Iterator[tuple[Path, str]]:
        # Each piece on its own: where a recipe has other errors, a piece whose inputs are among
        # them is skipped and the rest still report (runner/recipe/partial.py).
        yield from each(
            self._check_tokenizer,
            self._check_bounds,
            self._check_sizes,
            self._check_training,
            self._check_evals,
            self._check_sweep,
        )

    def warn(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._warn_schedule, self._warn_every)

    def _check_tokenizer(self) -> Iterator[tuple[Path, str]]:
        tok = self.tokenizer
        if tok.name is None and tok.train is None:
            yield ("tokenizer",), "a scratch model needs tokenizer.name (a hub id or directory) or tokenizer.train", (
                "model",
                "init",
            )
        if tok.train is not None and self.data is None:
            yield ("tokenizer", "train"), "trains on the recipe's data, and there is no data section"

    def _check_bounds(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._check_name, self._check_seed)

    def _check_name(self) -> Iterator[tuple[Path, str]]:
        if len(self.name) > MAX_NAME:
            yield ("name",), f"must be at most {MAX_NAME} characters (got {len(self.name)})"

    def _check_seed(self) -> Iterator[tuple[Path, str]]:
        if self.seed > MAX_SEED:
            yield ("seed",), f"must be <= {MAX_SEED} (2**32 - 1) (got {self.seed})"

    def _check_sweep(self) -> Iterator[tuple[Path, str]]:
        sweep = self.sweep or {}
        if len(sweep) > MAX_SWEEP_KEYS:
            yield ("sweep",), f"must have at most {MAX_SWEEP_KEYS} keys (got {len(sweep)})"
            return
        runs = 1
        for key, values in sweep.items():
            if not values:
                yield ("sweep", key), "needs at least one value"
            runs *= max(1, len(values))
        if runs > MAX_SWEEP_RUNS:
            yield ("sweep",), f"makes {runs} runs; a sweep makes at most {MAX_SWEEP_RUNS}"

    def _check_sizes(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._check_seq_len, self._check_vocab)

    def _check_seq_len(self) -> Iterator[tuple[Path, str]]:
        config = self.model.config
        if config is not None and self.data is not None and self.data.seq_len > config.max_positions:
            yield ("data", "seq_len"), (
                f"must be <= model.config.max_positions ({self.data.seq_len} > {config.max_positions})"
            )

    def _check_vocab(self) -> Iterator[tuple[Path, str]]:
        config = self.model.config
        if config is None:
            return
        train_tok = self.tokenizer.train
        if config.vocab_size is not None and train_tok is not None and config.vocab_size < train_tok.vocab_size:
            yield ("model", "config", "vocab_size"), (
                f"must be >= tokenizer.train.vocab_size ({config.vocab_size} < {train_tok.vocab_size})"
            )

    def _has_validation(self) -> bool:
        return self.data is not None and self.data.validation is not None

    def _check_training(self) -> Iterator[tuple[Path, str]]:
        if self.train is None:
            for part in ("optimizer", "schedule"):
                if getattr(self, part) is not None:
                    yield (part,), "set, but there is no train section to use it (add train, or remove this)"
            return
        for part in ("data", "optimizer", "schedule"):
            if getattr(self, part) is None:
                yield (part,), "required when the recipe has a train section", ("train",)
        yield from each(self._check_warmup, self._check_eval_every, self._check_keep_best, self._check_streaming)

    def _check_streaming(self) -> Iterator[tuple[Path, str]]:
        if self.data is None or not self.data.streaming:
            return
        if self.train.steps is None:
            yield ("train", "epochs"), "a stream has no known length: give train.steps with data.streaming", (
                "data", "streaming")

    def _check_warmup(self) -> Iterator[tuple[Path, str]]:
        train = self.train
        warmup = getattr(self.schedule, "warmup_steps", 0)
        if train.steps is not None and warmup > train.steps:
            yield ("schedule", "warmup_steps"), f"must be <= train.steps ({warmup} > {train.steps})"

    def _check_eval_every(self) -> Iterator[tuple[Path, str]]:
        if self.train.eval_every is not None and not self._has_validation():
            yield ("train", "eval_every"), "needs data.validation to compute validation loss"

    def _check_keep_best(self) -> Iterator[tuple[Path, str]]:
        best = self.train.checkpoint.keep_best_by
        if best is not None and best.startswith("val/") and not self._has_validation():
            yield ("train", "checkpoint", "keep_best_by"), f"{best!r} needs data.validation"

    def _check_evals(self) -> Iterator[tuple[Path, str]]:
        names: dict[str, int] = {}
        yield from each(*(lambda i=i, spec=spec: self._check_eval(i, spec, names) for i, spec in enumerate(self.evals)))

    def _check_eval(self, i: int, spec: Spec, names: dict[str, int]) -> Iterator[tuple[Path, str]]:
        def name() -> Iterator[tuple[Path, str]]:
            if len(spec.name) > MAX_NAME:
                yield ("evals", i, "name"), f"must be at most {MAX_NAME} characters (got {len(spec.name)})"
            if spec.name in names:
                yield ("evals", i, "name"), (
                    f"eval name {spec.name!r} is already used by evals[{names[spec.name]}]; give each a distinct name"
                )
            names.setdefault(spec.name, i)

        def room() -> Iterator[tuple[Path, str]]:
            # The sampler keeps at least one prompt token in the context (runner/evals/sample.py).
            # Known here only for a scratch model; a checkpoint's context is in its config.json.
            config = self.model.config
            new = getattr(spec, "max_new_tokens", None)
            if config is not None and new is not None and new >= config.max_positions:
                yield ("evals", i, "max_new_tokens"), (
                    f"must be < model.config.max_positions, leaving room for the prompt ({new} >= {config.max_positions})"
                )

        def loss() -> Iterator[tuple[Path, str]]:
            if spec.suite == "loss" and not self._has_validation():
                yield ("evals", i, "suite"), "the loss suite needs data.validation"

        yield from each(name, room, loss)

    # --- warnings: valid settings that are likely not what was meant -----------------------------

    def _warn_schedule(self) -> Iterator[tuple[Path, str]]:
        """A schedule that cannot finish within the run (known only when train.steps is given)."""
        train, schedule = self.train, self.schedule
        if train is None or schedule is None or train.steps is None or schedule.type == "constant":
            return
        steps, warmup = train.steps, schedule.warmup_steps
        if warmup and warmup == steps:
            yield ("schedule", "warmup_steps"), (
                f"the warmup ends at the last step ({steps}): the run never trains after reaching peak_lr"
            )
        elif schedule.type == "warmup_cosine" and warmup + schedule.decay_steps > steps and (
            schedule.end_lr != schedule.peak_lr
        ):
            yield ("schedule", "decay_steps"), (
                f"the schedule decays until step {warmup + schedule.decay_steps} but the run stops at {steps}: "
                f"the learning rate never reaches end_lr ({schedule.end_lr:g}); decay_steps: {steps - warmup} ends the "
                "decay on the last step"
            )

    def _warn_every(self) -> Iterator[tuple[Path, str]]:
        """Periodic work whose period is longer than the run happens only at its end."""
        train = self.train
        if train is None or train.steps is None:
            return
        if train.eval_every is not None and train.eval_every > train.steps:
            yield ("train", "eval_every"), (
                f"is more than train.steps ({train.eval_every} > {train.steps}): validation loss is computed only at "
                "the end"
            )
        every = train.checkpoint.every
        if train.checkpoint.keep_best_by is not None and (every is None or every >= train.steps):
            why = "checkpoint.every is null" if every is None else f"checkpoint.every is {every}, train.steps {train.steps}"
            yield ("train", "checkpoint", "keep_best_by"), (
                f"chooses among one checkpoint, the last: {why}; set checkpoint.every below train.steps to keep the best "
                "of several"
            )


# Sections that describe how a run is reported, not what it computes: left out of the hash.
NOT_MEANING = ("name", "description", "logging")
