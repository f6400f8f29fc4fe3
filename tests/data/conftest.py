"""Data the tests write: code files with duplicates and metadata, APPS rows, a tokenizer."""

import gzip
import json
from pathlib import Path

import pytest

CODE = {
    "a.py": "def add(a, b):\n    return a + b\n",
    "a_copy.py": "def add(a, b):\n    return a + b\n",  # exact duplicate of a.py
    "a_spaced.py": "def add( a,b ):\n\n        return a-b\n",  # same identifiers, other punctuation
    "b.py": "def add(a, c):\n    return a + c\n",  # an identifier changed: not a duplicate
    "uni.py": "größe = 1\nπ = größe * 2\n",
    "uni_same.py": "größe=1\nπ=größe*2   # \n",  # trailing comment marker is punctuation: same key
    "uni_other.py": "grösse = 1\nπ = grösse * 2\n",  # different identifier (ö vs ö decomposed is not used)
    "paren.py": "(a)",
    "plain.py": "a",  # re.split yields ['', 'a', ''] for '(a)': different key from 'a'
}


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from runner.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    root = Path(__file__).resolve().parents[2] / "runner"
    texts = [p.read_text() for p in sorted(root.rglob("*.py"))] + list(CODE.values())
    train_tokenizer(texts, vocab_size=400, out_dir=out)
    return out


def write_jsonl(path: Path, rows, *, compress=None):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress == "gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    elif compress == "zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    else:
        path.write_text(text)
    return path


def corpus_rows():
    """Code Clippy shaped rows: text + meta, with metadata that each filter acts on."""
    meta = dict(repo_name="r", stars="25", repo_language="Python", file_name="x.py", mime_type="text/x-python",
                commits=10, license="mit", fork=False, size=100)
    rows = []
    for i, (name, text) in enumerate(CODE.items()):
        rows.append({"text": text, "id": i, "meta": {**meta, "file_name": name}})
    extra = [
        ("few_stars.py", {"stars": "3"}),
        ("few_commits.py", {"commits": 1}),
        ("no_license.py", {"license": None}),
        ("forked.py", {"fork": True}),
        ("big_repo.py", {"size": 80000}),
        ("readme.md", {"file_name": "readme.md"}),
    ]
    for j, (name, change) in enumerate(extra):
        rows.append({"text": f"def unique_{j}():\n    pass\n", "id": 100 + j, "meta": {**meta, "file_name": name, **change}})
    rows.append({"text": "x = '" + "y" * 300 + "'\n", "id": 200, "meta": {**meta, "file_name": "long.py"}})
    rows.append({"text": "1234567890\n" * 20, "id": 201, "meta": {**meta, "file_name": "digits.py"}})
    return rows


def apps_rows():
    return [
        {"problem_id": 1, "question": "Read n and print n+1.", "solutions": json.dumps(["n=int(input())\nprint(n+1)\n",
                                                                                        "print(int(input())+1)\n"]),
         "starter_code": "", "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]}),
         "difficulty": "introductory", "url": "u1"},
        {"problem_id": 2, "question": "Return the sum of a list.",
         "solutions": json.dumps(["class Solution:\n    def total(self, xs):\n        return sum(xs)\n"]),
         "starter_code": "class Solution:\n    def total(self, xs):\n",
         "input_output": json.dumps({"fn_name": "total", "inputs": [[[1, 2]]], "outputs": [3]}),
         "difficulty": "interview", "url": "u2"},
        {"problem_id": 3, "question": "Hard one.", "solutions": json.dumps(["print(42)\n"]), "starter_code": "",
         "input_output": "", "difficulty": "competition", "url": "u3"},
    ]
