"""Property: whatever a recipe file or a `--set` value holds, loading it (`load_recipe`, the first
thing `ccrun validate`, `resolve` and `run` do) gives a recipe or raises the project's bad-input
error (RecipeError, a BadInput: exit 2, one located line per problem): never another exception,
never a hang.

Inputs are built from the schema's own dotted keys (walked from Recipe, so new fields are fuzzed
as they appear), with values of every YAML kind and size: anchors and aliases (recursive ones
too: PyYAML composes `&a [*a]` as a list that contains itself), tags (PyYAML's unsafe loaders
build objects from `!!python/...`, and yaml.safe_load refuses them; ours must refuse them too),
scalars that YAML 1.1 and 1.2 read differently (`yes`, `0o17`, `1_000`, dates), non-finite and
oversized numbers, control characters, and plain garbage. Runs in-process (no `python -m` per
example) so 200-odd examples take seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
from pathlib import Path
from typing import get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.common.errors import BadInput
from runner.recipe import walk
from runner.recipe.errors import MAX_SHOWN
from runner.recipe.load import load_recipe
from runner.recipe.resolve import recipe_hash, to_yaml
from runner.recipe.schema import Recipe

# A hang is what this file looks for: each example gets HANG_S of wall time (SIGALRM) besides
# hypothesis' deadline (which only measures an example that ends).
HANG_S = 20
FUZZ = settings(deadline=5000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def dotted_keys(annotation, prefix: str = "") -> list[str]:
    """Every dotted key of the schema below `annotation`: union variants' keys all, lists as [0]."""
    found = walk.union_variants(annotation)
    models = list(dict.fromkeys(found[1].values())) if found else [annotation] if walk.is_model(annotation) else []
    out = []
    for model in models:
        for name, field in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            out.append(key)
            core, _ = walk.field_annotation(field)
            if get_origin(core) is list:
                core, _ = walk.strip(get_args(core)[0])
                key += "[0]"
            if walk.is_model(core) or walk.union_variants(core):
                out.extend(dotted_keys(core, key))
    return sorted(set(out))


KEYS = dotted_keys(Recipe)
FIELD_NAMES = sorted({k.rsplit(".", 1)[-1].split("[")[0] for k in KEYS})

# A valid recipe that reaches most of the schema: a scratch model (so sizes and the context are
# checked), training, and one suite of each kind (so evals[0..2] exist for --set).
SECTIONS = {
    "name": "fuzz",
    "model": "{arch: gpt-neo, init: scratch, config: {n_layer: 2, d_model: 32, n_head: 4, max_positions: 64}}",
    "tokenizer": "{name: gpt2}",
    "data": "{sources: [{type: jsonl, paths: [x.jsonl]}], seq_len: 32, validation: {fraction: 0.1}}",
    "optimizer": "{type: adamw}",
    "schedule": "{type: constant, peak_lr: 1.0e-4}",
    "train": "{batch_size: 8, steps: 10, eval_every: 5}",
    "evals": "[{suite: loss}, {suite: humaneval, max_new_tokens: 16}, {suite: apps, path: x.jsonl, max_new_tokens: 16}]",
}
RECIPE = "".join(f"{key}: {value}\n" for key, value in SECTIONS.items())

# Scalars as written in YAML, chosen for how readers disagree on them or choke on them.
WEIRD = [
    "", "~", "null", "NULL", "true", "False", "yes", "no", "on", "off", "y",  # YAML 1.1 booleans are strings here
    ".inf", "-.inf", ".nan", ".NaN", "1e400", "-1e400", "1.0e-400", "-0", "-0.0", "+1",
    "0x7fffffffffffffff", "0x8000000000000000", "0x" + "f" * 40, "9" * 30, "9223372036854775808",
    "18446744073709551616", "-9223372036854775809", "0o777", "0b101", "1_000", "1__0", "0x_1", "017", "1:20",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "=", "<<", "'", '"', "''", '""', "'a''b'", '"\\x00"', '"\\u0000"',
    '"\\ud800"', '"\\U0010ffff"', '"\\e[31m"', '"a\\nb"', "|", ">", "- a", "? a", ":", "a: b", "a #b", "#", "@", "`",
    "%YAML 1.1", "---", "...", "[", "]", "{", "}", "[a, b", "{a: 1", "&a", "*a", "*undefined", "&a [*a]",
    "&a {k: *a}", "&a [&a 1]", "!!python/object:os.system {}", "!!python/object/apply:os.system [echo]",
    "!!python/name:os.system", "!!binary aGk=", "!!timestamp 2001-12-14", "!!set {a}", "!!omap [a: 1]",
    "!!str 5", "!!int 5", "!!int x", "!!float 1", "!!bool yes", "!!null ''", "!!map {}", "!!seq []", "!!str [a]",
    "!foo bar", "!<tag:x,2000:y> z", "!", "\t", "a\tb", "\x00", "a\x01b", "\x1b[31m", "\ufeff", "\x85", "\u2028",
    "\udce9", "\U0001f600", "/dev/zero", "/dev/stdin", "/proc/self/mem", ".", "..", "~/x", "fuzz.yaml",
]
FLOATS = st.floats().map(lambda f: ".nan" if math.isnan(f) else (".inf" if f > 0 else "-.inf") if math.isinf(f) else repr(f))
SCALARS = st.one_of(
    st.sampled_from(WEIRD),
    st.integers().map(str),
    st.integers(-(2**70), 2**70).map(str),
    FLOATS,
    st.text(max_size=40).map(json.dumps),  # double-quoted, any character (escaped; lone surrogates too)
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40).map(json.dumps),
    st.text(alphabet="abcxyz019._-/ ", min_size=1, max_size=12),  # plain
    st.text(max_size=300),  # anything at all, as written
)
MAP_KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(["<<", "?", "1", "null", "true", "[a]", "a b"]))


@st.composite
def nodes(draw, anchors: list[str], depth: int = 0) -> str:
    """A YAML node in flow style; it may anchor itself (before its items, so an alias inside
    refers to it: recursive), alias an anchor seen before, or carry a tag."""
    kinds = ["scalar", "scalar", "list", "map", "alias"] if depth < 4 else ["scalar", "alias"]
    kind = draw(st.sampled_from(kinds))
    if kind == "alias" and anchors:
        return "*" + draw(st.sampled_from(anchors))
    prefix = ""
    if draw(st.integers(0, 4)) == 0:
        prefix += f"&a{len(anchors)} "
        anchors.append(f"a{len(anchors)}")
    if draw(st.integers(0, 29)) == 0:
        prefix += draw(st.sampled_from(["!!python/object:os.system", "!!set", "!!omap", "!!str", "!!map", "!x"])) + " "
    if kind == "list":
        return prefix + "[" + ", ".join(draw(st.lists(nodes(anchors, depth + 1), max_size=4))) + "]"
    if kind == "map":
        items = draw(st.lists(st.tuples(MAP_KEYS, nodes(anchors, depth + 1)), max_size=4))
        return prefix + "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    scalar = draw(SCALARS)
    return prefix + (json.dumps(scalar) if depth and any(c in scalar for c in ",[]{}#") else scalar)


@st.composite
def documents(draw) -> str:
    """The valid recipe with some sections dropped or replaced by random nodes, aliases shared
    across the document, and maybe extra keys (extends among them)."""
    anchors: list[str] = []
    lines = []
    for key, value in SECTIONS.items():
        choice = draw(st.sampled_from(["keep"] * 6 + ["drop", "replace"]))
        if choice == "keep":
            lines.append(f"{key}: {value}")
        elif choice == "replace":
            lines.append(f"{key}: {draw(nodes(anchors))}")
    for key in draw(st.lists(st.sampled_from([*FIELD_NAMES, "extends", "sweep", "extends"]), max_size=2)):
        lines.append(f"{key}: {draw(nodes(anchors))}")
    return "\n".join(lines) + "\n"


@st.composite
def overrides(draw) -> list[str]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(*[st.sampled_from(KEYS)] * 6, st.sampled_from(KEYS).map(lambda k: f"sweep.{k}"),
                             st.text(alphabet="abz.[]0_-", max_size=12)))
        value = draw(st.one_of(SCALARS, nodes([])))
        out.append(f"{key}={value}")
    return out


class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: float):
    def alarm(signum, frame):
        raise Hang(f"still loading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_refuses(path: Path, sets: list[str] = ()) -> None:
    """The property: a recipe (that resolves and hashes, as `ccrun resolve` does), or BadInput."""
    with no_hang(HANG_S):
        try:
            loaded = load_recipe(path, sets, allow_fragment=True)
        except BadInput as exc:
            # One printable line per problem (a key with a newline or an escape sequence in it is
            # shown escaped), at most MAX_SHOWN and a count of the rest.
            lines = str(exc).split("\n")
            problems = getattr(exc, "problems", lines)
            shown = min(len(problems), MAX_SHOWN) + (len(problems) > MAX_SHOWN)
            assert len(lines) == shown and all(line.strip() and line.isprintable() for line in lines), repr(str(exc))
            return
        if loaded.recipe is not None:
            to_yaml(loaded.recipe)
            recipe_hash(loaded.recipe)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "fuzz.yaml").write_text(RECIPE)
    assert load_recipe(folder / "fuzz.yaml").recipe is not None  # the starting point is valid (and warm)
    return folder


def test_schema_walk_finds_the_keys():
    assert {"model.config.n_layer", "evals[0].max_new_tokens", "data.sources[0].paths", "seed"} <= set(KEYS)


@settings(FUZZ, max_examples=100)
@given(sets=overrides())
def test_set_values(scratch, sets):
    loads_or_refuses(scratch / "fuzz.yaml", sets)


@settings(FUZZ, max_examples=70)
@given(text=documents())
def test_documents(scratch, text):
    path = scratch / "doc.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))  # a lone surrogate: bytes that are not UTF-8
    loads_or_refuses(path)


@settings(FUZZ, max_examples=50)
@given(text=st.lists(st.one_of(st.sampled_from(WEIRD), st.sampled_from([*FIELD_NAMES, ": ", "\n", "  ", "- ", ", "]),
                               st.text(max_size=5)), max_size=40).map("".join))
def test_raw_text(scratch, text):
    path = scratch / "raw.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    loads_or_refuses(path)
