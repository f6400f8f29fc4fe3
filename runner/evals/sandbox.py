"""Run model-written Python programs and decide, from outside, whether each ran to its end.

Threat model: accidental harm from model output — a completion that loops forever, forks without
end, allocates all memory, deletes files, opens connections or leaves processes behind. This is
NOT a defence against an adversary: a program written to escape (kernel bugs, forging the
verdict through its inherited descriptor, anything readable by uid `nobody`) is out of scope. Run
untrusted-by-intent code in a VM or gVisor instead.

Each program runs in a fresh interpreter (`sys.executable -I -S`: isolated mode, and site's .pth
processing skipped because it was half of the start-up; the caller's site-packages directories
are put on sys.path and exit()/quit() installed instead, so third-party imports still work,
except packages that only a .pth file makes importable), started by `subprocess` only (no
multiprocessing, so the caller's start method does not matter), with:
- its own empty temporary directory as cwd, HOME and TMPDIR, removed afterwards;
- stdin from the given string (a temporary file, so large inputs cannot deadlock) or /dev/null;
  stdout and stderr captured and capped (the rest is read and dropped, so the program never
  blocks on a full pipe);
- its own session and process group; on timeout everything is SIGKILLed;
- where available (probed once per `Sandbox`, see `isolation`):
  `unshare --net --pid --fork --mount-proc --kill-child`: a new network namespace (no network at
  all; even loopback is a fresh interface that is down) and a new PID namespace whose init is the
  bootstrap (it runs the program in its one child, where signals behave as usual, and exits with
  it), so when the program ends or is killed the kernel kills every process in the namespace —
  detached children, double forks and fork bombs included;
  `setpriv --reuid=65534 --regid=65534 --clear-groups` when we are root: the program runs as
  `nobody`, so it can write only its own directory (and world-writable places such as /tmp);
  the interpreter and site-packages stay readable to `nobody` even under a private directory
  (a home of mode 0700, pyenv's /root/.pyenv, a clone inside either): in the program's mount
  namespace, before the uid drop, each directory `nobody` cannot pass on the way to them gets an
  empty tmpfs over it, and the directories Python needs are bind-mounted back, read-only, at
  their own paths (see `exposure_script`) — so the rest of that private directory stays hidden;
  when not root, `unshare --user --map-root-user` gives the namespaces but no uid drop (the
  program still runs as you, outside the namespace);
  where something is missing, one warning says exactly what (and `Sandbox.python` is the
  version programs really run on: without `mount`, as `nobody` an interpreter under an
  unreadable directory may load the system's libpython and stdlib instead; a warning says so);
- resource limits set by the bootstrap before the program runs: address space (memory), CPU time
  (timeout + 1 s soft, + 2 s hard), file size, open files, core dumps off, and processes.
  RLIMIT_NPROC counts per uid (and, since Linux 5.14, per user namespace), so it is set only when
  it counts the program's own processes: as `nobody` (shared by the programs running at the same
  time), or in a fresh user namespace. Otherwise it would count all of the caller's processes,
  and only the timeout (and the PID namespace's teardown) bounds a fork bomb.

The program runs as module `__sandbox__` (not `__main__`, so a completion's own
`if __name__ == "__main__":` block does not run). The verdict is the parent's: the bootstrap
reads a random nonce from a pipe it then closes, runs the program, and only if the program's
top-level code returned writes the nonce to a second inherited descriptor. `sys.exit()`,
`exit()`, `quit()`, `raise SystemExit` and `os._exit()` all leave it unwritten: "exited_early".
An AssertionError is "failed", any other exception "error" (detail: type and message, memory
errors included), the wall-clock limit "timeout". After the program's code returns, the bootstrap
flushes stdout and stderr and leaves with `os._exit`, so leftover threads or atexit hooks cannot
turn a finished program into a timeout.
"""

from __future__ import annotations

import os
import platform
import secrets
import shlex
import select
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

NOBODY = 65534
OUTCOMES = ("passed", "failed", "error", "timeout", "exited_early")
_KILL_GRACE_S = 5.0  # how long the namespace's teardown may take after SIGKILL before we stop waiting
_POLL_S = 0.01  # only where pidfd_open is missing: how often we look whether the program exited

# Runs as `python -I -S -c BOOTSTRAP NONCE_FD DONE_FD PROGRAM_PATH SITE_DIRS [RLIMIT_X=SOFT:HARD ...]`.
# -S skips site's .pth processing, which is most of the interpreter's start here (an editable
# install's finder imports pathlib and more): the site-packages directories come from the parent
# instead, and exit()/quit()/help() are installed as site would. traceback is imported only when
# needed. What the report needs is bound to locals before the program runs, so a program that
# replaces os.write or os._exit cannot break it. Only the process that started the program
# reports: a forked child that runs on through the rest of the program does not speak for it.
BOOTSTRAP = r'''# ccrun sandbox bootstrap
import os, resource, sys, types


def main():
    nonce_fd, done_fd, path, site_dirs, module_name = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                                       sys.argv[5])
    nonce = b""
    while chunk := os.read(nonce_fd, 256):
        nonce += chunk
    os.close(nonce_fd)
    for spec in sys.argv[6:]:
        name, _, values = spec.partition("=")
        soft, hard = (int(v) for v in values.split(":"))
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if os.getpid() == 1:
        # The init of a new PID namespace ignores signals it sends itself (os.kill(os.getpid(), ..),
        # signal.alarm, abort) and SIGXCPU: run the program in a child, as an ordinary process.
        # When it ends, so does init, and the kernel kills whatever else is left in the namespace.
        child = os.fork()
        if child:
            status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
            os._exit(128 - status if status < 0 else status)
    sys.path.extend(d for d in site_dirs.split(os.pathsep) if d)
    import site
    site.setquit()
    site.setcopyright()
    site.sethelper()
    write, getpid, exit_now, me = os.write, os.getpid, os._exit, os.getpid()

    def report(kind, clean, detail):
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except BaseException:
                pass
        if getpid() == me:
            write(done_fd, b"\0".join([kind.encode(), b"1" if clean else b"0", detail]))
        exit_now(0 if kind == "passed" else 1)

    module = types.ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module
    sys.argv = [path]
    try:
        with open(path, encoding="utf-8") as source:
            code = compile(source.read(), path, "exec")
        exec(code, module.__dict__)
    except SystemExit as e:
        report("exited_early", e.code in (None, 0), f"SystemExit({e.code!r})".encode("utf-8", "replace"))
    except BaseException as e:
        try:
            import traceback

            traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # from the program's frame on
            line = traceback.format_exception_only(type(e), e)[-1].strip()
        except BaseException:  # the program broke imports or printing: the type is enough
            line = type(e).__name__
        report("failed" if isinstance(e, AssertionError) else "error", False, line.encode("utf-8", "replace"))
    report("passed", True, nonce)


main()
'''


@dataclass(frozen=True)
class Result:
    """What happened to one program.

    passed: the program's top-level code ran to its end (outcome "passed").
    outcome: one of OUTCOMES.
    detail: why, in one line ("AssertionError: ...", "SystemExit(0)", "killed by SIGKILL ...").
    stdout, stderr: captured output (UTF-8, undecodable bytes replaced), each capped.
    truncated: stdout or stderr was longer than the cap.
    clean_exit: passed, or exited early with status 0 (sys.exit(), exit(), os._exit(0)) — for
      standard-input programs judged on their stdout, where ending with exit() is fine.
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


class Sandbox:
    """Runs programs with the limits given here; see the module docstring for what is isolated.

    isolation: what is in force, probed once here: {"network", "pid", "uid", "rlimits"} -> bool.
    python: the Python version programs run on (normally this interpreter's).
    Thread-safe: `run` may be called from several threads (as `run_many` does).
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
    ) -> None:
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_mb = max_file_mb
        self.max_open_files = max_open_files
        self.max_output_kb = max_output_kb
        # Third-party packages the program may import: ours, as site would add them (no user site: -I).
        self._site_dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
        self._stage = tempfile.mkdtemp(prefix="ccrun-stage-")  # empty; a mount point only inside namespaces
        weakref.finalize(self, os.rmdir, self._stage)
        self._prefix, self.isolation, self.python = _probe(isolate, exposure_script(self._site_dirs, self._stage))
        problems = _missing(self.isolation) if isolate else []
        if self.python != platform.python_version():
            # Seen with pyenv under /root (mode 0700): as `nobody` the loader cannot read the
            # interpreter's own libpython and stdlib and falls back to the system's.
            problems.append(f"programs run on Python {self.python}, not {platform.python_version()} "
                            f"(uid {NOBODY} cannot read this interpreter's own files)")
        if problems:
            warnings.warn("sandbox: " + "; ".join(problems), RuntimeWarning, stacklevel=2)

    def run(self, program: str, *, timeout_s: float, stdin: str | None = None, as_main: bool = False) -> Result:
        """Run one program (source text) for at most `timeout_s` seconds of wall time.

        The program's module is `__sandbox__`, so its own `if __name__ == "__main__":` block does
        not run (HumanEval); `as_main` runs it as `__main__`, as a judge runs a whole program (APPS).
        """
        with tempfile.TemporaryDirectory(prefix="ccrun-sandbox-", ignore_cleanup_errors=True) as workdir:
            path = os.path.join(workdir, "program.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(program)
            if self.isolation["uid"]:
                os.chown(workdir, NOBODY, NOBODY)  # its own directory is the one place it may write
            module = "__main__" if as_main else "__sandbox__"
            if stdin is None:
                return self._execute(path, workdir, timeout_s, None, module)
            with tempfile.TemporaryFile() as stdin_file:
                stdin_file.write(stdin.encode("utf-8"))
                stdin_file.seek(0)
                return self._execute(path, workdir, timeout_s, stdin_file, module)

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
        """Run programs `workers` at a time (threads, each waiting on one subprocess); results in order."""
        if stdin is not None and len(stdin) != len(programs):
            raise ValueError(f"stdin has {len(stdin)} entries for {len(programs)} programs")
        inputs = list(stdin) if stdin is not None else [None] * len(programs)
        results: list[Result | None] = [None] * len(programs)
        step = max(1, len(programs) // 100)  # about a hundred progress updates at most
        with ThreadPoolExecutor(max(1, workers)) as pool:
            futures = {
                pool.submit(self.run, program, timeout_s=timeout_s, stdin=text, as_main=as_main): i
                for i, (program, text) in enumerate(zip(programs, inputs))
            }
            for done, future in enumerate(as_completed(futures), 1):
                results[futures[future]] = future.result()
                if progress and (done % step == 0 or done == len(programs)):
                    print(f"\rsandbox: {done}/{len(programs)} programs", end="", file=sys.stderr, flush=True)
        if progress and programs:
            print(file=sys.stderr)
        return results  # type: ignore[return-value]

    def _limits(self, timeout_s: float) -> list[str]:
        cpu = int(timeout_s) + 1
        limits = {
            "RLIMIT_AS": self.memory_mb * 2**20,
            "RLIMIT_FSIZE": self.max_file_mb * 2**20,
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_CORE": 0,
        }
        specs = [f"{name}={value}:{value}" for name, value in limits.items()]
        specs.append(f"RLIMIT_CPU={cpu}:{cpu + 1}")  # SIGXCPU first; SIGKILL a second later
        if self.isolation["uid"] or "--user" in self._prefix:  # counts only the program's processes
            specs.append(f"RLIMIT_NPROC={self.max_processes}:{self.max_processes}")
        return specs

    def _execute(self, path: str, workdir: str, timeout_s: float, stdin_file, module: str) -> Result:
        nonce = secrets.token_hex(16).encode()
        nonce_r, nonce_w = os.pipe()
        done_r, done_w = os.pipe()
        os.write(nonce_w, nonce)
        os.close(nonce_w)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
        }
        cmd = [*self._prefix, sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(nonce_r), str(done_w), path,
               os.pathsep.join(self._site_dirs), module, *self._limits(timeout_s)]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd, stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(nonce_r, done_w),
                cwd=workdir, env=env, start_new_session=True,
            )
        except BaseException:
            os.close(done_r)
            raise
        finally:
            os.close(nonce_r)
            os.close(done_w)  # now only the program holds the write end: EOF once it is gone
        cap = self.max_output_kb * 1024
        out, err, done = _Capped(cap), _Capped(cap), _Capped(4096)
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, done_r: done}
        try:
            exit_fd = os.pidfd_open(proc.pid)  # readable once the process has exited: no polling
        except (AttributeError, OSError):  # Linux < 5.3
            exit_fd = None
        try:
            finished = _pump(proc, exit_fd, streams, start + timeout_s)
            _kill_all(proc, exit_fd, self.isolation["pid"])
            for fd, buffer in streams.items():
                _drain(fd, buffer)
        finally:
            for fd in (done_r, exit_fd):
                if fd is not None:
                    os.close(fd)
            proc.stdout.close()
            proc.stderr.close()
            if proc.returncode is None:  # only if something above raised
                proc.kill()
                proc.wait()
        duration = time.monotonic() - start
        outcome, detail, clean = _verdict(nonce, bytes(done.data), proc.returncode, finished, timeout_s)
        return Result(
            passed=outcome == "passed",
            outcome=outcome,
            detail=detail,
            stdout=out.text(),
            stderr=err.text(),
            truncated=out.dropped > 0 or err.dropped > 0,
            clean_exit=clean,
            duration_s=duration,
        )


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


def _pump(proc: subprocess.Popen, exit_fd: int | None, streams: dict[int, _Capped], deadline: float) -> bool:
    """Read output until the program's process exits (True) or the deadline passes (False)."""
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in selector.select(remaining if exit_fd is not None else min(remaining, _POLL_S)):
                if key.fd == exit_fd:
                    return True
                chunk = os.read(key.fd, 65536)
                if chunk:
                    streams[key.fd].add(chunk)
                else:
                    selector.unregister(key.fd)
            if exit_fd is None and _has_exited(proc, None, 0):
                return True


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


def _kill_all(proc: subprocess.Popen, exit_fd: int | None, pid_namespace: bool) -> None:
    """SIGKILL every process of the run and reap it; return once the PID namespace (if any) is gone.

    The namespace's init is the bootstrap (a child of `unshare`). Killing it first and then waiting
    for `unshare` orders things: the kernel kills and reaps everything in the namespace before
    init's exit is reported to `unshare`, so when `unshare` has exited nothing is left. Killing
    `unshare` first would return before that teardown ends (`--kill-child` still kills init).
    """
    if pid_namespace and not _has_exited(proc, exit_fd, 0):
        _kill_children(proc.pid)
        _has_exited(proc, exit_fd, _KILL_GRACE_S)
    try:  # the group: anything that did not leave it (all of it without a PID namespace)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


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


def _reachable_by_nobody(path: str) -> bool:
    """Whether uid `nobody` (no groups) may pass through `path` (its "other" x bit)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_mode & 0o001) or (st.st_uid == NOBODY and bool(st.st_mode & 0o100))


def exposure_script(site_dirs: Sequence[str], stage: str) -> str | None:
    """Shell commands that, run as root inside the program's fresh mount namespace (never
    outside one), make the interpreter and `site_dirs` readable by `nobody`; None if nothing is
    in the way.

    For each needed directory (the interpreter's prefixes and executable's directory, the
    site-packages directories) under a directory `nobody` cannot pass (mode 0700 like /root or
    /home/you): bind it at `stage` first, then put an empty tmpfs (mode 755) over the highest
    such directory, recreate the path inside it and move the bind back, read-only. Files
    inside must themselves be readable by others (a umask of 077 defeats this; the probe's
    version check and warning still say so).
    """
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                             os.path.dirname(os.path.realpath(sys.executable)), *site_dirs)}
    needed = sorted(p for p in needed if os.path.isdir(p))
    needed = [p for p in needed if not any(p != q and p.startswith(q + os.sep) for q in needed)]  # outermost
    hidden: dict[str, list[str]] = {}  # highest blocked ancestor -> needed directories under it
    for path in needed:
        parts = path.split(os.sep)
        for i in range(2, len(parts)):
            ancestor = os.sep.join(parts[:i])
            if not _reachable_by_nobody(ancestor):
                hidden.setdefault(ancestor, []).append(path)
                break
    if not hidden:
        return None
    q = shlex.quote
    lines = ["set -e", "umask 022", f"mount -t tmpfs -o mode=700,size=64k ccrun-stage {q(stage)}"]
    paths = [p for group in hidden.values() for p in group]
    for i, path in enumerate(paths):
        lines += [f"mkdir {q(stage)}/{i}", f"mount --bind {q(path)} {q(stage)}/{i}"]
    for top in hidden:
        lines.append(f"mount -t tmpfs -o mode=755,size=64k ccrun-hidden {q(top)}")
    for i, path in enumerate(paths):
        lines += [f"mkdir -p {q(path)}", f"mount --move {q(stage)}/{i} {q(path)}",
                  f"mount -o remount,bind,ro {q(path)}"]
    lines += [f"umount {q(stage)}", 'exec "$@"']
    return "\n".join(lines)


def _probe(isolate: bool, exposure: str | None = None) -> tuple[list[str], dict[str, bool], str]:
    """The command prefix that isolates programs here, what it gives, and the Python version
    programs get under it; tried once per Sandbox. `exposure` (see `exposure_script`) runs
    between the namespaces and the uid drop, where it is needed and `mount` exists."""
    nothing = {"network": False, "pid": False, "uid": False, "rlimits": True}
    if not isolate:
        return [], nothing, platform.python_version()
    root = os.geteuid() == 0
    namespaces = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if not root:  # unprivileged user namespaces give the other namespaces, not another uid
        namespaces[1:1] = ["--user", "--map-root-user"]
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if root else []
    candidates = [namespaces + drop, namespaces, drop] if drop else [namespaces]
    if drop and exposure and shutil.which("mount"):  # the mounts happen inside unshare's mount namespace only
        candidates.insert(0, namespaces + ["sh", "-c", exposure, "ccrun-sandbox"] + drop)
    check = ("import os, platform, socket; "
             "print(os.getpid(), os.getuid(), len(socket.if_nameindex()), platform.python_version())")
    for prefix in candidates:
        if any(shutil.which(tool) is None for tool in prefix if tool in ("unshare", "setpriv")):
            continue
        try:
            done = subprocess.run([*prefix, sys.executable, "-I", "-S", "-c", check], capture_output=True,
                                  text=True, timeout=30, stdin=subprocess.DEVNULL, cwd="/")
            pid, uid, interfaces, version = done.stdout.split()
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
        if done.returncode != 0:
            continue
        in_namespaces = prefix[0] == "unshare" and pid == "1"
        return prefix, {
            "network": in_namespaces and interfaces == "1",  # only a fresh loopback
            "pid": in_namespaces,
            "uid": "setpriv" in prefix and uid == str(NOBODY),
            "rlimits": True,
        }, version
    return [], nothing, platform.python_version()


def _missing(isolation: dict[str, bool]) -> list[str]:
    who = "root" if os.geteuid() == 0 else "your user"
    texts = {
        "network": "no network namespace: programs can reach the network",
        "pid": "no PID namespace: detached children and fork bombs can outlive the program",
        "uid": f"no uid drop: programs run as {who} and can delete or change your files",
    }
    return [text for key, text in texts.items() if not isolation[key]]
