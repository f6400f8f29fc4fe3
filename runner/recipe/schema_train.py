"""Recipe parts for the training loop: batch, length, logging, checkpoints, device mesh."""


from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from .base import Path, Spec, deriving, each

METRIC_PATTERN = r"^[a-z][a-z0-9_-]*/[A-Za-z0-9@_.-]+$"


class CheckpointSpec(Spec):
    """When to save, and which checkpoint to keep as the best."""

    every: int | None = Field(
        default=1000, ge=1, description="Save the latest checkpoint every this many steps (and at the end); null: end only."
    )
    keep_best_by: str | None = Field(
        default=None,
        pattern=METRIC_PATTERN,
        description="Metric that picks the best checkpoint, e.g. val/loss; null: keep only the latest.",
    )
    mode: Literal["min", "max"] = Field(default="min", description="Whether the best checkpoint has the lowest or highest metric.")


class MeshSpec(Spec):
    """Device mesh: batches are split over `data` x `fsdp`, parameters and optimizer state over `fsdp`."""

    data: int = Field(default=-1, ge=-1, description="Data-parallel axis size; -1: all devices left over.")
    fsdp: int = Field(default=1, ge=-1, description="Parameter-sharding axis size; -1: all devices left over.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(lambda: self._positive("data"), lambda: self._positive("fsdp"), self._one_left_over)

    def _positive(self, axis: str) -> Iterator[tuple[Path, str]]:
        if getattr(self, axis) == 0:
            yield (axis,), "must be a positive size or -1 (all devices left over)"

    def _one_left_over(self) -> Iterator[tuple[Path, str]]:
        if self.data == -1 and self.fsdp == -1:
            yield ("fsdp",), "only one axis can be -1"


class TrainSpec(Spec):
    """The training loop. Steps count optimizer updates, not micro-batches."""

    batch_size: int = Field(ge=1, description="Global batch: sequences per optimizer step, over all devices.")
    micro_batch_size: int | None = Field(
        default=None, ge=1, description="Sequences per forward/backward pass; resolved from batch_size when unset."
    )
    grad_accum_steps: int | None = Field(
        default=None,
        ge=1,
        description="Derived: batch_size / micro_batch_size micro-batches accumulated per step. May be given "
        "instead of micro_batch_size; must agree when both are given.",
    )
    steps: int | None = Field(default=None, ge=1, description="Optimizer steps to train; give steps or epochs.")
    epochs: float | None = Field(default=None, gt=0, description="Passes over the training data; give steps or epochs.")
    log_every: int = Field(default=10, ge=1, description="Log training metrics every this many steps.")
    eval_every: int | None = Field(
        default=None, ge=1, description="Compute validation loss every this many steps (and at the end); null: end only."
    )
    checkpoint: CheckpointSpec = Field(default={}, validate_default=True, description="Checkpointing.")
    mesh: MeshSpec = Field(default={}, validate_default=True, description="How the devices are arranged.")
    remat: Literal["none", "block", "dots"] = Field(
        default="none",
        description="Activation checkpointing (jax.checkpoint per transformer block): none keeps every activation "
        "for the backward pass; block keeps only each block's input and recomputes the rest (least memory, about "
        "a third more compute); dots also keeps the matmul outputs (jax's dots_with_no_batch_dims_saveable "
        "policy: most of the saving, little recompute). Same loss and gradients either way.",
    )

    def complete(self) -> None:
        with deriving(self, "micro_batch_size", "grad_accum_steps"):
            if self.micro_batch_size is None and self.grad_accum_steps is None:
                self.derive(micro_batch_size=self.batch_size, grad_accum_steps=1)
            elif self.micro_batch_size is None:
                if self.batch_size % self.grad_accum_steps == 0:
                    self.derive(micro_batch_size=self.batch_size // self.grad_accum_steps)
            elif self.grad_accum_steps is None and self.batch_size % self.micro_batch_size == 0:
                self.derive(grad_accum_steps=self.batch_size // self.micro_batch_size)

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._steps_or_epochs, self._micro_batch, self._grad_accum)

    def _steps_or_epochs(self) -> Iterator[tuple[Path, str]]:
        if (self.steps is None) == (self.epochs is None):
            yield ("steps",), "give exactly one of steps or epochs"

    def _micro_batch(self) -> Iterator[tuple[Path, str]]:
        if self.micro_batch_size is not None:
            if self.micro_batch_size > self.batch_size:
                yield ("micro_batch_size",), f"must be <= batch_size ({self.micro_batch_size} > {self.batch_size})"
            elif self.batch_size % self.micro_batch_size:
                yield ("micro_batch_size",), (
                    f"must divide batch_size ({self.batch_size} % {self.micro_batch_size} = "
                    f"{self.batch_size % self.micro_batch_size})"
                )

    def _grad_accum(self) -> Iterator[tuple[Path, str]]:
        if self.grad_accum_steps is not None:
            if self.micro_batch_size is None:
                yield ("grad_accum_steps",), (
                    f"must divide batch_size ({self.batch_size} % {self.grad_accum_steps} = "
                    f"{self.batch_size % self.grad_accum_steps})"
                )
            elif self.micro_batch_size * self.grad_accum_steps != self.batch_size:
                yield ("grad_accum_steps",), (
                    f"disagrees with batch_size / micro_batch_size ({self.batch_size} / {self.micro_batch_size})"
                )
