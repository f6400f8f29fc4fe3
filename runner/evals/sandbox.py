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
- **Samples isolated from each other and from the machine** (bubblewrap, `bwrap`, confine.py):
  new user, PID, network, mount, IPC, UTS and cgroup namespaces; a root made of read-only binds
  of /usr (and the /bin, /lib links), the interpreter's own prefix with its site-packages
  hidden, and of the allowed packages only (`packages`, default numpy for APPS); private tmpfs
  /tmp, /var/tmp and /dev/shm (each `max_file_mb`), gone with the sample. Nothing else of the
  host is visible: not the problems, the samples, the run directory, your home or the project;
  no path-based unix socket of the host exists there and the network namespace has only a
  loopback that is down. The program runs as uid 65534 inside a user namespace with no
  capabilities and cannot create further user namespaces (`--disable-userns`). Samples are
  forks of a fork server inside such a sandbox (forkserver.py: each fork `unshare`s PID, mount,
  network, IPC and UTS namespaces of its own, mounts its own private directories, sees no /proc
  of the server and drops every capability), or, where a fork server cannot be made, each one
  a bwrap of its own (engines.py).
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

import json
import marshal
import os
import platform
import secrets
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from .cgroups import Cgroups
from .channel import ChannelError, Frames, request_frame, send
from .confine import bwrap_argv, missing, package_binds, probe
from .engines import (
    FRAME_LIMIT,
    INSIDE,
    Forked,
    Forkserver,
    JudgeServer,
    Launch,
    Process,
    Result,
    Spawned,
    close_fds,
    memfd,
    tree,
)

OUTCOMES = ("passed", "failed", "error", "timeout", "exited_early")
_JUDGE_GRACE_S = 1.0  # how long past the deadline the judge may take to write its verdict


HUMANEVAL_PRELOAD = ("typing",)  # most HumanEval prompts import it: ~10 ms of CPU, done ahead (see _take)


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
        self._site, self._binds, problems = package_binds(self.packages)
        self._cgroups = Cgroups.probe() if isolate else None
        if isolate and self._cgroups is not None:
            weakref.finalize(self, self._cgroups.close)
        self._prefix: list[str] = bwrap_argv(self._executable, self._binds, max_file_mb) if isolate else []
        self._prefix, self.isolation, self.python = probe(self._prefix, self._executable, self._site)
        self.isolation["budget"] = self._cgroups is not None
        code = memfd(marshal.dumps(compile(INSIDE, "<ccrun-sandbox>", "exec")), sealed=True)
        weakref.finalize(self, os.close, code)
        self._launch = Launch(
            prefix=self._prefix, executable=self._executable, code_fd=code, site=self._site, binds=self._binds,
            cgroups=self._cgroups, memory_bytes=memory_mb * 2**20, max_processes=max_processes,
            output_cap=max_output_kb * 1024, tmp_bytes=max_file_mb * 2**20,
            pid_namespace=bool(self._prefix) and self.isolation["pid"], limits=self._limits)
        self._judge: JudgeServer | None = None
        self._judge_lock = threading.Lock()
        self._spares: dict[tuple[str, ...], list[Process]] = {}
        self._spares_lock = threading.Lock()
        weakref.finalize(self, _end_spares, self._spares)
        self._servers: dict[tuple[str, ...], Forkserver] = {}
        self._servers_lock = threading.Lock()
        self.forkserver_problem = "" if fork_server else "fork_server=False"  # why fork servers are not used
        weakref.finalize(self, _end_servers, self._servers)
        if isolate:
            problems += missing(self.isolation, bool(self._prefix))
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
        proc.assign({"mode": "run", "source": program, "module": "__main__" if as_main else "__sandbox__",
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
        proc.assign({"mode": "call", "source": program, "module": "__sandbox__", "fn": entry_point,
                           "cls": False}, timeout_s)
        verdict_r, verdict_w = os.pipe()
        spec = memfd(marshal.dumps({"prompt": prompt, "test": test, "entry_point": entry_point,
                                     "timeout_s": max(0.0, proc.start + timeout_s - time.monotonic()),
                                     "limit": FRAME_LIMIT}))
        try:  # from here on only the judge talks to the program
            self._judge_process().submit([spec, proc.to_w, proc.from_r, verdict_w])
        finally:
            close_fds(spec, verdict_w)
            proc.hand_over()
        verdict = bytearray()

        def collect(chunk: bytes) -> bool:
            verdict.extend(chunk[:65536])
            return not chunk  # EOF: the judge's child wrote its verdict and is gone

        reason = proc.pump(proc.start + timeout_s + _JUDGE_GRACE_S, verdict_r, collect, until_exit=False)
        close_fds(verdict_r)
        try:
            message = json.loads(bytes(verdict)) if reason != "deadline" else {}
            outcome, detail = str(message["outcome"]), str(message["detail"])
        except (ValueError, KeyError, TypeError):
            outcome, detail = "error", "the judge gave no verdict"
        if outcome == "gone":  # the program ended during the check: let it finish ending, then say how
            proc.wait_exit(_JUDGE_GRACE_S)
        proc.finish()
        if reason == "deadline":
            return proc.result("timeout", f"still running after {timeout_s:g} s (killed)", False)
        if outcome == "gone":
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
        proc.assign({"mode": mode, "source": program, "module": module, "fn": fn, "cls": cls,
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
            roots = [(p.proc.pid, 3) for ps in self._spares.values() for p in ps if isinstance(p, Spawned)]
            roots += [(server.proc.pid, 3) for server in self._servers.values()]
        with self._judge_lock:
            roots += [(self._judge.proc.pid, 3)] if self._judge is not None else []
        return {pid for root, depth in roots for pid in tree(root, depth)}

    def _take(self, preload: tuple[str, ...]) -> Process:
        """A started process for one sample: a fork of the fork server for `preload` where it works
        (see forkserver.py), else a spare (and a new spare for the next sample).

        A spare is a bootstrap that has started (bwrap, the interpreter, `preload`) and waits for
        its program: starting it while the previous sample runs hides most of a sample's start-up.
        Spares never hold more than one program and never run one they were not given."""
        server = self._forkserver(preload)
        if server is not None:
            try:
                return Forked(self._launch, server)
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
        spare = Spawned(self._launch, preload)
        with self._spares_lock:
            self._spares.setdefault(preload, []).append(spare)
        return taken if taken is not None else Spawned(self._launch, preload)

    def _forkserver(self, preload: tuple[str, ...]) -> Forkserver | None:
        """The running fork server for `preload` (started and checked on first use), or None where
        fork servers do not work here (no bwrap, or a check failed: then `forkserver_problem` says why)."""
        if not self._prefix or self.forkserver_problem:
            return None
        with self._servers_lock:
            server = self._servers.get(preload)
            if server is not None and server.alive():
                return server
            server = Forkserver(self._launch, preload)
            problem = _check_forkserver(self, server)
            if problem:
                server.close()
                self.forkserver_problem = problem
                return None
            self._servers[preload] = server
            return server

    def _judge_process(self) -> JudgeServer:
        with self._judge_lock:
            if self._judge is None or not self._judge.alive():
                self._judge = JudgeServer([*self._prefix], self._executable)
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


def _end_spares(spares: dict[tuple[str, ...], list[Process]]) -> None:
    for group in list(spares.values()):
        while group:
            group.pop().finish()


def _end_servers(servers: dict[tuple[str, ...], Forkserver]) -> None:
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


def _check_forkserver(sandbox: Sandbox, server: Forkserver) -> str:
    """What is wrong with a sample forked from `server` ("" if nothing)."""
    try:
        proc = Forked(sandbox._launch, server)
    except OSError as exc:
        return f"fork server: {exc}"
    proc.assign({"mode": "run", "source": _FORK_PROBE, "module": "__main__", "nonce": "probe"}, 10.0)
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

    def __init__(self, proc: Process) -> None:
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


def _how_it_ended(proc: Process) -> str:
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


