"""Run model-written Python programs so that no program, however written, can pass what it fails.

Threat model: programs written to attack the grader (models trained against graders learn to),
as well as accidents (loops, fork bombs, memory, deleted files). What holds, and how:

- **Verdicts the program cannot reach.** Test code never shares an interpreter with the program.
  A program judged by calls (HumanEval, APPS call-based) runs in the sandbox and only defines its
  function (inside.py, mode "call"); whoever judges calls it through a channel that carries plain
  values only (channel.py): HumanEval's trusted `check` and prompt helpers run in the judge
  (judge.py), a process in a sandbox of its own; APPS's expected values never leave the parent,
  which compares with Python's `==` on builtin values it decoded itself. A standard-input
  program's output is compared by the parent with answers the program never sees. A returned
  object cannot carry its own `__eq__`; a decorator left at the end of a completion has no test
  to decorate; the nonce and verdict descriptor of the old design no longer exist in these modes.
- **Samples isolated from each other and from the machine** (bubblewrap, `bwrap`): new user, PID,
  network, mount, IPC, UTS and cgroup namespaces; a root made of read-only binds of /usr (and
  the /bin, /lib links), the interpreter's own prefix with its site-packages hidden, and of the
  allowed packages only (`packages`, default numpy for APPS); fresh /proc and /dev; private
  tmpfs /tmp, /var/tmp and /dev/shm (each `max_file_mb`), gone with the sample. Nothing else of
  the host is visible: not the problems, the samples, the run directory, your home or the
  project; no path-based unix socket of the host exists there and the network namespace has
  only a loopback that is down. The program runs as uid 65534 inside a user namespace with no
  capabilities and cannot create further user namespaces (`--disable-userns`).
- **A budget per sample**: where cgroups can be made (root, or delegated cgroup v2), each sample
  runs in its own pids + memory cgroup (`max_processes`, `memory_mb`, tmpfs included), so one
  sample holding processes or memory cannot starve another; plus rlimits per process (address
  space, CPU time, file size, open files, no core dumps).
- **Nothing survives**: when the sample ends or its time is up, its PID namespace's init dies and
  the kernel kills everything in it (and the cgroup is killed and removed); its tmpfs go with
  its mount namespace.

`Sandbox.isolation` says which of these are in force (probed once per `Sandbox`, by running a
program that looks); a warning names each one missing (no bwrap: nothing but rlimits).

Out of scope: kernel exploits, bugs in bubblewrap, timing and other side channels (a program can
measure its own time), CPU contention between samples (each is bounded in time, not in share).

`Sandbox.run` is the one-shot form kept for generic programs: it reports whether a program's
top-level code returned (a nonce on a descriptor only the program's process holds). A program
can forge that by design: it is not used for grading.
"""

from __future__ import annotations

import importlib.metadata
import json
import marshal
import os
import platform
import secrets
import select
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

from .cgroups import CgroupError, Cgroups, unavailable_reason
from .channel import ChannelError, Frames, request_frame, send

OUTCOMES = ("passed", "failed", "error", "timeout", "exited_early")
SANDBOX_UID = 65534
FRAME_LIMIT = 64 << 20  # the largest answer a program may send in one frame
_KILL_GRACE_S = 5.0  # how long the namespace's teardown may take after SIGKILL before we stop waiting
_JUDGE_GRACE_S = 1.0  # how long past the deadline the judge may take to write its verdict
_POLL_S = 0.01  # only where pidfd_open is missing: how often we look whether the program exited
_HERE = Path(__file__).resolve().parent


def _source(*names: str) -> str:
    """channel.py's source followed by each of `names`': what runs with `python -I -S -c` in a sandbox."""
    return "\n".join((_HERE / name).read_text(encoding="utf-8") for name in ("channel.py", *names))


INSIDE = _source("inside.py")
JUDGE = _source("judge.py")
FORKSERVER = _source("inside.py", "forkserver.py")
# A program's process runs the bootstrap already compiled: `-c STUB ... CODE_FD` loads the code
# object from a sealed memfd shared by all programs (compiling INSIDE took 2.5 ms of each start).
HUMANEVAL_PRELOAD = ("typing",)  # most HumanEval prompts import it: ~10 ms of CPU, done ahead (see _take)
STUB = "import marshal,os,sys;f=int(sys.argv[3]);exec(marshal.loads(os.pread(f,os.fstat(f).st_size,0)))"


@dataclass(frozen=True)
class Result:
    """What happened to one program.

    passed: outcome "passed" (judged: the check returned; one-shot: the top-level code returned).
    outcome: one of OUTCOMES.
    detail: why, in one line ("AssertionError: ...", "SystemExit(0)", "killed by SIGKILL ...").
    stdout, stderr: captured output (UTF-8, undecodable bytes replaced), each capped.
    truncated: stdout or stderr was longer than the cap.
    clean_exit: passed, or exited early with status 0 (one-shot runs).
    duration_s: wall time from start to the end of the last process.
    """

    passed: bool
    outcome: str
    detail: str
    stdout: str
    stderr: str = ""
    truncated: bool = False
    clean_exit: bool = False
    duration_s: float = 0.0


def _memfd(data: bytes, *, sealed: bool = False) -> int:
    """A file descriptor of an anonymous file holding `data`, at offset 0; `sealed`: no one, a
    program holding it included, can change it any more (F_SEAL_WRITE and friends)."""
    fd = os.memfd_create("ccrun", os.MFD_ALLOW_SEALING if sealed else 0)  # no CLOEXEC: passed on explicitly
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    if sealed:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_SEAL)
    return fd


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class Sandbox:
    """Runs programs with the limits given here; see the module docstring for what is isolated.

    isolation: what is in force, probed once here: {"network", "pid", "filesystem", "private_tmp",
      "budget", "rlimits"} -> bool.
    python: the Python version programs run on.
    packages: distributions (besides the standard library) programs may import.
    fork_server: samples are forks of a fork server (forkserver.py) where that works here; else
      (or False) each sample starts a bwrap and an interpreter of its own, started ahead as spares.
    Thread-safe: `run`, `check` and sessions may be used from several threads.
    """

    def __init__(
        self,
        *,
        memory_mb: int = 2048,
        max_processes: int = 64,
        max_file_mb: int = 64,
        max_open_files: int = 64,
        max_output_kb: int = 256,
        isolate: bool = True,
        packages: Sequence[str] = ("numpy",),
        fork_server: bool = True,
    ) -> None:
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_mb = max_file_mb
        self.max_open_files = max_open_files
        self.max_output_kb = max_output_kb
        self.packages = tuple(packages)
        self._executable = os.path.realpath(sys.executable)
        self._site, self._binds, problems = _package_binds(self.packages)
        self._cgroups = Cgroups.probe() if isolate else None
        if isolate and self._cgroups is not None:
            weakref.finalize(self, self._cgroups.close)
        self._prefix: list[str] = _bwrap_argv(self._executable, self._binds, max_file_mb) if isolate else []
        self._prefix, self.isolation, self.python = _probe(self._prefix, self._executable, self._site)
        self.isolation["budget"] = self._cgroups is not None
        self._code = _memfd(marshal.dumps(compile(INSIDE, "<ccrun-sandbox>", "exec")), sealed=True)
        weakref.finalize(self, os.close, self._code)
        self._judge: _Judge | None = None
        self._judge_lock = threading.Lock()
        self._spares: dict[tuple[str, ...], list[_Process]] = {}
        self._spares_lock = threading.Lock()
        weakref.finalize(self, _end_spares, self._spares)
        self._servers: dict[tuple[str, ...], _Forkserver] = {}
        self._servers_lock = threading.Lock()
        self.forkserver_problem = "" if fork_server else "fork_server=False"  # why fork servers are not used
        weakref.finalize(self, _end_servers, self._servers)
        if isolate:
            problems += _missing(self.isolation, bool(self._prefix))
        if self.python != platform.python_version():
            problems.append(f"programs run on Python {self.python}, not {platform.python_version()}")
        if problems:
            warnings.warn("sandbox: " + "; ".join(problems), RuntimeWarning, stacklevel=2)

    # -- one-shot programs (not for grading: see the module docstring) -----------------------

    def run(self, program: str, *, timeout_s: float, stdin: str | None = None, as_main: bool = False) -> Result:
        """Run one program (source text) for at most `timeout_s` seconds of wall time.

        The program's module is `__sandbox__`, so its own `if __name__ == "__main__":` block does
        not run; `as_main` runs it as `__main__`, as a judge runs a whole program.
        """
        nonce = secrets.token_hex(16)
        proc = self._take(())
        proc.assign(self, {"mode": "run", "source": program, "module": "__main__" if as_main else "__sandbox__",
                           "nonce": nonce, "stdin": stdin}, timeout_s)
        done = bytearray()

        def collect(chunk: bytes) -> bool:
            done.extend(chunk[: 4096 - len(done)])
            return False

        finished = proc.pump(proc.start + timeout_s, proc.from_r, collect, until_exit=True) != "deadline"
        proc.finish()
        outcome, detail, clean = _verdict(nonce.encode(), bytes(done), proc.returncode, finished, timeout_s)
        return proc.result(outcome, detail + (" (out of memory)" if outcome == "error" and proc.oom else ""), clean)

    def run_many(
        self,
        programs: Sequence[str],
        *,
        timeout_s: float,
        workers: int,
        stdin: Sequence[str | None] | None = None,
        progress: bool = False,
        as_main: bool = False,
    ) -> list[Result]:
        """`run` on each program, `workers` at a time; results in order."""
        if stdin is not None and len(stdin) != len(programs):
            raise ValueError(f"stdin has {len(stdin)} entries for {len(programs)} programs")
        inputs = list(stdin) if stdin is not None else [None] * len(programs)
        return _in_parallel([lambda p=p, s=s: self.run(p, timeout_s=timeout_s, stdin=s, as_main=as_main)
                             for p, s in zip(programs, inputs)], workers, progress)

    # -- judged programs ---------------------------------------------------------------------

    def check(self, program: str, *, prompt: str, test: str, entry_point: str, timeout_s: float) -> Result:
        """Judge one HumanEval-style sample: `program` (prompt + completion, untrusted) runs here and
        defines `entry_point`; the trusted `prompt` and `test` run in the judge, which calls
        `check(candidate)` with the candidate reached through the channel. `timeout_s` bounds
        the whole sample (loading and every call)."""
        proc = self._take(HUMANEVAL_PRELOAD)
        proc.assign(self, {"mode": "call", "source": program, "module": "__sandbox__", "fn": entry_point,
                           "cls": False}, timeout_s)
        verdict_r, verdict_w = os.pipe()
        spec = _memfd(marshal.dumps({"prompt": prompt, "test": test, "entry_point": entry_point,
                                     "timeout_s": max(0.0, proc.start + timeout_s - time.monotonic()),
                                     "limit": FRAME_LIMIT}))
        try:  # from here on only the judge talks to the program
            self._judge_process().submit([spec, proc.to_w, proc.from_r, verdict_w])
        finally:
            _close(spec, verdict_w)
            proc.hand_over()
        verdict = bytearray()

        def collect(chunk: bytes) -> bool:
            verdict.extend(chunk[:65536])
            return not chunk  # EOF: the judge's child wrote its verdict and is gone

        reason = proc.pump(proc.start + timeout_s + _JUDGE_GRACE_S, verdict_r, collect, until_exit=False)
        proc.finish()
        _close(verdict_r)
        if reason == "deadline":
            return proc.result("timeout", f"still running after {timeout_s:g} s (killed)", False)
        try:
            message = json.loads(bytes(verdict))
            outcome, detail = str(message["outcome"]), str(message["detail"])
        except (ValueError, KeyError, TypeError):
            return proc.result("error", "the judge gave no verdict", False)
        if outcome == "gone":  # the program ended during the check: the parent knows how
            outcome, detail = "error", _how_it_ended(proc)
        if outcome not in OUTCOMES:
            outcome, detail = "error", f"the judge said {outcome!r}"
        return proc.result(outcome, detail, outcome == "passed")

    def check_many(self, samples: Sequence[dict[str, str]], *, timeout_s: float, workers: int,
                   progress: bool = False) -> list[Result]:
        """`check` on each `{"program", "prompt", "test", "entry_point"}`, `workers` at a time; in order."""
        return _in_parallel([lambda s=s: self.check(s["program"], prompt=s["prompt"], test=s["test"],
                                                    entry_point=s["entry_point"], timeout_s=timeout_s)
                             for s in samples], workers, progress)

    def session(self, program: str, *, mode: str, module: str = "__main__", fn: str | None = None,
                cls: bool = False, cpu_s: float = 60.0, preload: tuple[str, ...] = ()) -> Session:
        """A program serving requests in one sandboxed process (see `Session`): mode "call" (the
        program's `fn`, or `Solution().fn` with `cls`) or "stdin" (the whole program per input).
        `preload`: modules the program imports anyway, imported before it arrives."""
        proc = self._take(tuple(preload))
        proc.assign(self, {"mode": mode, "source": program, "module": module, "fn": fn, "cls": cls,
                           "output_cap": self.max_output_kb * 1024}, cpu_s)
        return Session(proc)

    def close(self) -> None:
        """Stop the judge process and the spare processes; also done when the Sandbox is collected."""
        with self._judge_lock:
            if self._judge is not None:
                self._judge.close()
                self._judge = None
        _end_spares(self._spares)
        _end_servers(self._servers)

    def idle_pids(self) -> set[int]:
        """The processes this Sandbox keeps that hold no program: the spares (bwrap, its init, the
        waiting interpreter), the fork servers and the judge (bwrap, its init, the server; not the
        samples a server forked, nor the checks the judge forked)."""
        with self._spares_lock, self._servers_lock:
            roots = [(p.proc.pid, 3) for ps in self._spares.values() for p in ps if isinstance(p, _Spawned)]
            roots += [(server._proc.pid, 3) for server in self._servers.values()]
        with self._judge_lock:
            roots += [(self._judge._proc.pid, 3)] if self._judge is not None else []
        return {pid for root, depth in roots for pid in _tree(root, depth)}

    def _take(self, preload: tuple[str, ...]) -> _Process:
        """A started process for one sample: a fork of the fork server for `preload` where it works
        (see forkserver.py), else a spare (and a new spare for the next sample).

        A spare is a bootstrap that has started (bwrap, the interpreter, `preload`) and waits for
        its program: starting it while the previous sample runs hides most of a sample's start-up.
        Spares never hold more than one program and never run one they were not given."""
        server = self._forkserver(preload)
        if server is not None:
            try:
                return _Forked(self, server)
            except OSError:  # the server is gone: the next sample starts a new one
                pass
        with self._spares_lock:
            spares = self._spares.setdefault(preload, [])
            taken = None
            while spares and taken is None:
                candidate = spares.pop()
                if candidate.alive():
                    taken = candidate
                else:
                    candidate.finish()
        spare = _Spawned(self, preload)
        with self._spares_lock:
            self._spares.setdefault(preload, []).append(spare)
        return taken if taken is not None else _Spawned(self, preload)

    def _forkserver(self, preload: tuple[str, ...]) -> _Forkserver | None:
        """The running fork server for `preload` (started and checked on first use), or None where
        fork servers do not work here (no bwrap, or a check failed: then `forkserver_problem` says why)."""
        if not self._prefix or self.forkserver_problem:
            return None
        with self._servers_lock:
            server = self._servers.get(preload)
            if server is not None and server.alive():
                return server
            server = _Forkserver(self, preload)
            problem = _check_forkserver(self, server)
            if problem:
                server.close()
                self.forkserver_problem = problem
                return None
            self._servers[preload] = server
            return server

    def _judge_process(self) -> _Judge:
        with self._judge_lock:
            if self._judge is None or not self._judge.alive():
                self._judge = _Judge([*self._prefix], self._executable)
                weakref.finalize(self, self._judge.close)
            return self._judge

    def _limits(self, cpu_s: float) -> dict[str, list[int]]:
        cpu = int(cpu_s) + 1
        limits = {
            "RLIMIT_AS": self.memory_mb * 2**20,
            "RLIMIT_FSIZE": self.max_file_mb * 2**20,
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_CORE": 0,
        }
        out = {name: [value, value] for name, value in limits.items()}
        out["RLIMIT_CPU"] = [cpu, cpu + 1]  # SIGXCPU first; SIGKILL a second later
        if os.geteuid() != 0 and self.isolation["pid"]:  # a user namespace of its own: counts only its processes
            out["RLIMIT_NPROC"] = [self.max_processes, self.max_processes]
        return out


def _end_spares(spares: dict[tuple[str, ...], list[_Process]]) -> None:
    for group in list(spares.values()):
        while group:
            group.pop().finish()


def _end_servers(servers: dict[tuple[str, ...], _Forkserver]) -> None:
    while servers:
        servers.popitem()[1].close()


# Run through a new fork server before it is used: what a sample forked from it sees.
_FORK_PROBE = """
import ctypes, json, os, socket
libc = ctypes.CDLL(None)
def writable(path):
    try:
        open(path, "w").close()
        os.unlink(path)
        return True
    except OSError:
        return False
print(json.dumps({"pid": os.getpid(), "interfaces": [n for _, n in socket.if_nameindex()],
                  "caps": [c for c in range(64) if libc.prctl(23, c, 0, 0, 0) == 1],
                  "tmp": all(writable(d + "/ccrun-probe") for d in ("/tmp", "/var/tmp", "/dev/shm")),
                  "dev": writable("/dev/ccrun-probe"), "proc": os.listdir("/proc")}))
"""


def _check_forkserver(sandbox: Sandbox, server: _Forkserver) -> str:
    """What is wrong with a sample forked from `server` ("" if nothing)."""
    try:
        proc = _Forked(sandbox, server)
    except OSError as exc:
        return f"fork server: {exc}"
    proc.assign(sandbox, {"mode": "run", "source": _FORK_PROBE, "module": "__main__", "nonce": "probe"}, 10.0)
    proc.pump(proc.start + 30.0, proc.from_r, lambda chunk: False, until_exit=True)
    proc.finish()
    try:
        seen = json.loads(proc.out.text())
    except ValueError:
        return f"fork server: a forked sample did not run ({proc.err.text().strip()[-300:] or proc.returncode})"
    wrong = [what for what, ok in (("own PID namespace", seen["pid"] == 2), ("no network", seen["interfaces"] == ["lo"]),
                                   ("no capabilities", not seen["caps"]), ("private /tmp", seen["tmp"]),
                                   ("read-only /dev", not seen["dev"]), ("no /proc of the server", not seen["proc"]))
             if not ok]
    return f"fork server: a forked sample lacks {', '.join(wrong)}" if wrong else ""


class Session:
    """One program in one sandboxed process, answering requests one at a time.

    `ask(message, timeout_s)` sends a request (None: only wait, e.g. for `{"loaded": ...}`) and
    returns the program's answer, or None if the program ended, broke the channel or took longer
    than `timeout_s` (then it is killed and every later `ask` returns None). The answer is
    untrusted data: the caller checks its shape. `close()` ends it (also on `with` exit).
    """

    def __init__(self, proc: _Process) -> None:
        self._proc = proc
        self._frames = Frames(FRAME_LIMIT)
        self.alive = True

    def ask(self, message: dict[str, Any] | None, timeout_s: float) -> Any:
        if not self.alive:
            return None
        deadline = time.monotonic() + timeout_s
        answers: list[Any] = []
        try:
            if message is not None:
                send(self._proc.to_w, request_frame(message), deadline)

            def collect(chunk: bytes) -> bool:
                answers.extend(self._frames.feed(chunk))
                return bool(answers) or not chunk

            self._proc.pump(deadline, self._proc.from_r, collect, until_exit=True)
        except ChannelError:
            answers = []
        if len(answers) != 1:
            self.close()
            return None
        return answers[0]

    def stderr(self) -> str:
        return self._proc.err.text()

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self._proc.finish()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Judge:
    """The judge process (judge.py's `serve`), sandboxed like a program but long-lived."""

    def __init__(self, prefix: list[str], executable: str) -> None:
        import socket

        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        prefix = [arg for arg in prefix if arg != "--die-with-parent"]  # it ends when our socket closes
        try:
            self._proc = subprocess.Popen(
                [*prefix, executable, "-I", "-S", "-c", JUDGE, str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), env=_ENV, cwd="/" if prefix else tempfile.gettempdir(),
                start_new_session=True)
        finally:
            theirs.close()
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def submit(self, fds: list[int]) -> None:
        import socket

        with self._lock:
            socket.send_fds(self._socket, [b"check"], fds)

    def close(self) -> None:
        self._socket.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class _Process:
    """One sandboxed bootstrap (inside.py) waiting for its sample; `assign` gives it the sample.

    to_w / from_r: the parent's ends of the pipes to and from it (requests, answers). Two engines:
    `_Spawned` (a bwrap and an interpreter of its own, started ahead as a spare) and `_Forked` (a
    fork of the Sandbox's fork server, forkserver.py)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.cap = sandbox.max_output_kb * 1024
        self.out, self.err = _Capped(self.cap), _Capped(self.cap)
        self.oom = False
        self.returncode: int | None = None
        self.exit_fd: int | None = None
        self.to_w = self.from_r = -1
        self.group = None
        if sandbox._cgroups is not None:
            try:
                self.group = sandbox._cgroups.create(sandbox.memory_mb * 2**20, sandbox.max_processes)
            except CgroupError:
                self.group = None
        self.finished = False
        self.start = self.end = time.monotonic()

    # engine specific
    def _streams(self) -> tuple[int, int]:
        raise NotImplementedError

    def _exited(self) -> None:
        """The exit event fired: note how it ended."""

    def _kill(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def assign(self, sandbox: Sandbox, config: dict[str, Any], cpu_s: float) -> None:
        """Send its sample (the first frame); the sample's time starts now. A process that cannot
        take it (dead) shows that in what follows: no answer, an exit status."""
        self.start = time.monotonic()
        try:
            send(self.to_w, request_frame({**config, "limits": sandbox._limits(cpu_s), "site": sandbox._site}),
                 self.start + _KILL_GRACE_S)
        except ChannelError:
            pass

    def hand_over(self) -> None:
        """Close the parent's ends of its pipes (someone else, the judge, holds them now)."""
        _close(self.to_w, self.from_r)
        self.to_w = self.from_r = -1

    def pump(self, deadline: float, watch: int, on_data: Callable[[bytes], bool], *, until_exit: bool) -> str:
        """Read output and `watch` until `on_data(chunk)` says stop ("data"; b"" is EOF), the
        process exits ("exit", only `until_exit`) or the deadline passes ("deadline")."""
        stdout, stderr = self._streams()
        streams = {stdout: self.out, stderr: self.err}
        with selectors.DefaultSelector() as selector:
            for fd in (*streams, watch):
                selector.register(fd, selectors.EVENT_READ)
            if self.exit_fd is not None and until_exit:
                selector.register(self.exit_fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "deadline"
                wait = remaining if self.exit_fd is not None or not until_exit else min(remaining, _POLL_S)
                for key, _ in selector.select(wait):
                    if key.fd == self.exit_fd:  # it exited: what it wrote to `watch` before still counts
                        self._exited()
                        return "data" if _drain_into(watch, on_data) else "exit"
                    chunk = os.read(key.fd, 65536)
                    if key.fd == watch:
                        if on_data(chunk):
                            return "data"
                        if not chunk:
                            selector.unregister(watch)
                    elif chunk:
                        streams[key.fd].add(chunk)
                    else:
                        selector.unregister(key.fd)
                if until_exit and self.exit_fd is None and not self.alive():
                    return "data" if _drain_into(watch, on_data) else "exit"

    def finish(self) -> None:
        """Kill whatever is left of it, reap it, read the rest of its output, free its cgroup."""
        if self.finished:
            return
        self.finished = True
        try:
            self._kill()
            for fd, buffer in zip(self._streams(), (self.out, self.err)):
                _drain(fd, buffer)
        finally:
            self.end = time.monotonic()
            self._close_all()
            _close(self.to_w if self.to_w >= 0 else None, self.from_r if self.from_r >= 0 else None)
            self.to_w = self.from_r = -1
            if self.group is not None:
                try:
                    self.oom = self.group.oom_killed()
                except OSError:
                    pass
                self.group.remove()

    def _close_all(self) -> None:
        raise NotImplementedError

    def result(self, outcome: str, detail: str, clean: bool) -> Result:
        return Result(passed=outcome == "passed", outcome=outcome, detail=detail, stdout=self.out.text(),
                      stderr=self.err.text(), truncated=self.out.dropped > 0 or self.err.dropped > 0,
                      clean_exit=clean, duration_s=self.end - self.start)


class _Spawned(_Process):
    """A bwrap and an interpreter of its own (or, unconfined, an interpreter in a temporary directory)."""

    def __init__(self, sandbox: Sandbox, preload: tuple[str, ...]) -> None:
        super().__init__(sandbox)
        self.workdir = None if sandbox._prefix else tempfile.mkdtemp(prefix="ccrun-sandbox-")
        env = dict(_ENV, HOME=self.workdir, TMPDIR=self.workdir) if self.workdir else _ENV
        in_r, self.to_w = os.pipe()
        self.from_r, out_w = os.pipe()
        cmd = [*(self.group.enter_prefix() if self.group else []), *sandbox._prefix, sandbox._executable, "-I", "-S",
               "-c", STUB, str(in_r), str(out_w), str(sandbox._code), ",".join(preload)]
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(in_r, out_w, sandbox._code), cwd=self.workdir or "/", env=env, start_new_session=True)
        except BaseException:
            _close(self.to_w, self.from_r)
            if self.group is not None:
                self.group.remove()
            raise
        finally:
            _close(in_r, out_w)
        try:
            self.exit_fd = os.pidfd_open(self.proc.pid)  # readable once it has exited
        except (AttributeError, OSError):  # Linux < 5.3
            self.exit_fd = None
        self.pid_namespace = bool(sandbox._prefix) and sandbox.isolation["pid"]
        self.start = self.end = time.monotonic()

    def _streams(self) -> tuple[int, int]:
        return self.proc.stdout.fileno(), self.proc.stderr.fileno()

    def alive(self) -> bool:
        return not _has_exited(self.proc, self.exit_fd, 0)

    def _kill(self) -> None:
        _kill_all(self.proc, self.exit_fd, self.pid_namespace, self.group)
        self.returncode = self.proc.returncode

    def _close_all(self) -> None:
        self.proc.stdout.close()
        self.proc.stderr.close()
        _close(self.exit_fd)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _Forked(_Process):
    """A fork of the fork server (forkserver.py): namespaces of its own, no capabilities, reported
    on by its keeper: a 4-byte wait status on `exit_fd` once it has ended; closing `kill_w` ends it."""

    def __init__(self, sandbox: Sandbox, server: _Forkserver) -> None:
        super().__init__(sandbox)
        in_r, self.to_w = os.pipe()
        self.from_r, out_w = os.pipe()
        self.stdout_r, stdout_w = os.pipe()
        self.stderr_r, stderr_w = os.pipe()
        self.exit_fd, status_w = os.pipe()
        kill_r, self.kill_w = os.pipe()
        theirs = [in_r, out_w, stdout_w, stderr_w, status_w, kill_r]
        try:
            if self.group is not None:
                theirs += [os.open(f, os.O_WRONLY) for f in self.group.procs_files]
            keep = [b for b in sandbox._binds if any(b.startswith(d + os.sep) for d in ("/tmp", "/var/tmp", "/dev/shm"))]
            server.submit({"tmp_bytes": sandbox.max_file_mb * 2**20, "keep": keep}, theirs)
        except BaseException:
            self._close_all()
            _close(self.to_w, self.from_r)
            if self.group is not None:
                self.group.remove()
            raise
        finally:
            _close(*theirs)
        self.status = bytearray()

    def _streams(self) -> tuple[int, int]:
        return self.stdout_r, self.stderr_r

    def alive(self) -> bool:
        return self.returncode is None and not select.select([self.exit_fd], [], [], 0)[0]

    def _exited(self) -> None:
        while len(self.status) < 4:
            chunk = os.read(self.exit_fd, 4 - len(self.status))
            if not chunk:
                break
            self.status += chunk
        if len(self.status) == 4:
            self.returncode = os.waitstatus_to_exitcode(int.from_bytes(self.status, "big", signed=True))
        else:  # the keeper itself was killed (its cgroup): as if by SIGKILL
            self.returncode = -signal.SIGKILL

    def _kill(self) -> None:
        if self.returncode is None:
            _close(self.kill_w)  # the keeper kills the namespace's init, reaps it and reports
            self.kill_w = None
            if select.select([self.exit_fd], [], [], _KILL_GRACE_S)[0]:
                self._exited()
            else:
                self.returncode = -signal.SIGKILL
        if self.group is not None:
            self.group.kill()

    def _close_all(self) -> None:
        _close(self.stdout_r, self.stderr_r, self.exit_fd, self.kill_w)
        self.kill_w = None


class _Forkserver:
    """forkserver.py's `serve`, in a bwrap sandbox of its own with that sandbox's capabilities."""

    def __init__(self, sandbox: Sandbox, preload: tuple[str, ...]) -> None:
        import socket

        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        prefix = [a for a in sandbox._prefix if a != "--die-with-parent"][:-1] + ["--cap-add", "ALL", "--"]
        try:
            self._proc = subprocess.Popen(
                [*prefix, sandbox._executable, "-I", "-S", "-c", FORKSERVER, "--forkserver", str(theirs.fileno()),
                 ",".join(preload)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),), env=_ENV, cwd="/", start_new_session=True)
        finally:
            theirs.close()
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def submit(self, meta: dict[str, Any], fds: list[int]) -> None:
        import socket

        with self._lock:
            socket.send_fds(self._socket, [marshal.dumps(meta)], fds)

    def close(self) -> None:
        self._socket.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stderr.close()


def _in_parallel(jobs: list[Callable[[], Result]], workers: int, progress: bool) -> list[Result]:
    results: list[Result | None] = [None] * len(jobs)
    step = max(1, len(jobs) // 100)  # about a hundred progress updates at most
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress and (done % step == 0 or done == len(jobs)):
                print(f"\rsandbox: {done}/{len(jobs)} programs", end="", file=sys.stderr, flush=True)
    if progress and jobs:
        print(file=sys.stderr)
    return results  # type: ignore[return-value]


def _drain_into(fd: int, on_data: Callable[[bytes], bool]) -> bool:
    """Whatever is already in a pipe whose writer has exited, fed to `on_data`; whether it said stop."""
    os.set_blocking(fd, False)
    try:
        while True:
            chunk = os.read(fd, 65536)
            if on_data(chunk):
                return True
            if not chunk:
                return False
    except BlockingIOError:  # a writer outside our reach still holds it
        return False
    finally:
        os.set_blocking(fd, True)


def _how_it_ended(proc: _Process) -> str:
    if proc.oom:
        return "killed: out of memory (its cgroup's limit)"
    code = proc.returncode
    if code is not None and (code < 0 or code > 128):
        number = -code if code < 0 else code - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the program ended during the check: killed by {name}"
    return f"the program ended during the check (exit status {code})"


class _Capped:
    """The first `cap` bytes of a stream; the rest is only counted."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _has_exited(proc: subprocess.Popen, exit_fd: int | None, timeout_s: float) -> bool:
    """Whether the process has exited, waiting up to `timeout_s`, without reaping it.

    Unreaped, its pid (and so its process group id) cannot be reused, so killpg stays safe.
    """
    if exit_fd is not None:
        return bool(select.select([exit_fd], [], [], timeout_s)[0])
    deadline = time.monotonic() + timeout_s
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def _drain(fd: int, buffer: _Capped) -> None:
    """What is left in a pipe after its writers are gone (or killed): read without blocking."""
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 65536):
            buffer.add(chunk)
    except BlockingIOError:  # a writer outside our reach still holds it (no PID namespace)
        pass


def _kill_all(proc: subprocess.Popen, exit_fd: int | None, pid_namespace: bool, group: Any = None) -> None:
    """SIGKILL every process of the run and reap it; return once the PID namespace (if any) is gone.

    The namespace's init is bwrap's child. Killing it first and then waiting for bwrap orders
    things: the kernel kills and reaps everything in the namespace before init's exit is reported
    to bwrap, so when bwrap has exited nothing is left. Killing bwrap first would return before
    that teardown ends (`--die-with-parent` still kills init).
    """
    if pid_namespace and not _has_exited(proc, exit_fd, 0):
        _kill_children(proc.pid)
        _has_exited(proc, exit_fd, _KILL_GRACE_S)
    try:  # the process group: anything that did not leave it (all of it without a PID namespace)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()  # reaped first: an unreaped bwrap would still count as a member of the cgroup
    if group is not None:  # the cgroup: anything still in it (none where the PID namespace held)
        group.kill()


def _tree(pid: int, depth: int) -> set[int]:
    """`pid` and its descendants down to `depth` levels (itself is level 1)."""
    if depth <= 0:
        return set()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return {pid}
    return {pid}.union(*(_tree(c, depth - 1) for c in children))


def _kill_children(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:  # no such file (kernel without CONFIG_PROC_CHILDREN): killpg and --kill-child do it
        return
    for child in children:
        try:
            handle = os.pidfd_open(child)  # pins this process: the pid cannot be reused under us
        except AttributeError:  # Linux < 5.3: a plain kill (reuse would need unshare to reap it just now)
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
            continue
        except OSError:  # gone already
            continue
        try:
            signal.pidfd_send_signal(handle, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(handle)


def _verdict(nonce: bytes, message: bytes, returncode: int, finished: bool, timeout_s: float) -> tuple[str, str, bool]:
    """(outcome, detail, clean_exit) from the bootstrap's message and the exit status."""
    if not finished:
        return "timeout", f"still running after {timeout_s:g} s (killed)", False
    kind, clean, detail = (message.split(b"\0", 2) + [b"", b""])[:3]
    if kind == b"passed":
        if detail == nonce:
            return "passed", "", True
        return "error", "the completion report did not carry this run's nonce", False
    if kind in (b"failed", b"error", b"exited_early"):
        return kind.decode(), detail.decode("utf-8", "replace"), clean == b"1"
    if returncode == 0:  # os._exit(0), or the report descriptor closed: it did not reach its end
        return "exited_early", "exit status 0 before the end of the program (os._exit?)", True
    if returncode < 0 or returncode > 128:  # by a signal; > 128: as the namespace's init relays it
        number = -returncode if returncode < 0 else returncode - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        why = {"SIGKILL": " (CPU time or memory limit?)", "SIGXCPU": " (CPU time limit)"}.get(name, "")
        return ("timeout" if name == "SIGXCPU" else "error"), f"killed by {name}{why}", False
    return "error", f"exit status {returncode} before the end of the program", False


def _package_binds(packages: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(site directories for sys.path, paths to bind read-only, problems) for the allowed packages:
    each distribution's top-level files and directories (numpy: numpy/, numpy.libs/, its dist-info)."""
    sites: list[str] = []
    binds: list[str] = []
    problems = []
    for name in packages:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"package {name!r} is not installed: programs that import it fail")
            continue
        location = os.path.realpath(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in sorted(tops):
            path = os.path.join(location, top)
            if os.path.exists(path):
                binds.append(path)
        if location not in sites:
            sites.append(location)
    return sites, binds, problems


def _hidden_site_dirs(executable: str) -> list[str]:
    """The interpreter's own and the system's site-packages directories: hidden in the sandbox."""
    base = os.path.realpath(sys.base_prefix)
    paths = sysconfig.get_paths(vars={"base": base, "platbase": base, "installed_base": base,
                                      "installed_platbase": base})
    found = {os.path.realpath(paths[k]) for k in ("purelib", "platlib")}
    found |= {os.path.realpath(p) for pattern in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages",
                                                   "/usr/lib/python3/dist-packages") for p in glob(pattern)}
    return sorted(p for p in found if os.path.isdir(p))


def _bwrap_argv(executable: str, binds: Sequence[str], tmp_mb: int) -> list[str]:
    """The bubblewrap command line that confines one program (see the module docstring); [] without bwrap."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return []
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev"]
    size = str(tmp_mb * 2**20)
    for d in ("/tmp", "/var/tmp", "/dev/shm"):  # first: a bind below one of them (a package) goes on top
        argv += ["--perms", "1777", "--size", size, "--tmpfs", d]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    trees = ["/usr"]
    for path in (os.path.realpath(sys.base_prefix), os.path.dirname(executable)):
        if not any(path == t or path.startswith(t + os.sep) for t in trees):
            argv += ["--ro-bind", path, path]
            trees.append(path)
    hidden = [d for d in _hidden_site_dirs(executable) if any(d.startswith(t + os.sep) for t in trees)]
    for d in hidden:
        argv += ["--tmpfs", d]
    for path in binds:
        argv += ["--ro-bind", path, path]
    for d in hidden:
        argv += ["--remount-ro", d]
    return argv + ["--remount-ro", "/", "--chdir", "/tmp", "--"]


# What the probe looks at from inside: its PID, uid, network interfaces, Python version, whether
# the private directories are tmpfs mounts of their own and writable, and whether any of the host
# paths it is given exist.
_PROBE = """
import json, os, platform, socket, sys
try:
    mounts = {line.split()[4]: line.split(" - ")[1].split()[0] for line in open("/proc/self/mountinfo")}
except OSError:
    mounts = {}
tmp = {d: mounts.get(d) == "tmpfs" and os.access(d, os.W_OK) for d in ("/tmp", "/var/tmp", "/dev/shm")}
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "interfaces": [n for _, n in socket.if_nameindex()],
                  "python": platform.python_version(), "tmp": tmp,
                  "seen": [p for p in sys.argv[1:] if os.path.lexists(p)]}))
"""


def _host_paths() -> list[str]:
    """Paths of the host a program must not see: a marker file in the temporary directory (the
    caller writes it), this project's files, and entries of the working and home directories."""
    paths = [os.path.join(tempfile.gettempdir(), f"ccrun-probe-{os.getpid()}-{secrets.token_hex(4)}"), __file__]
    for directory in {os.getcwd(), os.path.expanduser("~")}:
        try:
            paths += [os.path.join(directory, e) for e in sorted(os.listdir(directory))[:20]]
        except OSError:
            pass
    return paths


def _probe(prefix: list[str], executable: str, site_dirs: list[str]) -> tuple[list[str], dict[str, bool], str]:
    """The command prefix to use, what it gives, and the Python version programs run on."""
    nothing = {"network": False, "pid": False, "filesystem": False, "private_tmp": False, "rlimits": True}
    bound = [prefix[i + 2] for i, a in enumerate(prefix) if a in ("--ro-bind", "--ro-bind-try")]
    host = [p for p in _host_paths()  # not a bound path, nor on the way to one
            if not any(b == p or b.startswith(p + os.sep) or p.startswith(b + os.sep) for b in bound)]
    Path(host[0]).touch()
    try:
        for candidate in ([prefix, [a for a in prefix if a != "--disable-userns"]] if prefix else []):
            try:
                done = subprocess.run([*candidate, executable, "-I", "-S", "-c", _PROBE, *host], capture_output=True,
                                      text=True, timeout=30, stdin=subprocess.DEVNULL, env=_ENV, cwd="/")
                seen = json.loads(done.stdout)
            except (OSError, subprocess.SubprocessError, ValueError):
                continue
            if done.returncode != 0:
                continue
            return candidate, {
                "network": seen["interfaces"] == ["lo"],
                "pid": seen["pid"] == 2,  # bwrap's init is 1
                "filesystem": not seen["seen"],
                "private_tmp": all(seen["tmp"].values()),
                "rlimits": True,
            }, seen["python"]
    finally:
        os.unlink(host[0])
    return [], nothing, platform.python_version()


def _missing(isolation: dict[str, bool], confined: bool) -> list[str]:
    if not confined:
        return ["bubblewrap (bwrap) is missing or does not run here, so programs run unconfined, as you, "
                "with only rlimits: they can read and change your files, reach the network and each other "
                "(install it: apt install bubblewrap)"]
    texts = {
        "network": "no network namespace: programs can reach the network",
        "pid": "no PID namespace: detached children can outlive the program",
        "filesystem": "host paths are visible to programs",
        "private_tmp": "no private /tmp, /var/tmp, /dev/shm",
        "budget": f"no cgroup per sample ({unavailable_reason() or 'cgroups unavailable'}): processes and memory "
                  "are bounded per process only, so one sample can starve the others",
    }
    return [text for key, text in texts.items() if not isolation.get(key, False)]
