"""Per-sample pids + memory cgroups, so one untrusted sample cannot exhaust another's budget.

`Cgroups.probe()` makes one parent group for this process under the process's own cgroup (on
cgroup v1 one in the pids hierarchy and one in the memory hierarchy; on v2 one in the unified
hierarchy) and proves it works by really creating, limiting, entering (with a throwaway child
process) and removing a test group. It returns None where that cannot be done (read-only or
undelegated cgroupfs, no pids/memory controller, not root); `unavailable_reason()` (also
`Cgroups.why_not`) then says why in one line. `Cgroups.create(memory_bytes, pids)` makes a fresh
child `Group` with those limits; a process joins it through `Group.enter_prefix()`:

    proc = subprocess.Popen([*group.enter_prefix(), "bwrap", ...])

The prefix is a `/bin/sh -c` wrapper that writes its own pid into every `cgroup.procs` of the
group (exit 125 if it cannot) and then execs the rest of the argv, so everything the command
forks is counted and limited from its first instruction. Put it before bwrap, outside the
sandbox: the cgroup filesystem need not be visible inside. The caller's own process is never
moved. `Group.remove()` kills what is left and removes the directory; `Cgroups.close()` (also
run by a weakref finalizer and at exit) removes every child and the parent(s).

Stdlib only; nothing is ever mounted and no cgroup we did not create is written to, except that
on v2 `+pids +memory` may be added to our own cgroup's `cgroup.subtree_control` (allowed only
where the kernel lets a group with processes do so, i.e. the root group).
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import signal
import subprocess
import time
import weakref

__all__ = ["CGROUP_ROOT", "CgroupError", "Cgroups", "Group", "unavailable_reason"]

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
SH = "/bin/sh"

_KILL_TIMEOUT_S = 5.0
_RMDIR_TIMEOUT_S = 5.0
_PROBE_TIMEOUT_S = 10.0
_CONTROLLERS = ("pids", "memory")


class CgroupError(Exception):
    """A cgroup could not be created or limited."""


def unavailable_reason() -> str:
    """Why the last `Cgroups.probe()` returned None ("" if it did not)."""
    return Cgroups.why_not


# -- small file helpers (module level so tests can make them fail) ---------------------------


def _reason(e: BaseException) -> str:
    text = str(e) if isinstance(e, CgroupError) else f"cannot use cgroups: {type(e).__name__}: {e}"
    return " ".join(text.split())


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _write(path: str, value: str) -> None:
    """Write to an existing control file; never creates one (a plain directory is not a cgroup)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _procs(procs_file: str) -> list[int]:
    try:
        return [int(x) for x in _read(procs_file).split()]
    except (OSError, ValueError):
        return []


def _kill_dirs(dirs: list[str], procs_files: list[str], timeout_s: float = _KILL_TIMEOUT_S) -> None:
    """SIGKILL everything in the groups: cgroup.kill (v2) where present, then a bounded loop."""
    for d in dirs:
        kill_file = os.path.join(d, "cgroup.kill")
        if os.path.exists(kill_file):
            try:
                _write(kill_file, "1")
            except OSError:
                pass
    deadline = time.monotonic() + timeout_s
    while True:
        pids = {p for f in procs_files for p in _procs(f)}
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _rmdir(path: str, timeout_s: float = _RMDIR_TIMEOUT_S) -> bool:
    """rmdir, retrying briefly while busy; True when the directory is gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            procs = os.path.join(path, "cgroup.procs")
            _kill_dirs([path], [procs], timeout_s=0.2)
            time.sleep(0.01)


def _remove_tree(path: str) -> None:
    """Kill and remove a group we created and every group below it, deepest first; never raises."""
    try:
        if not os.path.isdir(path):
            return
        subdirs = []
        for root, dirs, _ in os.walk(path):
            subdirs.extend(os.path.join(root, d) for d in dirs)
        for d in sorted(subdirs, key=lambda p: p.count(os.sep), reverse=True) + [path]:
            _kill_dirs([d], [os.path.join(d, "cgroup.procs")], timeout_s=1.0)
            _rmdir(d)
    except Exception:
        pass


def _remove_all(paths: list[str]) -> None:
    for p in paths:
        _remove_tree(p)


# -- discovery -------------------------------------------------------------------------------


def _self_cgroups() -> tuple[str | None, dict[str, str]]:
    """(v2 path or None, {v1 controller: path}) from /proc/self/cgroup."""
    v2 = None
    v1: dict[str, str] = {}
    for line in _read(PROC_SELF_CGROUP).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        else:
            for c in ctrls.split(","):
                v1[c] = path
    return v2, v1


def _under(mount: str, path: str) -> str:
    """Our group's directory under a hierarchy mount; the mount root when the path is not visible
    there (a container that bind-mounts its own subtree at the root)."""
    d = os.path.join(mount, path.lstrip("/"))
    return d if os.path.isdir(d) else mount


def _v2_root() -> str | None:
    for d in (CGROUP_ROOT, os.path.join(CGROUP_ROOT, "unified")):
        f = os.path.join(d, "cgroup.controllers")
        if os.path.isfile(f) and set(_CONTROLLERS) <= set(_read(f).split()):
            return d
    return None


def _v1_mounts() -> dict[str, str]:
    """{controller: mount dir} for the pids and memory v1 hierarchies under CGROUP_ROOT."""
    found: dict[str, str] = {}
    for name in sorted(os.listdir(CGROUP_ROOT)):
        d = os.path.join(CGROUP_ROOT, name)
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for c in name.split(","):
            if c in _CONTROLLERS and c not in found:
                found[c] = d
    # a co-mounted hierarchy may be reached only through a symlink (pids -> cpu,pids)
    for c in _CONTROLLERS:
        d = os.path.join(CGROUP_ROOT, c)
        if c not in found and os.path.isdir(d):
            found[c] = os.path.realpath(d)
    return found


def _limit_files(version: int, dirs: dict[str, str]) -> None:
    """Raise CgroupError unless each group directory has its controllers' files (i.e. is a real
    cgroup with them enabled)."""
    need = {"pids": "pids.max", "memory": "memory.max" if version == 2 else "memory.limit_in_bytes"}
    for c, d in dirs.items():
        for ctrl in ([c] if version == 1 else list(_CONTROLLERS)):
            if not os.path.exists(os.path.join(d, need[ctrl])):
                raise CgroupError(f"{d} has no {need[ctrl]} (not a {ctrl} cgroup)")


# -- the API ---------------------------------------------------------------------------------


class Group:
    """One sample's group: a directory in each hierarchy (v1: pids and memory; v2: one)."""

    def __init__(self, version: int, paths: list[str]):
        self.version = version
        self.paths = list(paths)
        self.procs_files = [os.path.join(p, "cgroup.procs") for p in self.paths]

    def __repr__(self) -> str:
        return f"Group(v{self.version}, {self.paths!r})"

    def enter_prefix(self) -> list[str]:
        """argv prefix: a shell that writes its own pid into every procs file (exit 125 if one
        cannot be written) and then execs the rest of the argv: `[*g.enter_prefix(), *cmd]`."""
        n = len(self.procs_files)
        script = (
            f"n={n}; while [ $n -gt 0 ]; do "
            'echo $$ > "$1" || { echo "ccrun: cannot enter cgroup $1" >&2; exit 125; }; '
            "shift; n=$((n - 1)); done; "
            'exec "$@"'
        )
        return [SH, "-c", script, "ccrun-cgroup-enter", *self.procs_files]

    def _memory_dir(self) -> str:
        if self.version == 2:
            return self.paths[0]
        return next(p for p in self.paths if os.path.exists(os.path.join(p, "memory.oom_control")))

    def oom_killed(self) -> bool:
        """Whether the memory limit killed something in the group."""
        try:
            d = self._memory_dir()
            if self.version == 2:
                for line in _read(os.path.join(d, "memory.events")).splitlines():
                    k, _, v = line.partition(" ")
                    if k == "oom_kill" and int(v) > 0:
                        return True
                return False
            for line in _read(os.path.join(d, "memory.oom_control")).splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v) > 0
            # kernels before 4.13 have no oom_kill count: the limit was hit at all
            for name in ("memory.failcnt", "memory.memsw.failcnt"):
                f = os.path.join(d, name)
                if os.path.exists(f) and int(_read(f).strip() or 0) > 0:
                    return True
            return False
        except (OSError, ValueError, StopIteration):
            return False

    def pids(self) -> list[int]:
        """The processes in the group now."""
        return sorted({p for f in self.procs_files for p in _procs(f)})

    def kill(self) -> None:
        """SIGKILL every process in the group (bounded time)."""
        _kill_dirs(self.paths, self.procs_files)

    def remove(self) -> None:
        """kill() then remove the group's directories; never raises."""
        try:
            self.kill()
        except Exception:
            pass
        for p in self.paths:
            try:
                _rmdir(p)
            except Exception:
                pass


class Cgroups:
    """Per-sample cgroups under one parent group made for this process."""

    why_not: str = ""

    def __init__(self, version: int, parents: dict[str, str]):
        """Use `probe()`. parents: {"pids": dir, "memory": dir} (v1) or {"": dir} (v2)."""
        self.version = version
        self._parents = dict(parents)
        self.parents = list(dict.fromkeys(parents.values()))
        self._count = itertools.count()
        self._finalizer = weakref.finalize(self, _remove_all, list(self.parents))

    def __repr__(self) -> str:
        return f"Cgroups(v{self.version}, {self.parents!r})"

    @classmethod
    def probe(cls, name: str | None = None) -> Cgroups | None:
        """Make the parent group(s) and prove a limited child group works; None (with
        `why_not` set) where it cannot. Never raises."""
        try:
            made = cls._make(name)
        except Exception as e:  # CgroupError, or an unreadable or odd cgroupfs: never a crash
            cls.why_not = _reason(e)
            return None
        try:
            g = made.create(1 << 26, 8, name="probe")
            try:
                rc = subprocess.run(
                    [*g.enter_prefix(), SH, "-c", "exit 0"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    timeout=_PROBE_TIMEOUT_S,
                    check=False,
                )
                if rc.returncode != 0:
                    err = rc.stderr.decode(errors="replace").strip().splitlines()
                    raise CgroupError(
                        f"cannot move a process into a cgroup under {made.parents[0]}"
                        + (f": {err[-1]}" if err else f" (exit {rc.returncode})")
                    )
            finally:
                g.remove()
            if any(os.path.exists(p) for p in g.paths):
                raise CgroupError(f"cannot remove a test cgroup under {made.parents[0]}")
        except Exception as e:
            made.close()
            cls.why_not = _reason(e)
            return None
        cls.why_not = ""
        return made

    @classmethod
    def _make(cls, name: str | None) -> Cgroups:
        if not os.path.isdir(CGROUP_ROOT):
            raise CgroupError(f"no cgroup filesystem at {CGROUP_ROOT}")
        base = name or f"ccrun-{os.getpid()}-{secrets.token_hex(4)}"
        if "/" in base or base in (".", ".."):
            raise CgroupError(f"bad cgroup name {base!r}")
        v2_path, v1_paths = _self_cgroups()
        v2_root = _v2_root()
        if v2_root is not None and v2_path is not None:
            return cls._make_v2(v2_root, v2_path, base)
        mounts = _v1_mounts()
        missing = [c for c in _CONTROLLERS if c not in mounts or c not in v1_paths]
        if missing:
            raise CgroupError(
                f"no {' and '.join(missing)} cgroup controller under {CGROUP_ROOT} "
                "(neither a v2 hierarchy offering pids and memory nor v1 hierarchies)"
            )
        made: dict[str, str] = {}
        try:
            for c in _CONTROLLERS:
                ours = _under(mounts[c], v1_paths[c])
                d = os.path.join(ours, base)
                if d in made.values():  # pids and memory co-mounted in one hierarchy
                    made[c] = d
                    continue
                try:
                    os.mkdir(d)
                except OSError as e:
                    raise CgroupError(
                        f"no writable {c} cgroup at {ours} ({e.strerror}; run as root or with "
                        "a delegated cgroup)"
                    ) from None
                made[c] = d
            _limit_files(1, made)
        except BaseException:
            _remove_all(list(made.values()))
            raise
        return cls(1, made)

    @classmethod
    def _make_v2(cls, root: str, self_path: str, base: str) -> Cgroups:
        ours = _under(root, self_path)
        have = set(_read(os.path.join(ours, "cgroup.controllers")).split())
        missing = [c for c in _CONTROLLERS if c not in have]
        if missing:
            raise CgroupError(
                f"cgroup v2 group {ours} is not given the {' and '.join(missing)} controller "
                "(not delegated; run as root or with systemd delegation)"
            )
        sub = os.path.join(ours, "cgroup.subtree_control")
        enabled = set(_read(sub).split())
        want = [c for c in _CONTROLLERS if c not in enabled]
        if want:
            try:
                _write(sub, " ".join(f"+{c}" for c in want))
            except OSError as e:
                raise CgroupError(
                    f"cannot enable {' '.join(want)} in {sub} ({e.strerror}): our cgroup holds "
                    "processes, so v2's no-internal-processes rule forbids it; run from a "
                    "delegated cgroup whose subtree_control has pids and memory, or as root "
                    "in the root cgroup"
                ) from None
        d = os.path.join(ours, base)
        try:
            os.mkdir(d)
        except OSError as e:
            raise CgroupError(
                f"no writable cgroup v2 group at {ours} ({e.strerror}; not delegated; run as "
                "root or with systemd delegation)"
            ) from None
        try:
            _write(os.path.join(d, "cgroup.subtree_control"), "+pids +memory")
        except OSError as e:
            _remove_all([d])
            raise CgroupError(f"cannot enable pids and memory under {d} ({e.strerror})") from None
        return cls(2, {"": d})

    def create(self, memory_bytes: int, pids: int, name: str | None = None) -> Group:
        """A fresh child group limited to memory_bytes (swap included where the kernel counts
        it) and pids processes/threads. Raises CgroupError if it cannot be made or limited."""
        if not self._finalizer.alive:
            raise CgroupError("Cgroups is closed")
        memory_bytes, pids = int(memory_bytes), int(pids)
        if memory_bytes <= 0 or pids <= 0:
            raise CgroupError(f"bad limits: memory_bytes={memory_bytes} pids={pids}")
        child = f"{name or 's'}-{next(self._count)}-{secrets.token_hex(3)}"
        if "/" in child:
            raise CgroupError(f"bad cgroup name {child!r}")
        dirs = {c: os.path.join(p, child) for c, p in self._parents.items()}
        made: list[str] = []
        try:
            for d in dict.fromkeys(dirs.values()):
                os.mkdir(d)
                made.append(d)
            _limit_files(self.version, dirs)
            if self.version == 2:
                d = dirs[""]
                _write(os.path.join(d, "pids.max"), str(pids))
                _write(os.path.join(d, "memory.max"), str(memory_bytes))
                for f, v in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if os.path.exists(os.path.join(d, f)):
                        _write(os.path.join(d, f), v)
            else:
                _write(os.path.join(dirs["pids"], "pids.max"), str(pids))
                m = dirs["memory"]
                _write(os.path.join(m, "memory.limit_in_bytes"), str(memory_bytes))
                memsw = os.path.join(m, "memory.memsw.limit_in_bytes")
                if os.path.exists(memsw):  # only with swap accounting; must be >= the memory limit
                    _write(memsw, str(memory_bytes))
        except (OSError, CgroupError) as e:
            for d in reversed(made):
                _rmdir(d, timeout_s=1.0)
            raise CgroupError(f"cannot create cgroup {child!r}: {e}") from None
        return Group(self.version, list(dict.fromkeys(dirs.values())))

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Kill whatever is left and remove every child group and the parent(s)."""
        self._finalizer()

    def __enter__(self) -> Cgroups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
