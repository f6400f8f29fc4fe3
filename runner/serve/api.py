"""The request bodies the server accepts: Hugging Face's Inference API (text generation, what the
Code Clippy VS Code extension sends), OpenAI's completions, and the problem page's.

Strict: a number where a string belongs, a string where a number belongs, or a key the server does
not know is refused (422) rather than guessed at. The bounds here are the ones that hold for any
model; those that depend on the served model (context length, --max-batch) are checked by the app.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..evals.sample import Sampling

MAX_INPUT_CHARS = 1_000_000  # a long document is cut to the context anyway; past this it is a mistake
MAX_NEW_TOKENS = 4096
MAX_SEQUENCES = 64
DEFAULT_NEW_TOKENS = 32

Stop = Annotated[str, Field(min_length=1, max_length=256)]
StopList = Annotated[list[Stop], Field(max_length=16)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerationParameters(Strict):
    """`parameters` of a text-generation request; null means the default."""

    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description=f"Default {DEFAULT_NEW_TOKENS}.")
    temperature: float | None = Field(None, ge=0.0, le=100.0, description="Default 1.0; 0 means greedy.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="0 or null: no top-k filter.")
    do_sample: bool | None = Field(None, description="Default true; false: greedy.")
    num_return_sequences: int | None = Field(None, ge=1, le=MAX_SEQUENCES)
    return_full_text: bool | None = Field(None, description="Default true: the input followed by the generation.")
    stop: StopList | None = Field(None, description="Generations are cut before the first of these strings.")
    max_time: float | None = Field(None, gt=0.0, le=600.0, description="Seconds; past it, what was generated so far.")


class InferenceOptions(Strict):
    """`options` of the Inference API: about the hosted service's caches and hardware; accepted, no effect here."""

    use_gpu: bool | None = None
    use_cache: bool | None = None
    wait_for_model: bool | None = None


class InferenceRequest(Strict):
    inputs: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    parameters: GenerationParameters = GenerationParameters()
    options: InferenceOptions | None = None

    def sampling(self) -> Sampling:
        p = self.parameters
        new = p.max_new_tokens or DEFAULT_NEW_TOKENS
        temperature = 1.0 if p.temperature is None else p.temperature
        if p.do_sample is False or temperature == 0.0:
            return Sampling(max_new_tokens=new)  # greedy; the filters do not apply (and do not split batches)
        return Sampling(temperature=temperature, top_p=p.top_p or 1.0, top_k=p.top_k or 0, max_new_tokens=new)


class StreamOptions(Strict):
    """`stream_options` of a streamed completion."""

    include_usage: bool | None = Field(None, description="A last chunk (before [DONE]) with the usage and no choices.")


class CompletionRequest(Strict):
    """OpenAI's /v1/completions (no logprobs)."""

    prompt: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    model: str | None = None
    max_tokens: int = Field(16, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0: greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_SEQUENCES)
    stop: Stop | StopList | None = None
    echo: bool = Field(False, description="Put the prompt before each completion.")
    stream: bool = Field(False, description="Server-sent events: text_completion chunks as the text comes, "
                                            "then `data: [DONE]`.")
    stream_options: StreamOptions | None = Field(None, description="Only with stream: true.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")

    def sampling(self) -> Sampling:
        if self.temperature == 0.0:
            return Sampling(max_new_tokens=self.max_tokens)
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_tokens)

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class SolveRequest(Strict):
    """The problem page: an APPS-style problem statement, solved with the APPS prompt of training."""

    question: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    starter_code: str = Field("", max_length=MAX_INPUT_CHARS)
    format: Literal["standard_input", "call_based"] = "standard_input"
    max_new_tokens: int = Field(256, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=100.0, description="0: greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_SEQUENCES)

    def sampling(self) -> Sampling:
        if self.temperature == 0.0:
            return Sampling(max_new_tokens=self.max_new_tokens)
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)
