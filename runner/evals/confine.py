"""What a sandboxed program sees: the bubblewrap command line, and a probe of what it really gives.

`bwrap_argv` builds the confinement (see sandbox.py's docstring for what it holds against): new
user, PID, network, mount, IPC, UTS and cgroup namespaces; a root of read-only binds of /usr (and
the /bin, /lib links), the interpreter's prefix with its site-packages hidden, and the allowed
packages only (`package_binds`); fresh /proc and /dev; private size-limited /tmp, /var/tmp and
/dev/shm. `probe` runs a program under it that looks, and says which protections are in force;
`missing` words the ones that are not.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from glob import glob
from pathlib import Path

from .cgroups import unavailable_reason

SANDBOX_UID = 65534


ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def package_binds(packages: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
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


def bwrap_argv(executable: str, binds: Sequence[str], tmp_mb: int) -> list[str]:
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


def probe(prefix: list[str], executable: str, site_dirs: list[str]) -> tuple[list[str], dict[str, bool], str]:
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
                                      text=True, timeout=30, stdin=subprocess.DEVNULL, env=ENV, cwd="/")
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


def missing(isolation: dict[str, bool], confined: bool) -> list[str]:
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
