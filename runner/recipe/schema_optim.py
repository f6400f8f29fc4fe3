"""Recipe parts for the optimizer and the learning-rate schedule."""


from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from .base import Path, Spec, each, tagged

NoDecay = Literal["bias", "norm", "embedding"]


def _decay_exclude_field():
    return Field(
        default=["bias", "norm", "embedding"],
        description="Parameter groups that get no weight decay: biases, LayerNorm parameters, token/position "
        "embeddings. GPT-Code-Clippy's AdamW mask was [bias, norm] (its embeddings were decayed).",
    )


def _grad_clip_field():
    return Field(default=1.0, gt=0, description="Clip gradients to this global L2 norm; null: no clipping.")


class AdamW(Spec):
    """AdamW (decoupled weight decay)."""

    type: Literal["adamw"] = Field(description="AdamW.")
    b1: float = Field(default=0.9, ge=0, lt=1, description="Decay of the first-moment estimate.")
    b2: float = Field(default=0.999, ge=0, lt=1, description="Decay of the second-moment estimate.")
    eps: float = Field(default=1e-8, gt=0, description="Added to the denominator for stability.")
    weight_decay: float = Field(default=0.0, ge=0, description="Decoupled weight decay, multiplied by the learning rate.")
    weight_decay_exclude: list[NoDecay] = _decay_exclude_field()
    grad_clip: float | None = _grad_clip_field()


class Adafactor(Spec):
    """Adafactor (factored second moments); its weight decay is really applied."""

    type: Literal["adafactor"] = Field(description="Adafactor.")
    weight_decay: float = Field(
        default=0.0, ge=0, description="Decoupled weight decay, multiplied by the learning rate (optax's own ignores it)."
    )
    weight_decay_exclude: list[NoDecay] = _decay_exclude_field()
    grad_clip: float | None = _grad_clip_field()
    decay_rate: float = Field(default=0.8, gt=0, lt=1, description="Exponent of the second-moment decay schedule.")
    clipping_threshold: float | None = Field(
        default=1.0, gt=0, description="Update clipping (RMS of the update); null: none."
    )
    factored: bool = Field(default=True, description="Factor the second moment of matrices into row and column sums.")
    min_dim_size_to_factor: int = Field(default=128, ge=1, description="Only factor dimensions at least this large.")
    multiply_by_parameter_scale: bool = Field(
        default=True, description="Scale updates by the parameters' RMS (relative step sizes)."
    )
    momentum: float | None = Field(default=None, ge=0, lt=1, description="First-moment decay; null: no momentum.")
    eps: float = Field(default=1e-30, gt=0, description="Regulariser of the squared gradient.")


Optimizer = tagged(AdamW, Adafactor)


def _init_lr_field():
    return Field(default=0.0, ge=0, description="Learning rate at step 0, where the warmup starts.")


def _warmup_steps_field():
    return Field(default=0, ge=0, description="Steps of linear warmup from init_lr to peak_lr (optimizer steps).")


class WarmupCosine(Spec):
    """Linear warmup from init_lr to peak_lr, cosine decay to end_lr over decay_steps, then flat."""

    type: Literal["warmup_cosine"] = Field(description="Warmup, then cosine decay.")
    init_lr: float = _init_lr_field()
    peak_lr: float = Field(gt=0, description="Learning rate at the end of the warmup.")
    warmup_steps: int = _warmup_steps_field()
    decay_steps: int = Field(ge=1, description="Steps of cosine decay after the warmup.")
    end_lr: float = Field(default=0.0, ge=0, description="Learning rate at the end of the decay, held after it.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from _lr_order(self.init_lr, self.peak_lr, self.end_lr)


class WarmupLinear(Spec):
    """Linear warmup from init_lr to peak_lr, then linear decay to end_lr at the last training step."""

    type: Literal["warmup_linear"] = Field(description="Warmup, then linear decay to the last step.")
    init_lr: float = _init_lr_field()
    peak_lr: float = Field(gt=0, description="Learning rate at the end of the warmup.")
    warmup_steps: int = _warmup_steps_field()
    end_lr: float = Field(default=0.0, ge=0, description="Learning rate at the last training step.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from _lr_order(self.init_lr, self.peak_lr, self.end_lr)


class Constant(Spec):
    """The same learning rate at every step."""

    type: Literal["constant"] = Field(description="Constant learning rate.")
    peak_lr: float = Field(gt=0, description="The learning rate.")


def _lr_order(init_lr: float, peak_lr: float, end_lr: float) -> Iterator[tuple[Path, str]]:
    yield from each(lambda: _at_most_peak("init_lr", init_lr, peak_lr), lambda: _at_most_peak("end_lr", end_lr, peak_lr))


def _at_most_peak(name: str, lr: float, peak_lr: float) -> Iterator[tuple[Path, str]]:
    if lr > peak_lr:
        yield (name,), f"must be <= peak_lr ({lr:g} > {peak_lr:g})"


Schedule = tagged(WarmupCosine, WarmupLinear, Constant)
