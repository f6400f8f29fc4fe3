"""Recipe parts for evaluation suites: validation loss, HumanEval and APPS."""


from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from .base import LocalPath, Path, Spec, at_most, each, tagged
from .schema_data import ALL_DIFFICULTIES, AppsPrompt, Difficulty
from .schema_model import MAX_TOKENS

# A program (or test case) that runs an hour is a hung one; a larger limit only postpones the
# verdict (and one past ~10**7 s overflows the timers that enforce it).
MAX_TIMEOUT_S = 3600.0
GENERATION_BOUNDS = {"max_new_tokens": MAX_TOKENS, "timeout_s": MAX_TIMEOUT_S}

# Codex paper (Chen et al. 2021): completions stop at the next top-level statement.
CODEX_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


class SamplingSpec(Spec):
    """One sampling setting and the pass@k values it is used for."""

    temperature: float = Field(ge=0, description="Softmax temperature; 0 is greedy decoding.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling: smallest token set with this mass.")
    top_k: int = Field(default=0, ge=0, description="Sample among the k likeliest tokens; 0: no limit.")
    n_samples: int = Field(default=1, ge=1, description="Completions drawn per problem.")
    k: list[int] = Field(
        default=[1], min_length=1, description="pass@k values estimated from these samples."
    )

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._k_values, self._k_repeated, self._greedy)

    def _k_values(self) -> Iterator[tuple[Path, str]]:
        for i, k in enumerate(self.k):
            if k < 1:
                yield ("k", i), f"must be >= 1 (got {k})"
            elif k > self.n_samples:
                yield ("k", i), f"pass@{k} needs at least {k} samples per problem (n_samples is {self.n_samples})"

    def _k_repeated(self) -> Iterator[tuple[Path, str]]:
        if len(set(self.k)) != len(self.k):
            yield ("k",), f"has repeated values ({self.k})"

    def _greedy(self) -> Iterator[tuple[Path, str]]:
        if self.temperature == 0 and self.n_samples > 1:
            yield ("n_samples",), "greedy decoding (temperature 0) gives one distinct completion; set n_samples: 1"


def _name_field(suite: str):
    return Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description=f"Results go to eval/<name>/; resolved to {suite!r} when unset. Names must be unique.",
    )


def _generation_fields(max_new_tokens: int, timeout_s: float, what: str):
    return (
        Field(default=max_new_tokens, ge=1, description="Most tokens generated per completion."),
        Field(default=32, ge=1, description="Sequences decoded together (prompts x samples)."),
        Field(default=None, ge=1, description="Evaluate only the first this many problems; null: all."),
        Field(default=timeout_s, gt=0, description=f"Seconds allowed per {what}."),
    )


class LossEval(Spec):
    """Loss and perplexity on the validation data."""

    suite: Literal["loss"] = Field(description="Validation loss and perplexity.")
    name: str | None = _name_field("loss")
    batch_size: int | None = Field(default=None, ge=1, description="Sequences per batch; unset: train.micro_batch_size.")
    max_batches: int | None = Field(default=None, ge=1, description="Stop after this many batches; null: all.")


_HE = _generation_fields(512, 3.0, "program (prompt + completion + tests)")


class HumanEvalEval(Spec):
    """HumanEval (164 problems): sample completions, run the tests, estimate pass@k. Defaults: the Codex protocol."""

    suite: Literal["humaneval"] = Field(description="OpenAI HumanEval.")
    name: str | None = _name_field("humaneval")
    sampling: list[SamplingSpec] = Field(
        # Codex paper: T=0.2 for pass@1, T=0.8 for pass@10 and pass@100, top_p 0.95, n=200.
        default=[
            {"temperature": 0.2, "top_p": 0.95, "n_samples": 200, "k": [1]},
            {"temperature": 0.8, "top_p": 0.95, "n_samples": 200, "k": [10, 100]},
        ],
        validate_default=True,
        min_length=1,
        description="Sampling settings, each with the pass@k values it reports. Default: the Codex protocol.",
    )
    stop: list[str] = Field(
        default=CODEX_STOP, description="Completions are cut at the first of these strings."
    )
    max_new_tokens: int = _HE[0]
    batch_size: int = _HE[1]
    limit: int | None = _HE[2]
    timeout_s: float = _HE[3]

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(lambda: at_most(self, GENERATION_BOUNDS), lambda: _unique_k(self.sampling))


_APPS = _generation_fields(1024, 4.0, "test case")


class AppsEval(Spec):
    """APPS: generate programs, run each test case, report strict accuracy, test-case average and pass@k."""

    suite: Literal["apps"] = Field(description="The APPS benchmark.")
    name: str | None = _name_field("apps")
    path: LocalPath | None = Field(
        default=None, description="Local JSON Lines file with the APPS fields; unset: the hub dataset `hub`."
    )
    hub: str = Field(default="codeparrot/apps", min_length=1, description="Hub dataset id used when path is unset.")
    split: Literal["train", "test"] = Field(default="test", description="APPS split.")
    difficulties: list[Difficulty] = Field(
        default=ALL_DIFFICULTIES, min_length=1, description="Difficulties evaluated."
    )
    sampling: list[SamplingSpec] = Field(
        default=[{"temperature": 0.0, "n_samples": 1, "k": [1]}],
        validate_default=True,
        min_length=1,
        description="Sampling settings, each with the pass@k values it reports. Default: greedy, pass@1.",
    )
    stop: list[str] = Field(default=[], description="Completions are cut at the first of these strings.")
    prompt: AppsPrompt = Field(
        default="apps", description="apps: the APPS generation prompt (hendrycks/apps generate_prompt). "
        "code-clippy: GPT-Code-Clippy's training prompt, to evaluate its released checkpoints as they were trained.")
    max_new_tokens: int = _APPS[0]
    batch_size: int = _APPS[1]
    limit: int | None = _APPS[2]
    timeout_s: float = _APPS[3]

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(lambda: at_most(self, GENERATION_BOUNDS), lambda: _unique_k(self.sampling))


def _unique_k(sampling: list[SamplingSpec]) -> Iterator[tuple[Path, str]]:
    seen: dict[int, int] = {}
    for i, spec in enumerate(sampling):
        for j, k in enumerate(spec.k):
            if k in seen:
                yield ("sampling", i, "k", j), f"pass@{k} is already reported by sampling[{seen[k]}]"
            seen.setdefault(k, i)


EvalSuite = tagged(LossEval, HumanEvalEval, AppsEval, key="suite")
