"""APPS problems read once, the same way for training and for evaluation (`read_problems`)."""

import json

import pytest

from runner.common.errors import BadInput
from runner.data import DataError, read_problems
from runner.evals.suites import load_apps
from runner.recipe.schema_eval import AppsEval

from .conftest import apps_rows, write_jsonl


def test_problems_keep_their_fields_and_filter_by_difficulty(tmp_path):
    write_jsonl(tmp_path / "apps.jsonl", apps_rows())
    rows = read_problems(tmp_path / "apps.jsonl")
    assert rows == apps_rows()
    picked = read_problems(tmp_path / "apps.jsonl", difficulties=["interview", "competition"], limit=1)
    assert [r["problem_id"] for r in picked] == [2]


def test_the_apps_eval_reads_problems_the_same_way(tmp_path):
    write_jsonl(tmp_path / "apps.jsonl", apps_rows())
    spec = AppsEval(suite="apps", name="apps", path=str(tmp_path / "apps.jsonl"), difficulties=["competition"])
    assert load_apps(spec) == read_problems(tmp_path / "apps.jsonl", difficulties=["competition"])


def test_a_missing_file_or_a_malformed_line_is_bad_input(tmp_path):
    with pytest.raises(DataError, match=r"--problems: no such file .*nope.jsonl") as err:
        read_problems(tmp_path / "nope.jsonl", where="--problems")
    assert isinstance(err.value, BadInput) and err.value.exit_code == 2
    (tmp_path / "bad.jsonl").write_text(json.dumps(apps_rows()[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed line"):
        read_problems(tmp_path / "bad.jsonl")


def test_the_hub_without_network_is_a_clear_error():
    # tests run with HF_HUB_OFFLINE=1: the download fails as it does without a network
    with pytest.raises(DataError, match=r"evals: apps: cannot fetch test.jsonl of 'ccrun-tests/no-such-apps'.*"
                                        r"give a local copy: path: ./apps/test.jsonl"):
        read_problems(None, hub="ccrun-tests/no-such-apps", split="test", where="evals: apps")
