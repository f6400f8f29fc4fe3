"""Properties of the merge and override rules in runner/recipe/load.py, and examples of extends.

The rules (load.py's docstring): mappings merge key by key, the later value winning; lists and
scalars (null included) are replaced whole; a mapping whose tag (`type:` / `suite:`) changes is
replaced whole.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.recipe import yamlio
from runner.recipe.base import format_path
from runner.recipe.errors import RecipeError
from runner.recipe.load import load_recipe, merge, parse_dotted, tag_changed

SETTINGS = settings(max_examples=100, deadline=None)

# --- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.text(alphabet="abxy", max_size=3),
)


def plain(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Small nested mappings (with lists and scalars) over the given keys."""
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(keys), inner, max_size=3)
        ),
        max_leaves=8,
    )
    return st.dictionaries(st.sampled_from(keys), values, max_size=4)


untagged = plain(["a", "b", "c", "d"])
# Tag keys take a few string values, so tags often agree and sometimes change.
tag_values = st.sampled_from(["x", "y"])


def _with_tags(node: Any, draw) -> Any:
    if isinstance(node, dict):
        out = {k: _with_tags(v, draw) for k, v in node.items()}
        for key in ("type", "suite"):
            if draw(st.booleans()) and draw(st.booleans()):
                out[key] = draw(tag_values)
        return out
    if isinstance(node, list):
        return [_with_tags(v, draw) for v in node]
    return node


_TAGGED_BASE = plain(["a", "b", "c"])  # made once: a recursive strategy made per draw recomputes its properties


@st.composite
def tagged(draw) -> dict[str, Any]:
    """Nested mappings where any mapping may carry `type` and/or `suite`."""
    return _with_tags(draw(_TAGGED_BASE), draw)


def shaped(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings whose keys have one kind each: a, b, c hold scalars or lists; m, n hold mappings.

    With every key always of one kind, `merge` is associative (a key holding a mapping in one
    file and null in the next is not, see test_null_then_mapping_is_a_left_fold)."""
    leaves = st.dictionaries(st.sampled_from("abc"), st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=3)
    if depth == 0:
        return leaves
    return st.builds(
        lambda flat, nested: {**flat, **nested},
        leaves,
        st.dictionaries(st.sampled_from("mn"), shaped(depth - 1), max_size=2),
    )


# --- helpers ------------------------------------------------------------------------------------


def leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value that is not a mapping (lists and null count as leaves)."""
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            out.extend(leaf_paths(value, (*prefix, key)))
        return out
    return [prefix]


def get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def survives_from_base(base: dict, child: dict, path: tuple) -> bool:
    """Whether a base value at `path` must come through the merge unchanged: the child has a
    mapping at every ancestor of it, with the same tags, and stops having keys on the way."""
    b, c = base, child
    for key in path:
        if not isinstance(c, dict) or not isinstance(b, dict) or tag_changed(b, c):
            return False
        if key not in c:
            return True
        b, c = b[key], c[key]
    return False  # the child has the path itself


# --- merge ------------------------------------------------------------------------------------


@SETTINGS
@given(tagged())
def test_empty_mapping_is_the_identity(x: dict) -> None:
    assert merge(x, {}) == x
    assert merge({}, x) == x


@SETTINGS
@given(shaped(), shaped(), shaped())
def test_merge_is_associative_for_untagged_mappings_of_one_shape(a: dict, b: dict, c: dict) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


def test_null_then_mapping_is_a_left_fold() -> None:
    """Not associative in general: once a later file unsets a section, an even later one starts it
    afresh. extends chains and --set always fold left, which is what this shows."""
    a, b, c = {"train": {"steps": 1, "batch_size": 8}}, {"train": None}, {"train": {"steps": 2}}
    assert merge(merge(a, b), c) == {"train": {"steps": 2}}
    assert merge(a, merge(b, c)) == {"train": {"steps": 2, "batch_size": 8}}


@SETTINGS
@given(tagged(), tagged())
def test_every_key_of_the_child_wins(base: dict, child: dict) -> None:
    merged = merge(base, child)
    for path in leaf_paths(child):
        assert get(merged, path) == get(child, path), path


@SETTINGS
@given(tagged(), tagged())
def test_keys_only_in_base_keep_their_value(base: dict, child: dict) -> None:
    merged = merge(base, child)
    for path in leaf_paths(base):
        if survives_from_base(base, child, path):
            assert get(merged, path) == get(base, path), path


@SETTINGS
@given(untagged, untagged)
def test_merged_keys_are_the_union(base: dict, child: dict) -> None:
    assert set(merge(base, child)) == set(base) | set(child)


@SETTINGS
@given(
    st.lists(scalars, max_size=4),
    st.lists(scalars, max_size=4),
    st.one_of(scalars, st.lists(scalars, max_size=2)),
    st.one_of(scalars, untagged),
)
def test_lists_and_scalars_are_replaced_whole(base_list, child_list, scalar, other) -> None:
    merged = merge({"k": base_list, "s": other, "n": {"l": base_list}}, {"k": child_list, "s": scalar, "n": {"l": []}})
    assert merged["k"] == child_list  # never base_list + child_list
    assert len(merged["k"]) == len(child_list)
    assert merged["s"] == scalar  # a scalar (or a list) replaces even a whole mapping
    assert merged["n"] == {"l": []}  # an empty list unsets an inherited one
    assert merge(base_list, child_list) == child_list
    assert merge({"k": {"x": 1}}, {"k": None}) == {"k": None}  # null unsets a whole section


@SETTINGS
@given(st.sampled_from(["type", "suite"]), untagged, untagged, st.data())
def test_changed_tag_replaces_the_mapping_whole(tag: str, base_rest: dict, child_rest: dict, data) -> None:
    tags = st.sampled_from(["adamw", "adafactor", "loss", "apps"])
    old, new = data.draw(st.lists(tags, min_size=2, max_size=2, unique=True))
    base = {**base_rest, tag: old}
    child = {**child_rest, tag: new}
    assert tag_changed(base, child)
    assert merge(base, child) == child  # no key of the base survives
    assert merge({"section": base, "other": 1}, {"section": child}) == {"section": child, "other": 1}


@SETTINGS
@given(
    st.sampled_from(["type", "suite"]),
    st.dictionaries(st.sampled_from("abcd"), scalars),
    st.dictionaries(st.sampled_from("cdef"), scalars),
)
def test_same_tag_merges_deeply(tag: str, base_rest: dict, child_rest: dict) -> None:
    base = {**base_rest, tag: "adamw"}
    child = {**child_rest, tag: "adamw"}
    assert not tag_changed(base, child)
    assert merge(base, child) == {**base, **child}
    nested = merge({tag: "adamw", "n": base_rest}, {tag: "adamw", "n": child_rest})
    assert nested == {tag: "adamw", "n": {**base_rest, **child_rest}}
    assert merge({"s": base}, {"s": child_rest}) == {"s": {**base, **child_rest}}  # child without a tag: merged too


@pytest.mark.parametrize(
    "base, child, changed",
    [
        ({"type": "adamw", "b1": 0.9}, {"type": "adafactor"}, True),
        ({"suite": "loss"}, {"suite": "apps", "limit": 2}, True),
        ({"type": "adamw", "suite": "loss"}, {"type": "adamw", "suite": "apps"}, True),  # either tag
        ({"type": "adamw", "b1": 0.9}, {"type": "adamw", "b1": 0.5}, False),  # same tag, other keys differ
        ({"type": "adamw"}, {"b1": 0.5}, False),  # a child without a tag keeps the base's
        ({"b1": 0.9}, {"type": "adafactor"}, False),  # nothing to change from
        ({"type": "loss"}, {"suite": "loss"}, False),  # different tag keys are not compared
        ({"name": "a"}, {"name": "b"}, False),  # only type and suite are tags
    ],
)
def test_tag_changed_examples(base: dict, child: dict, changed: bool) -> None:
    assert tag_changed(base, child) is changed


@SETTINGS
@given(tagged(), tagged())
def test_merge_does_not_mutate_its_inputs(base: dict, child: dict) -> None:
    base_before, child_before = copy.deepcopy(base), copy.deepcopy(child)
    merge(base, child)
    assert base == base_before
    assert child == child_before


# --- parse_dotted -----------------------------------------------------------------------------


def test_parse_dotted_example() -> None:
    assert parse_dotted("a[0].b.1") == ("a", 0, "b", 1)
    assert parse_dotted("evals[0].sampling.1.k") == ("evals", 0, "sampling", 1, "k")
    with pytest.raises(ValueError):
        parse_dotted("train..steps")


names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)


@SETTINGS
@given(names, st.lists(st.one_of(names, st.tuples(st.integers(0, 20), st.booleans())), max_size=5))
def test_parse_dotted_reads_both_index_forms(first: str, rest: list) -> None:
    text, parts = first, [first]
    for part in rest:
        if isinstance(part, tuple):
            index, bracket = part
            text += f"[{index}]" if bracket else f".{index}"
            parts.append(index)
        else:
            text += f".{part}"
            parts.append(part)
    assert parse_dotted(text) == tuple(parts)
    assert parse_dotted(format_path(tuple(parts))) == tuple(parts)


# --- overrides through load_recipe ------------------------------------------------------------

RECIPE = {
    "name": "t",
    "seed": 0,
    "model": {"arch": "gpt-neo", "checkpoint": "EleutherAI/gpt-neo-125M"},
    "data": {"sources": [{"type": "jsonl", "paths": ["x.jsonl"]}]},
    "optimizer": {"type": "adamw"},
    "schedule": {"type": "constant", "peak_lr": 1.0e-4},
    "train": {"batch_size": 8, "steps": 10},
}

# Dotted keys and valid values there.
VALUES = {
    "train.steps": st.integers(1, 10**6),
    "train.log_every": st.integers(1, 10**6),
    "schedule.peak_lr": st.floats(min_value=1e-12, max_value=1e3, allow_nan=False, allow_infinity=False),
    "seed": st.integers(0, 2**31),
    "optimizer.b1": st.floats(min_value=0, max_value=0.999, allow_nan=False),
    "model.dropout": st.one_of(st.none(), st.floats(0, 0.99, allow_nan=False)),
    # `--set name=null` unsets; any other text is taken as it is (the file quotes what needs it).
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True).filter(lambda s: s != "null"),
}
OVERRIDES = st.sampled_from(sorted(VALUES)).flatmap(lambda key: st.tuples(st.just(key), VALUES[key]))


def as_text(value: Any) -> str:
    """How a user writes a value after `--set key=`."""
    if value is None:
        return "null"
    return value if isinstance(value, str) else repr(value)


def with_value(dotted: str, value: Any) -> dict:
    data = copy.deepcopy(RECIPE)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def load_text(directory: Path, name: str, text: str, overrides=()):
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return load_recipe(path, list(overrides))


@SETTINGS
@given(OVERRIDES)
def test_set_equals_writing_the_value_in_the_file(scratch: Path, override: tuple[str, Any]) -> None:
    key, value = override
    by_file = load_text(scratch, "file.yaml", yamlio.dump(with_value(key, value)))
    by_set = load_text(scratch, "set.yaml", yamlio.dump(RECIPE), [f"{key}={as_text(value)}"])
    assert by_set.recipe == by_file.recipe
    assert by_set.data == by_file.data
    assert by_set.overrides == {key: value}


@SETTINGS
@given(OVERRIDES, st.data())
def test_the_last_set_of_a_key_wins(scratch: Path, first: tuple[str, Any], data) -> None:
    key, value = first
    last = data.draw(VALUES[key])
    sets = [f"{key}={as_text(value)}", f"{key}={as_text(last)}"]
    loaded = load_text(scratch, "twice.yaml", yamlio.dump(RECIPE), sets)
    expected = load_text(scratch, "once.yaml", yamlio.dump(with_value(key, last)))
    assert loaded.recipe == expected.recipe
    assert loaded.overrides == {key: last}


# --- extends: examples ------------------------------------------------------------------------


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


MODEL = "model: {arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M}\n"
TRAINING = (
    "data: {sources: [{type: jsonl, paths: [x.jsonl]}]}\n"
    "optimizer: {type: adamw, b1: 0.8, b2: 0.99}\n"
    "schedule: {type: constant, peak_lr: 1.0e-4}\n"
    "train: {batch_size: 8, steps: 10}\n"
)


def test_extends_chain_of_three_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a.yaml": "name: a\nseed: 1\n" + MODEL + TRAINING,
            "b.yaml": "extends: a.yaml\nseed: 2\ntrain: {steps: 20}\n",
            "c.yaml": "extends: b.yaml\nname: c\nschedule: {peak_lr: 3.0e-4}\n",
        },
    )
    loaded = load_recipe(tmp_path / "c.yaml")
    recipe = loaded.recipe
    assert (recipe.name, recipe.seed) == ("c", 2)
    assert (recipe.train.steps, recipe.train.batch_size) == (20, 8)
    assert recipe.schedule.peak_lr == 3.0e-4
    assert (recipe.optimizer.b1, recipe.optimizer.b2) == (0.8, 0.99)
    assert [p.name for p in loaded.files] == ["c.yaml", "b.yaml", "a.yaml"]
    assert "extends" not in loaded.data


def test_list_extends_later_files_win(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "x.yaml": "seed: 1\ndescription: from x\n" + MODEL,
            "y.yaml": "seed: 2\nmodel: {dropout: 0.1}\n",
            "child.yaml": "extends: [x.yaml, y.yaml]\nname: child\n",
            "child2.yaml": "extends: [y.yaml, x.yaml]\nname: child2\n",
            "child3.yaml": "extends: [x.yaml, y.yaml]\nname: child3\nseed: 3\n",
        },
    )
    recipe = load_recipe(tmp_path / "child.yaml").recipe
    assert (recipe.seed, recipe.description, recipe.model.dropout) == (2, "from x", 0.1)
    assert load_recipe(tmp_path / "child2.yaml").recipe.seed == 1
    assert load_recipe(tmp_path / "child3.yaml").recipe.seed == 3  # the file itself wins over all its bases


def test_diamond_extends_is_not_a_cycle(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "common.yaml": "seed: 7\n" + MODEL,
            "left.yaml": "extends: common.yaml\ndescription: left\n",
            "right.yaml": "extends: common.yaml\nmodel: {dropout: 0.2}\n",
            "top.yaml": "extends: [left.yaml, right.yaml]\nname: top\n",
        },
    )
    loaded = load_recipe(tmp_path / "top.yaml")
    assert (loaded.recipe.seed, loaded.recipe.description, loaded.recipe.model.dropout) == (7, "left", 0.2)
    names = [p.name for p in loaded.files]
    assert names[0] == "top.yaml"
    assert set(names) == {"top.yaml", "left.yaml", "right.yaml", "common.yaml"}


def test_null_in_a_child_unsets_an_inherited_section(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "base.yaml": "name: base\n" + MODEL + TRAINING,
            "eval.yaml": "extends: base.yaml\nname: eval\ntrain: null\noptimizer: null\nschedule: null\n",
            "again.yaml": "extends: eval.yaml\nname: again\ntrain: {batch_size: 4, steps: 5}\n"
            "optimizer: {type: adamw}\nschedule: {type: constant, peak_lr: 1.0}\n",
        },
    )
    recipe = load_recipe(tmp_path / "eval.yaml").recipe
    assert (recipe.train, recipe.optimizer, recipe.schedule) == (None, None, None)
    assert recipe.data is not None
    # Set again below the null, a section starts afresh: nothing of base.yaml's comes back.
    again = load_recipe(tmp_path / "again.yaml").recipe
    assert (again.train.batch_size, again.train.steps) == (4, 5)
    assert (again.optimizer.b1, again.optimizer.b2) == (0.9, 0.999)  # defaults, not base.yaml's 0.8, 0.99


def test_relative_paths_resolve_against_the_file_that_wrote_them(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "recipes/base/train.yaml": "data: {sources: [{type: jsonl, paths: [../data/x.jsonl, y/*.jsonl]}]}\n",
            "recipes/run.yaml": "extends: base/train.yaml\nname: run\n" + MODEL
            + "tokenizer: {name: ./tok}\n",
        },
    )
    loaded = load_recipe(tmp_path / "recipes" / "run.yaml")
    base_dir = (tmp_path / "recipes" / "base").resolve()
    assert loaded.recipe.data.sources[0].paths[0] == os.path.normpath(base_dir / "../data/x.jsonl")
    assert loaded.recipe.data.sources[0].paths[1] == str(base_dir / "y" / "*.jsonl")
    assert loaded.recipe.tokenizer.name == str(tmp_path / "recipes" / "tok")
    assert loaded.recipe.model.checkpoint == "EleutherAI/gpt-neo-125M"  # a hub id stays as it is


def test_child_changing_the_tag_drops_the_base_keys(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "base.yaml": "name: base\n" + MODEL + TRAINING,
            "child.yaml": "extends: base.yaml\noptimizer: {type: adafactor}\n",
        },
    )
    loaded = load_recipe(tmp_path / "child.yaml")
    assert loaded.data["optimizer"] == {"type": "adafactor"}
    assert loaded.recipe.optimizer.type == "adafactor"


def test_set_switching_optimizer_type_drops_b1_b2(tmp_path: Path) -> None:
    write(tmp_path, {"r.yaml": "name: r\n" + MODEL + TRAINING})
    loaded = load_recipe(tmp_path / "r.yaml", ["optimizer.type=adafactor"])
    assert loaded.data["optimizer"] == {"type": "adafactor"}
    assert loaded.recipe.optimizer.type == "adafactor"
    assert not hasattr(loaded.recipe.optimizer, "b1")
    # The same tag keeps the rest: only b1 changes.
    same = load_recipe(tmp_path / "r.yaml", ["optimizer.type=adamw", "optimizer.b1=0.5"])
    assert (same.recipe.optimizer.b1, same.recipe.optimizer.b2) == (0.5, 0.99)
    # Without the switch, b1 of adafactor is an unknown key.
    with pytest.raises(RecipeError, match=r"optimizer.b1: unknown key"):
        load_recipe(tmp_path / "r.yaml", ["optimizer.type=adafactor", "optimizer.b1=0.5"])
