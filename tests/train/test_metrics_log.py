"""metrics.jsonl on resume: cut back to the checkpoint's step; a line cut by a kill mid-write is
dropped (the run resumes), a line damaged before it is bad input naming file and line."""

import json

import pytest

from runner.common.errors import BadInput
from runner.train.loop import MetricsLog


def write(path, records, tail=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_records_after_the_checkpoint_go(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write(path, [{"step": s, "loss": 1.0 / s} for s in range(1, 6)])
    MetricsLog(path).truncate_after(3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_nothing_after_the_checkpoint_leaves_the_file_as_it_is(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write(path, [{"step": 1}, {"step": 2}])
    before = path.read_bytes()
    MetricsLog(path).truncate_after(2)
    assert path.read_bytes() == before


@pytest.mark.parametrize("cut", [b'{"step": 6, "lo', b"{", b'{"step": 4}'])  # killed mid-write: no newline
def test_a_last_line_cut_by_a_kill_is_dropped(tmp_path, cut):
    path = tmp_path / "metrics.jsonl"
    write(path, [{"step": s} for s in range(1, 4)], tail=cut)
    MetricsLog(path).truncate_after(3)
    assert path.read_text() == "".join(json.dumps({"step": s}) + "\n" for s in range(1, 4))


@pytest.mark.parametrize("damage", [b"garbage\n", b'{"step": "x"}\n', b"[" * 100_000 + b"\n", b"\xff\xfe\n"])
def test_a_damaged_line_before_the_end_is_bad_input(tmp_path, damage):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n' + damage + b'{"step": 2}\n')
    before = path.read_bytes()
    with pytest.raises(BadInput, match=r"metrics\.jsonl:2: a damaged record"):
        MetricsLog(path).truncate_after(1)
    assert path.read_bytes() == before  # nothing changed
