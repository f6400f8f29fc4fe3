"""What many test files share: the checkout's root and `ccrun` run as a user runs it, in a fresh
process (`ccrun`) or, where a test is about what a command prints, exits and writes, in this one
(`ccrun_here`: the same answer without the 0.3-5 s of a new interpreter importing the libraries)."""

import contextlib
import io
import locale
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A whole smoke run kept short: 30 steps, a checkpoint every 10, the loss suite only.
SHORT = ["--set", "train.steps=30", "--set", "schedule.warmup_steps=5", "--set", "schedule.decay_steps=25",
         "--set", "train.checkpoint.every=10", "--set", "evals=[{suite: loss}]"]


def killed_after_checkpoint(runs: Path, step: int, *args, seconds_per_step: float = 0.2, timeout: float = 300) -> Path:
    """`ccrun ARGS --runs-dir RUNS` with every step made slower, SIGKILLed as soon as its
    checkpoint `step` is on disk; the run directory it leaves (a test fails if the run ends first)."""
    import time

    slow = ROOT / "tests" / "e2e" / "ccrun_slow.py"  # the loop's steps made slower, from outside it
    proc = subprocess.Popen([sys.executable, str(slow), str(seconds_per_step), *args, "--runs-dir", str(runs)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    killed = None
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob(f"*/*/checkpoints/{step}"))
        if found:
            proc.send_signal(signal.SIGKILL)
            killed = found[0].parent.parent
            break
        time.sleep(0.05)
    proc.communicate()
    assert killed is not None, "the run finished before it could be killed"
    return killed


def ccrun(*args, cwd=ROOT, env=None):
    """`ccrun ARGS` in a fresh process; the completed process (returncode, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def _captured() -> io.TextIOWrapper:
    # what a child's sys.stdout/sys.stderr are when they are pipes: the locale's encoding, not a
    # terminal (isatty False), '\n' written as is; stderr's errors made backslashreplace by the caller
    return io.TextIOWrapper(io.BytesIO(), encoding=locale.getpreferredencoding(False), newline="\n")


def _as_read(stream: io.TextIOWrapper) -> str:
    """The text of a captured stream as subprocess.run(text=True) reads a pipe (universal newlines)."""
    stream.flush()
    data = stream.buffer.getvalue()
    return io.TextIOWrapper(io.BytesIO(data), encoding=locale.getpreferredencoding(False)).read()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Python's own warnings.showwarning, on the sys.stderr of the moment
    try:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))
    except OSError:
        pass


@contextlib.contextmanager
def _fresh_process_state(cwd, env, argv):
    """Inside: cwd, os.environ, sys.argv, the warning filters, the root logger (no handlers: a
    record goes to logging's last resort, the sys.stderr of the moment; not pytest's capture) and the
    CLI's global options as a new `ccrun` process has them; all restored after."""
    from runner.cli.app import Options

    old_cwd, old_env, old_argv, old_debug = os.getcwd(), dict(os.environ), sys.argv, Options.debug
    old_streams = sys.stdin, sys.stdout, sys.stderr
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    try:
        root.handlers[:] = []
        root.setLevel(logging.WARNING)
        os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        os.environ.setdefault("COLUMNS", "80")  # a child writing to a pipe sees no terminal: 80 columns
        sys.argv = argv
        Options.debug = False
        with warnings.catch_warnings():
            # a fresh interpreter's filters (pytest's record everything); every warning shown again
            warnings.resetwarnings()
            for action, category in (("default", DeprecationWarning), ("ignore", DeprecationWarning),
                                     ("ignore", PendingDeprecationWarning), ("ignore", ImportWarning),
                                     ("ignore", ResourceWarning)):
                warnings.filterwarnings(action, category=category, module="__main__" if action == "default" else "",
                                        append=True)
            warnings.showwarning = _show_warning
            yield
    finally:
        root.handlers[:] = old_handlers
        root.setLevel(old_level)
        sys.stdin, sys.stdout, sys.stderr = old_streams
        Options.debug = old_debug
        sys.argv = old_argv
        if dict(os.environ) != old_env:
            os.environ.clear()
            os.environ.update(old_env)
        os.chdir(old_cwd)


@contextlib.contextmanager
def _deadline(args, timeout):
    """subprocess.TimeoutExpired raised into the call after `timeout` seconds (as subprocess.run's
    timeout fails a test that hangs): a SIGALRM timer, so on the main thread only (else no limit)."""
    if timeout is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    class Expired(BaseException):
        """Not an Exception: the command line's last line of defence (an internal error) lets it by."""

    def expired(signum, frame):
        raise Expired

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    except Expired:
        raise subprocess.TimeoutExpired(["ccrun", *args], timeout) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def ccrun_here(*args, cwd=ROOT, env=None, stdin="", timeout=None, entry=False):
    """`ccrun ARGS` run in this process, as `ccrun` would run it (runner.cli.main with argv, cwd and
    environment set for the call and restored), with the same answer: a CompletedProcess whose
    returncode, stdout and stderr are those of the fresh process (test_cli checks they are
    byte-identical). For what a command prints, exits and writes; not for signals, imports or a
    fresh interpreter's state (use `ccrun`). `timeout`: seconds before subprocess.TimeoutExpired;
    `entry`: through the console script's runner.entry.main (validate's fast path) instead."""
    args = [str(a) for a in args]
    out, err = _captured(), _captured()
    err.reconfigure(errors="backslashreplace")
    import runner.cli
    import runner.entry

    main = runner.entry.main if entry else runner.cli.main
    # sys.argv as `python -m runner.cli ARGS` has it (provenance.json records the command)
    argv0 = runner.entry.__file__ if entry else str(Path(runner.cli.__file__).with_name("__main__.py"))
    with _fresh_process_state(cwd, env, [argv0, *args]):
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding=locale.getpreferredencoding(False))
        sys.stdout, sys.stderr = out, err
        try:
            with _deadline(args, timeout):
                main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        finally:
            with contextlib.suppress(Exception):
                out.flush()
                err.flush()
    return subprocess.CompletedProcess(["ccrun", *args], code, _as_read(out), _as_read(err))


@contextlib.contextmanager
def serving(served, batcher, *, server_options: dict | None = None, **app_options):
    """`ccrun serve`'s app for `served` (runner.serve.app.build_app with `app_options`) on a free
    loopback port, uvicorn (runner.serve.guard.server_config with `server_options`) in a daemon
    thread of this process: yields its URL once it listens and the batcher has compiled its
    programs; stops it after."""
    import time

    import uvicorn

    from runner.serve.app import build_app
    from runner.serve.guard import server_config
    from runner.serve.source import listen

    sock = listen("127.0.0.1", 0)
    app = build_app(served, batcher, **app_options)
    uv = uvicorn.Server(server_config(app, log_level="warning", **(server_options or {})))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        assert batcher.ready.wait(timeout=600) and batcher.warm_error is None, batcher.warm_error
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def bench_report(script: str, *args: str, env: dict | None = None, timeout: float = 600) -> dict:
    """Run bench/SCRIPT ARGS from the repository (environment: this one plus `env`) and return the
    JSON object its last line prints, as every benchmark does."""
    import json

    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

