"""The processes behind a Sandbox: sandboxed bootstraps (spawned one by one or forked from a fork
server), the fork servers and the judge server, and how each is started, read, killed and reaped.

Every program's process runs inside.py (compiled once, loaded by STUB from a sealed memfd). A
`Process` is started before it has work and gets its sample with `assign` (the first frame on
its channel). `Spawned`: a bwrap and an interpreter of its own (the engine where fork servers do
not work). `Forked`: a fork of a `Forkserver` (forkserver.py) reported on by its keeper.
`JudgeServer`: judge.py's `serve`, which forks a check per HumanEval sample.
"""

from __future__ import annotations

import marshal
import os
import select
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cgroups import CgroupError, Cgroups
from .channel import ChannelError, request_frame, send
from .confine import ENV


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


@dataclass(frozen=True)
class Launch:
    """What every sandboxed process of one Sandbox is started with."""

    prefix: list[str]  # the bwrap command line ([]: unconfined)
    executable: str  # the interpreter, resolved
    code_fd: int  # inside.py (after channel.py), compiled, in a sealed memfd
    site: list[str]  # the allowed packages' directories, for sys.path
    binds: list[str]  # the allowed packages' paths (bound read-only)
    cgroups: Cgroups | None  # where each sample gets its pids + memory cgroup
    memory_bytes: int
    max_processes: int
    output_cap: int  # bytes of stdout and of stderr kept
    tmp_bytes: int  # size of each private /tmp, /var/tmp, /dev/shm
    pid_namespace: bool
    limits: Callable[[float], dict[str, list[int]]]  # rlimits for a sample of so many CPU seconds


HERE = Path(__file__).resolve().parent


KILL_GRACE_S = 5.0  # how long the namespace's teardown may take after SIGKILL before we stop waiting


_POLL_S = 0.01  # only where pidfd_open is missing: how often we look whether the program exited


FRAME_LIMIT = 64 << 20  # the largest answer a program may send in one frame


def source(*names: str) -> str:
    """channel.py's source followed by each of `names`': what runs with `python -I -S -c` in a sandbox."""
    return "\n".join((HERE / name).read_text(encoding="utf-8") for name in ("channel.py", *names))


INSIDE = source("inside.py")


JUDGE = source("judge.py")


FORKSERVER = source("inside.py", "forkserver.py")


STUB = "import marshal,os,sys;f=int(sys.argv[3]);exec(marshal.loads(os.pread(f,os.fstat(f).st_size,0)))"


def memfd(data: bytes, *, sealed: bool = False) -> int:
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


def close_fds(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class Process:
    """One sandboxed bootstrap (inside.py) waiting for its sample; `assign` gives it the sample.

    to_w / from_r: the parent's ends of the pipes to and from it (requests, answers). Two engines:
    `Spawned` (a bwrap and an interpreter of its own, started ahead as a spare) and `Forked` (a
    fork of the Sandbox's fork server, forkserver.py)."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.cap = launch.output_cap
        self.out, self.err = Capped(self.cap), Capped(self.cap)
        self.oom = False
        self.returncode: int | None = None
        self.exit_fd: int | None = None
        self.to_w = self.from_r = -1
        self.group = None
        if launch.cgroups is not None:
            try:
                self.group = launch.cgroups.create(launch.memory_bytes, launch.max_processes)
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

    def wait_exit(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for it to exit by itself (so that `finish` reports how it ended,
        not the kill)."""
        raise NotImplementedError

    def assign(self, config: dict[str, Any], cpu_s: float) -> None:
        """Send its sample (the first frame); the sample's time starts now. A process that cannot
        take it (dead) shows that in what follows: no answer, an exit status."""
        self.start = time.monotonic()
        try:
            send(self.to_w, request_frame({**config, "limits": self.launch.limits(cpu_s), "site": self.launch.site}),
                 self.start + KILL_GRACE_S)
        except ChannelError:
            pass

    def hand_over(self) -> None:
        """Close the parent's ends of its pipes (someone else, the judge, holds them now)."""
        close_fds(self.to_w, self.from_r)
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
                        return "data" if drain_into(watch, on_data) else "exit"
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
                    return "data" if drain_into(watch, on_data) else "exit"

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
            close_fds(self.to_w if self.to_w >= 0 else None, self.from_r if self.from_r >= 0 else None)
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


class Spawned(Process):
    """A bwrap and an interpreter of its own (or, unconfined, an interpreter in a temporary directory)."""

    def __init__(self, launch: Launch, preload: tuple[str, ...]) -> None:
        super().__init__(launch)
        self.workdir = None if launch.prefix else tempfile.mkdtemp(prefix="ccrun-sandbox-")
        env = dict(ENV, HOME=self.workdir, TMPDIR=self.workdir) if self.workdir else ENV
        in_r, self.to_w = os.pipe()
        self.from_r, out_w = os.pipe()
        cmd = [*(self.group.enter_prefix() if self.group else []), *launch.prefix, launch.executable, "-I", "-S",
               "-c", STUB, str(in_r), str(out_w), str(launch.code_fd), ",".join(preload)]
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(in_r, out_w, launch.code_fd), cwd=self.workdir or "/", env=env, start_new_session=True)
        except BaseException:
            close_fds(self.to_w, self.from_r)
            if self.group is not None:
                self.group.remove()
            raise
        finally:
            close_fds(in_r, out_w)
        try:
            self.exit_fd = os.pidfd_open(self.proc.pid)  # readable once it has exited
        except (AttributeError, OSError):  # Linux < 5.3
            self.exit_fd = None
        self.pid_namespace = launch.pid_namespace
        self.start = self.end = time.monotonic()

    def _streams(self) -> tuple[int, int]:
        return self.proc.stdout.fileno(), self.proc.stderr.fileno()

    def alive(self) -> bool:
        return not has_exited(self.proc, self.exit_fd, 0)

    def wait_exit(self, timeout_s: float) -> None:
        has_exited(self.proc, self.exit_fd, timeout_s)

    def _kill(self) -> None:
        _kill_all(self.proc, self.exit_fd, self.pid_namespace, self.group)
        self.returncode = self.proc.returncode

    def _close_all(self) -> None:
        self.proc.stdout.close()
        self.proc.stderr.close()
        close_fds(self.exit_fd)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Forked(Process):
    """A fork of the fork server (forkserver.py): namespaces of its own, no capabilities, reported
    on by its keeper: a 4-byte wait status on `exit_fd` once it has ended; closing `kill_w` ends it."""

    def __init__(self, launch: Launch, server: Forkserver) -> None:
        super().__init__(launch)
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
            keep = [b for b in launch.binds if any(b.startswith(d + os.sep) for d in ("/tmp", "/var/tmp", "/dev/shm"))]
            server.submit({"tmp_bytes": launch.tmp_bytes, "keep": keep}, theirs)
        except BaseException:
            self._close_all()
            close_fds(self.to_w, self.from_r)
            if self.group is not None:
                self.group.remove()
            raise
        finally:
            close_fds(*theirs)
        self.status = bytearray()

    def _streams(self) -> tuple[int, int]:
        return self.stdout_r, self.stderr_r

    def alive(self) -> bool:
        return self.returncode is None and not select.select([self.exit_fd], [], [], 0)[0]

    def wait_exit(self, timeout_s: float) -> None:
        if self.returncode is None and select.select([self.exit_fd], [], [], timeout_s)[0]:
            self._exited()

    def _exited(self) -> None:
        """Read the keeper's report up to EOF: the keeper has exited too (it reaped the namespace's
        init first, so when this returns nothing of the sample is left)."""
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline and select.select([self.exit_fd], [], [], deadline - time.monotonic())[0]:
            chunk = os.read(self.exit_fd, 16)
            if not chunk:
                break
            self.status += chunk[: max(0, 4 - len(self.status))]
        if len(self.status) == 4:
            self.returncode = os.waitstatus_to_exitcode(int.from_bytes(self.status, "big", signed=True))
        else:  # the keeper itself was killed (its cgroup): as if by SIGKILL
            self.returncode = -signal.SIGKILL

    def _kill(self) -> None:
        if self.returncode is None:
            close_fds(self.kill_w)  # the keeper kills the namespace's init, reaps it and reports
            self.kill_w = None
            if select.select([self.exit_fd], [], [], KILL_GRACE_S)[0]:
                self._exited()
            else:
                self.returncode = -signal.SIGKILL
        if self.group is not None:
            self.group.kill()

    def _close_all(self) -> None:
        close_fds(self.stdout_r, self.stderr_r, self.exit_fd, self.kill_w)
        self.kill_w = None


class _Server:
    """A long-lived sandboxed interpreter that takes requests (a message and descriptors) on a
    SOCK_SEQPACKET socket and forks a child for each; it ends when our socket closes, so no
    `--die-with-parent` (that would tie it to the thread that started it)."""

    def __init__(self, prefix: list[str], executable: str, code: str, args: Callable[[int], list[str]]) -> None:
        import socket

        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        prefix = [arg for arg in prefix if arg != "--die-with-parent"]
        try:
            self.proc = subprocess.Popen(
                [*prefix, executable, "-I", "-S", "-c", code, *args(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), env=ENV, cwd="/" if prefix else tempfile.gettempdir(),
                start_new_session=True)
        finally:
            theirs.close()
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, message: bytes, fds: list[int]) -> None:
        import socket

        with self._lock:
            socket.send_fds(self._socket, [message], fds)

    def close(self) -> None:
        self._socket.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Forkserver(_Server):
    """forkserver.py's `serve`, in a bwrap sandbox of its own with that sandbox's capabilities."""

    def __init__(self, launch: Launch, preload: tuple[str, ...]) -> None:
        super().__init__(launch.prefix[:-1] + ["--cap-add", "ALL", "--"], launch.executable, FORKSERVER,
                         lambda fd: ["--forkserver", str(fd), ",".join(preload)])

    def submit(self, meta: dict[str, Any], fds: list[int]) -> None:
        self._send(marshal.dumps(meta), fds)


class JudgeServer(_Server):
    """The judge process (judge.py's `serve`), sandboxed like a program but long-lived."""

    def __init__(self, prefix: list[str], executable: str) -> None:
        super().__init__(prefix, executable, JUDGE, lambda fd: [str(fd)])

    def submit(self, fds: list[int]) -> None:
        self._send(b"check", fds)


def drain_into(fd: int, on_data: Callable[[bytes], bool]) -> bool:
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


class Capped:
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


def has_exited(proc: subprocess.Popen, exit_fd: int | None, timeout_s: float) -> bool:
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


def _drain(fd: int, buffer: Capped) -> None:
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
    if pid_namespace and not has_exited(proc, exit_fd, 0):
        _kill_children(proc.pid)
        has_exited(proc, exit_fd, KILL_GRACE_S)
    try:  # the process group: anything that did not leave it (all of it without a PID namespace)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()  # reaped first: an unreaped bwrap would still count as a member of the cgroup
    if group is not None:  # the cgroup: anything still in it (none where the PID namespace held)
        group.kill()


def tree(pid: int, depth: int) -> set[int]:
    """`pid` and its descendants down to `depth` levels (itself is level 1)."""
    if depth <= 0:
        return set()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return {pid}
    return {pid}.union(*(tree(c, depth - 1) for c in children))


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
