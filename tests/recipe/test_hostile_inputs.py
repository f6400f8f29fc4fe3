"""Hostile recipes and `--set` values: each is bad input, so `ccrun validate` says where and what on
one line (`file:line:col: key: message`, or `--set ARG: key: message`), exits 2 without a
traceback, in about a second, in little memory, and writes nothing.

Each case used to break that promise (the numbers are from before the fix): a 353-byte alias bomb
took 16 s and 426 MB, a recursive alias and 10,000 nested brackets raised RecursionError,
`extends: ''` a KeyError, `extends: /dev/zero` read until MemoryError, a FIFO hung,
`n_layer: 0x7fffffffffffffff` hung building its per-layer list, and values such as a 2**63 seed,
`timeout_s: .inf` or a 300-character name validated, then crashed the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from runner.recipe.errors import RecipeError
from runner.recipe.load import MAX_EXTENDS_DEPTH, MAX_FILES, load_recipe
from runner.recipe.yamlio import MAX_CHARS, MAX_DEPTH, MAX_VALUES

from ..helpers import ccrun_here

BASE = "name: t\nmodel: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}\n"
SCRATCH = (
    "name: t\n"
    "model: {arch: gpt-neo, init: scratch, config: {n_layer: 2, d_model: 32, n_head: 4, max_positions: 128}}\n"
    "tokenizer: {name: gpt2}\n"
)
TRAINING = (
    "data: {sources: [{type: jsonl, paths: [x.jsonl]}], seq_len: 64}\n"
    "optimizer: {type: adamw}\n"
    "schedule: {type: constant, peak_lr: 1.0e-4}\n"
    "train: {batch_size: 8, steps: 10}\n"
)

# A fresh `python -m runner.cli` takes about a second here; a case that took 16 s, or hung, before
# must now take no more than a few. In-process loads must take well under a second.
CLI_SECONDS = 10.0
LOAD_SECONDS = 1.0


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: each level lists the previous one 9 times (9**9 strings in 353 bytes)."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = [f'{names[0]}: &{names[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def validate(tmp_path: Path, *args: str, fresh: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    """`ccrun validate ARGS` in tmp_path, with a timeout: several of these inputs used to hang, and a
    hang must fail this test, not stall the suite. In this process (tests.helpers.ccrun_here: a fresh
    process's answer), or with `fresh` in a new one as tests.helpers.ccrun runs it."""
    before = listing(tmp_path)
    start = time.monotonic()
    if fresh:
        out = subprocess.run([sys.executable, "-m", "runner.cli", "validate", *args],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    else:
        out = ccrun_here("validate", *args, cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - start
    assert listing(tmp_path) == before, "validate changed files on disk"
    return out, elapsed


def assert_refused(out: subprocess.CompletedProcess, elapsed: float, pattern: str) -> None:
    """Exit 2, no traceback, nothing on stdout, one line on stderr matching `pattern` whole."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert re.fullmatch(pattern, out.stderr.rstrip("\n")), out.stderr
    assert elapsed < CLI_SECONDS, f"took {elapsed:.1f} s"


def write(tmp_path: Path, text: str | bytes, name: str = "bad.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return name


def load_fast(path: Path, *overrides: str, max_mb: float = 64) -> RecipeError:
    """Load in this process, expecting a RecipeError; time and peak memory bounded."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(RecipeError) as caught:
            load_recipe(path, overrides, allow_fragment=True)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < LOAD_SECONDS * 3, f"took {elapsed:.1f} s (tracemalloc slows it about twice)"
    assert peak < max_mb * 2**20, f"peaked at {peak / 2**20:.0f} MB"
    return caught.value


# --- YAML: aliases, nesting, characters, size -----------------------------------------------


def test_alias_bomb_is_refused_at_the_alias_that_passes_the_budget(tmp_path):
    text = BASE + "sweep:\n" + "".join(f"  {line}\n" for line in billion_laughs().splitlines())
    assert len(billion_laughs()) < 400
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    # a..d hold 10 + 91 + 820 + 7381 values; the first *d under e passes MAX_VALUES (10,000).
    lines = text.splitlines()
    line = next(i for i, x in enumerate(lines, 1) if x.startswith("  e:"))
    col = lines[line - 1].index("*d") + 1
    assert_refused(out, elapsed, rf"bad\.yaml:{line}:{col}: sweep\.e\[0\]: alias \*d expands to 7381 values, "
                                 rf"past the limit of {MAX_VALUES} values in one recipe \(aliases expanded\)")
    load_fast(tmp_path / "bad.yaml", max_mb=32)


def test_alias_bomb_in_set_is_refused(tmp_path):
    value = "[" + ",".join(["&x [" + ",".join(["lol"] * 1000) + "]"] + ["*x"] * 200) + "]"
    out, elapsed = validate(tmp_path, write(tmp_path, BASE), "--set", f"evals={value}")
    assert_refused(out, elapsed, r"--set evals=.*: evals: alias \*x expands to 1001 values, past the limit "
                                 rf"of {MAX_VALUES} values in one recipe \(aliases expanded\)")


def test_aliases_of_long_text_are_refused(tmp_path):
    # Values alone do not measure it: 100 aliases of a 200,000-character string are 100 values
    # that resolve, hash and print as 20 MB.
    text = BASE + f'description: &s "{"x" * 200_000}"\nsweep: {{a: [' + ",".join(["*s"] * 100) + "]}\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, rf"bad\.yaml:4:\d+: sweep\.a\[4\]: alias \*s expands to 200000 characters of text, "
                                 rf"past the limit of {MAX_CHARS} in one recipe \(aliases expanded\)")


def test_the_budget_is_shared_by_the_files_a_recipe_extends(tmp_path):
    for i in range(8):
        write(tmp_path, f"sweep: {{seed: [{','.join(['1'] * 2000)}]}}\n", f"b{i}.yaml")
    bases = ", ".join(f"b{i}.yaml" for i in range(8))
    out, elapsed = validate(tmp_path, write(tmp_path, f"extends: [{bases}]\n" + BASE))
    assert_refused(out, elapsed, rf"b4\.yaml:1:\d+: sweep\.seed\[\d+\]: more than {MAX_VALUES} values in one recipe")


def test_recursive_alias_in_file(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + "description: &a [*a]\n"))
    assert_refused(out, elapsed, r"bad\.yaml:3:18: description\[0\]: alias \*a is inside &a, the collection it "
                                 r"names \(a structure that contains itself; a recipe cannot hold one\)")


def test_recursive_alias_in_set(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + TRAINING), "--set", "train.steps=&a [*a]")
    assert_refused(out, elapsed, r"--set train\.steps=&a \[\*a\]: train\.steps: alias \*a is inside &a, .*")


def test_recursive_alias_as_a_key(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + "tokenizer: &t {*t : 1}\n"))
    assert_refused(out, elapsed, r"bad\.yaml:3:16: tokenizer: alias \*t is inside &t, .*")


def test_deep_nesting_is_refused_where_it_passes_the_limit(tmp_path):
    text = BASE + "description: " + "[" * 100 + "]" * 100 + "\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, rf"bad\.yaml:3:{14 + MAX_DEPTH - 1}: description(\[0\]){{{MAX_DEPTH - 1}}}: "
                                 rf"nested deeper than {MAX_DEPTH} levels")


def test_very_deep_nesting_is_refused_by_libyaml(tmp_path):
    # libyaml (>= 0.2.5) stops at 1000 levels of flow nesting on its own, while scanning ahead.
    text = BASE + "description: " + "[" * 10_000 + "]" * 10_000 + "\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, r"bad\.yaml:3:\d+: (YAML syntax error: exceeded maximum nesting depth .*|"
                                 rf"description(\[0\]){{{MAX_DEPTH - 1}}}: nested deeper than {MAX_DEPTH} levels)")
    load_fast(tmp_path / "bad.yaml")


def test_deep_nesting_through_an_alias(tmp_path):
    deep = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + f"sweep: {{a: &d {deep}, b: [[*d]]}}\n"))
    assert_refused(out, elapsed, rf"bad\.yaml:3:\d+: sweep\.b\[0\]\[0\]: alias \*d nests deeper than {MAX_DEPTH} "
                                 r"levels when expanded")


def test_nul_byte_is_located_on_its_line(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, "name: t\ndescri\0ption: x\n"))
    assert_refused(out, elapsed, r"bad\.yaml:2:7: control character U\+0000 is not allowed in YAML")


def test_non_utf8_bytes_are_located(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE.encode() + b"description: caf\xe9 au lait\n"))
    assert_refused(out, elapsed, r"bad\.yaml:3:17: not UTF-8 text \(byte 0xe9: invalid continuation byte\)")


def test_non_utf8_in_set_is_refused(tmp_path):
    # What Python makes of an argv byte that is not UTF-8 (surrogateescape).
    write(tmp_path, BASE)
    with pytest.raises(RecipeError, match=r"^--set description=caf\\udce9: not UTF-8 text \(byte 0xe9\)$"):
        load_recipe(tmp_path / "bad.yaml", ["description=caf\udce9"])


def test_a_key_with_a_newline_or_an_escape_sequence_stays_on_one_line(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + '"a\\nb\\e[31m": 1\n'))
    assert_refused(out, elapsed, r"bad\.yaml:3:1: a\\nb\\x1b\[31m: unknown key; expected one of: .*")


def test_huge_file_is_refused_by_its_size(tmp_path):
    with open(tmp_path / "huge.yaml", "wb") as f:  # 50 MB, sparse: nothing to read before refusing
        f.truncate(50 << 20)
    out, elapsed = validate(tmp_path, "huge.yaml")
    assert_refused(out, elapsed, r"file too large \(a recipe file holds at most 1 MiB\): huge\.yaml")


def test_half_a_megabyte_of_values_is_refused_quickly(tmp_path):
    text = BASE + "sweep: {seed: [" + ",".join(["1"] * 250_000) + "]}\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, rf"bad\.yaml:3:\d+: sweep\.seed\[\d+\]: more than {MAX_VALUES} values in one recipe")
    load_fast(tmp_path / "bad.yaml")


def test_python_tags_are_refused_not_constructed(tmp_path):
    # PyYAML's unsafe loaders build objects from these tags; a recipe only ever holds plain values.
    text = BASE + "description: !!python/object/apply:os.system [touch pwned]\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, r"bad\.yaml:3:14: description: unsupported YAML tag !!python/object/apply:os\.system: .*")
    assert not (tmp_path / "pwned").exists()


def test_integer_too_large_for_64_bits(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + "seed: 0x" + "f" * 100_000 + "\n"))
    assert_refused(out, elapsed, r"bad\.yaml:3:7: seed: integer too large \(more than 64 bits\)")


# --- extends ------------------------------------------------------------------------------------


def test_extends_empty_string(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: ''\n" + BASE))
    assert_refused(out, elapsed, r"bad\.yaml:1:10: extends: is empty; give a file path")


def test_extends_symlink_loop(tmp_path):
    os.symlink("loop.yaml", tmp_path / "loop.yaml")
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: loop.yaml\n" + BASE))
    assert_refused(out, elapsed, r"bad\.yaml:1:10: extends: cannot read 'loop\.yaml': a symlink loop")


def test_extends_chain_of_1100_files_is_cut_at_the_limit(tmp_path):
    for i in range(1100):
        write(tmp_path, f"extends: f{i + 1}.yaml\nseed: {i}\n", f"f{i}.yaml")
    write(tmp_path, BASE, "f1100.yaml")
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: f0.yaml\n" + BASE))
    last = MAX_EXTENDS_DEPTH - 2  # bad.yaml, f0 ... f62: 64 files
    assert_refused(out, elapsed, rf"f{last}\.yaml:1:10: extends: chain of more than {MAX_EXTENDS_DEPTH} files: "
                                 rf"bad\.yaml -> f0\.yaml -> f1\.yaml -> \.\.\. \(60 more\) -> f{last}\.yaml -> f{last + 1}\.yaml")
    load_fast(tmp_path / "bad.yaml")


def test_extends_fan_out_is_bounded(tmp_path):
    # A diamond reads a base once per path to it: 20 levels of two would read a million files.
    write(tmp_path, "seed: 1\n", "leaf.yaml")
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: [" + ", ".join(["leaf.yaml"] * 300) + "]\n" + BASE))
    assert_refused(out, elapsed, rf"bad\.yaml:1:\d+: extends: more than {MAX_FILES} files to read through extends")


def test_extends_a_device(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: /dev/zero\n" + BASE), fresh=True)
    assert_refused(out, elapsed, r"bad\.yaml:1:10: extends: not a regular file \(a character device\): /dev/zero")


def test_validate_a_device(tmp_path):
    out, elapsed = validate(tmp_path, "/dev/zero", fresh=True)
    assert_refused(out, elapsed, r"not a regular file \(a character device\): /dev/zero")


def test_extends_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: pipe.yaml\n" + BASE), fresh=True)
    assert_refused(out, elapsed, r"bad\.yaml:1:10: extends: not a regular file \(a named pipe \(FIFO\)\): pipe\.yaml")


def test_extends_a_directory_keeps_its_message(tmp_path):
    (tmp_path / "base").mkdir()
    out, elapsed = validate(tmp_path, write(tmp_path, "extends: base\n" + BASE))
    assert_refused(out, elapsed, r"bad\.yaml:1:10: extends: is a directory, not a recipe file: base")


# --- model sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1000000000", "0x7fffffffffffffff"])
def test_n_layer_is_bounded(tmp_path, value):
    out, elapsed = validate(tmp_path, write(tmp_path, SCRATCH), "--set", f"model.config.n_layer={value}")
    assert_refused(out, elapsed, rf"--set model\.config\.n_layer={value}: model\.config\.n_layer: must be <= 1024 "
                                 rf"\(got {int(value, 0)}\)")


@pytest.mark.parametrize("key, bound", [("d_model", 65536), ("n_head", 1024), ("d_ff", 262144),
                                        ("vocab_size", 1048576), ("max_positions", 1048576),
                                        ("window_size", 1048576)])
def test_model_sizes_are_bounded(tmp_path, key, bound):
    write(tmp_path, SCRATCH)
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "bad.yaml", [f"model.config.{key}={bound * 4}"])
    expected = f"--set model.config.{key}={bound * 4}: model.config.{key}: must be <= {bound} (got {bound * 4})"
    assert expected in str(caught.value).splitlines()


# --- values that validated, then crashed the run ----------------------------------------------


def test_seed_beyond_what_numpy_and_jax_take(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + "seed: 9223372036854775808\n"))
    assert_refused(out, elapsed, r"bad\.yaml:3:7: seed: must be <= 4294967295 \(2\*\*32 - 1\) "
                                 r"\(got 9223372036854775808\)")


def test_max_new_tokens_beyond_a_scratch_models_context(tmp_path):
    text = SCRATCH + "evals: [{suite: humaneval, max_new_tokens: 128}]\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, r"bad\.yaml:4:44: evals\[0\]\.max_new_tokens: must be < model\.config\.max_positions, "
                                 r"leaving room for the prompt \(128 >= 128\)")


def test_default_max_new_tokens_is_checked_too(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, SCRATCH + "evals: [{suite: apps}]\n"))
    assert_refused(out, elapsed, r"bad\.yaml:4:9: evals\[0\]\.max_new_tokens: must be < model\.config\.max_positions, "
                                 r"leaving room for the prompt \(1024 >= 128\)")


@pytest.mark.parametrize("value, shown", [(".inf", r"\.inf"), (".nan", r"\.nan"), ("-.inf", r"-\.inf")])
def test_timeout_must_be_finite(tmp_path, value, shown):
    text = BASE + f"evals: [{{suite: humaneval, timeout_s: {value}}}]\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, rf"bad\.yaml:3:39: evals\[0\]\.timeout_s: must be a finite number \(got {shown}\)")


def test_timeout_is_bounded(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + "evals: [{suite: apps, timeout_s: 1.0e+300}]\n"))
    assert_refused(out, elapsed, r"bad\.yaml:3:34: evals\[0\]\.timeout_s: must be <= 3600 \(got 1e\+300\)")


def test_long_name(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE.replace("name: t", "name: " + "n" * 300)))
    assert_refused(out, elapsed, r"bad\.yaml:1:7: name: must be at most 100 characters \(got 300\)")


def test_long_name_on_dry_run_writes_nothing(tmp_path):
    write(tmp_path, BASE.replace("name: t", "name: " + "n" * 300))
    out = ccrun_here("run", "bad.yaml", "--dry-run", "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr == "bad.yaml:1:7: name: must be at most 100 characters (got 300)\n"
    assert not (tmp_path / "runs").exists()


def test_sweep_grid_is_bounded(tmp_path):
    text = BASE + TRAINING + "sweep: {seed: [" + ",".join(map(str, range(200))) + "], train.steps: [" + \
        ",".join(map(str, range(1, 101))) + "]}\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert_refused(out, elapsed, r"bad\.yaml:7:8: sweep: makes 20000 runs; a sweep makes at most 10000")


def test_a_sweep_as_large_as_the_budget_allows_validates_in_linear_time(tmp_path):
    # Each value is validated as a point of its own; copying the whole sweep for each made 9,000
    # values take 22 s.
    write(tmp_path, BASE + TRAINING + "sweep: {seed: [" + ",".join(map(str, range(9000))) + "]}\n")
    write(tmp_path, BASE + TRAINING + "sweep: {seed: [0, 1]}\n", "warm.yaml")
    load_recipe(tmp_path / "warm.yaml")  # warm: pydantic builds its validators on first use
    start = time.monotonic()
    assert load_recipe(tmp_path / "bad.yaml").recipe is not None
    assert time.monotonic() - start < 5 * LOAD_SECONDS


# --- --set below a value that is not a mapping --------------------------------------------------


def test_set_below_a_scalar_replaces_it(tmp_path):
    write(tmp_path, BASE.replace("model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}", "model: 5"))
    loaded = load_recipe(tmp_path / "bad.yaml", ["model.arch=gpt2", "model.checkpoint=gpt2"])
    assert loaded.recipe.model.arch == "gpt2"


def test_a_list_as_a_tag_is_an_error_not_a_crash(tmp_path):
    out, elapsed = validate(tmp_path, write(tmp_path, BASE + TRAINING), "--set", "optimizer={type: [1]}",
                            "--set", "optimizer.b1=0.5")
    assert "Traceback" not in out.stderr and out.returncode == 2, out.stderr
    assert elapsed < CLI_SECONDS


def test_many_problems_are_counted_past_a_screenful(tmp_path):
    text = BASE + "evals: [" + ",".join(["{suite: nope}"] * 500) + "]\n"
    out, elapsed = validate(tmp_path, write(tmp_path, text))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 101 and lines[-1] == "... and 400 more problems"
    assert elapsed < CLI_SECONDS
