"""Per-sample cgroups: a fork bomb stops at its group's pids limit and an allocation beyond its
group's memory limit is OOM-killed while a second group is unaffected; groups and the parent are
removed and nothing is left in the hierarchy; paths with spaces work; probe never raises."""

import os
import subprocess
import sys
import time

import pytest

from runner.evals import cgroups
from runner.evals.cgroups import CgroupError, Cgroups, Group

MiB = 1 << 20
MEM = 64 * MiB
PIDS = 16
TAG = f"ccrun-test-{os.getpid()}"


def _hierarchy_dirs() -> list[str]:
    """Directories of the hierarchy around this process's own cgroups (where parents are made)."""
    v2, v1 = cgroups._self_cgroups()
    root = cgroups._v2_root()
    if root is not None and v2 is not None:
        return [cgroups._under(root, v2)]
    mounts = cgroups._v1_mounts()
    return [cgroups._under(mounts[c], v1[c]) for c in cgroups._CONTROLLERS]


def _ours_left() -> list[str]:
    """Every cgroup directory this test file made (by name) that still exists (a Sandbox that
    another test file left alive holds its own `ccrun-<pid>-...` parent: not counted here)."""
    left = []
    for d in _hierarchy_dirs():
        for name in os.listdir(d):
            if name.startswith(TAG):
                left.append(os.path.join(d, name))
    return left


@pytest.fixture(scope="module")
def cg():
    made = Cgroups.probe(name=f"{TAG}-parent")
    if made is None:
        pytest.skip(f"cgroups unavailable: {cgroups.unavailable_reason()}")
    yield made
    made.close()
    assert not _ours_left()


def _run(group: Group, code: str, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*group.enter_prefix(), sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=timeout,
    )


FORKER = """
import os, sys, time
n, err = int(sys.argv[1]), "-"
kids = []
for _ in range(n):
    try:
        pid = os.fork()
    except OSError as e:
        err = type(e).__name__
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, 9)
    os.waitpid(k, 0)
print(len(kids), err)
"""


def test_probe_reports(cg):
    assert cg.version in (1, 2)
    assert cg.parents and all(os.path.isdir(p) for p in cg.parents)
    assert cgroups.unavailable_reason() == "" and Cgroups.why_not == ""


def test_fork_bomb_stops_at_pids_limit_other_group_forks(cg):
    bomb_group = cg.create(MEM, PIDS, name=f"{TAG} bomb")
    other = cg.create(MEM, PIDS, name=f"{TAG} other")
    try:
        bomb = subprocess.Popen(
            # every process forks until refused, then retries: the group stays full (a shell bomb's
            # processes die when a fork fails, so under load it could empty before being seen full)
            [*bomb_group.enter_prefix(), sys.executable, "-c",
             "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        pids_dir = next(p for p in bomb_group.paths if os.path.exists(os.path.join(p, "pids.max")))
        deadline = time.monotonic() + 10
        while int(cgroups._read(os.path.join(pids_dir, "pids.current"))) < PIDS:
            assert time.monotonic() < deadline, "the bomb never reached its limit"
            time.sleep(0.02)
        # the bomb is saturated and still running, bounded by its limit...
        time.sleep(0.3)
        assert int(cgroups._read(os.path.join(pids_dir, "pids.current"))) <= PIDS
        assert 0 < len(bomb_group.pids()) <= PIDS
        # ...and a sample in another group forks freely
        r = _run(other, FORKER, "8")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["8", "-"], r.stdout
        # the same forker inside a full group is refused at once
        bomb_group.kill()
        bomb.wait(timeout=10)
        assert bomb_group.pids() == []
        # killed processes stay charged until their new parent (init) reaps them
        deadline = time.monotonic() + 10
        while int(cgroups._read(os.path.join(pids_dir, "pids.current"))) > 0:
            assert time.monotonic() < deadline, "killed bomb processes never released"
            time.sleep(0.02)
        r = _run(bomb_group, FORKER, "40")
        kids, err = r.stdout.split()
        assert int(kids) == PIDS - 1 and err == "BlockingIOError", r.stdout
    finally:
        bomb_group.remove()
        other.remove()
    assert not any(os.path.exists(p) for p in bomb_group.paths + other.paths)


def test_memory_limit_kills_only_its_group(cg):
    hog = cg.create(MEM, PIDS, name=f"{TAG}-hog")
    fine = cg.create(MEM, PIDS, name=f"{TAG}-fine")
    try:
        touch = "b[::4096] = b'x' * len(b[::4096])"
        r = _run(hog, f"b = bytearray(256 << 20); {touch}; print('survived')")
        assert r.returncode == -9 and "survived" not in r.stdout, (r.returncode, r.stdout, r.stderr)
        assert hog.oom_killed()
        r = _run(fine, f"b = bytearray(16 << 20); {touch}; print('ok')")
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
        assert not fine.oom_killed()
    finally:
        hog.remove()
        fine.remove()


def test_remove_leaves_no_directory_even_with_live_processes(cg):
    g = cg.create(MEM, PIDS, name=f"{TAG}-live")
    p = subprocess.Popen([*g.enter_prefix(), "/bin/sh", "-c", "sleep 30 & sleep 30 & wait"])
    deadline = time.monotonic() + 10
    while len(g.pids()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    g.remove()
    assert p.wait(timeout=10) in (-9, 0)  # killed, or ended on its own once its children were (wait returned)
    g.remove()  # again: never raises (and a group held busy by a process not yet reaped goes now)
    assert not any(os.path.exists(d) for d in g.paths)


def test_paths_with_spaces_and_quotes(cg):
    g = cg.create(MEM, PIDS, name=f"{TAG} a b 'q' \"d\" $HOME `x`")
    try:
        assert all(" " in f for f in g.procs_files)
        r = subprocess.run([*g.enter_prefix(), "cat", "/proc/self/cgroup"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        for d in g.paths:
            assert os.path.basename(d) in r.stdout
        # the argv after the prefix reaches the command untouched
        r = subprocess.run([*g.enter_prefix(), "printf", "%s|", "a b", "", "$x", "--"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout == "a b||$x|--|"
    finally:
        g.remove()
    assert not any(os.path.exists(d) for d in g.paths)


def test_enter_fails_with_125_when_group_is_gone(cg):
    g = cg.create(MEM, PIDS, name=f"{TAG}-gone")
    g.remove()
    r = subprocess.run([*g.enter_prefix(), "true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 125 and "cannot enter cgroup" in r.stderr


def test_runner_process_is_not_moved(cg):
    before = cgroups._read("/proc/self/cgroup")
    g = cg.create(MEM, PIDS, name=f"{TAG}-self")
    try:
        assert _run(g, "pass").returncode == 0
    finally:
        g.remove()
    assert cgroups._read("/proc/self/cgroup") == before
    assert os.getpid() not in g.pids()


def test_close_removes_parent_and_children():
    c = Cgroups.probe(name=f"{TAG}-close")
    if c is None:
        pytest.skip(cgroups.unavailable_reason())
    g = c.create(MEM, PIDS)
    p = subprocess.Popen([*g.enter_prefix(), "sleep", "30"])
    deadline = time.monotonic() + 10
    while not g.pids():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    c.close()
    assert p.wait(timeout=10) == -9
    assert not any(os.path.exists(d) for d in c.parents + g.paths)
    assert c.closed
    with pytest.raises(CgroupError):
        c.create(MEM, PIDS)
    c.close()  # idempotent


def test_dropped_instance_is_cleaned_up():
    c = Cgroups.probe(name=f"{TAG}-gc")
    if c is None:
        pytest.skip(cgroups.unavailable_reason())
    parents = list(c.parents)
    c.create(MEM, PIDS)
    del c
    import gc
    gc.collect()
    assert not any(os.path.exists(d) for d in parents)


def test_bad_limits_raise(cg):
    with pytest.raises(CgroupError):
        cg.create(0, PIDS)
    with pytest.raises(CgroupError):
        cg.create(MEM, 0)
    with pytest.raises(CgroupError):
        cg.create(MEM, PIDS, name="a/b")


def test_limits_written(cg):
    g = cg.create(MEM, PIDS, name=f"{TAG}-limits")
    try:
        if cg.version == 1:
            pids_dir, mem_dir = g.paths
            assert cgroups._read(os.path.join(mem_dir, "memory.limit_in_bytes")).strip() == str(MEM)
            memsw = os.path.join(mem_dir, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                assert cgroups._read(memsw).strip() == str(MEM)
        else:
            (pids_dir,) = g.paths
            assert cgroups._read(os.path.join(pids_dir, "memory.max")).strip() == str(MEM)
        assert cgroups._read(os.path.join(pids_dir, "pids.max")).strip() == str(PIDS)
    finally:
        g.remove()


# -- unavailable: probe gives None with a reason and never raises -----------------------------


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "unreadable", "fake-v1", "fake-v2"])
def test_probe_never_raises_on_a_bad_root(tmp_path, monkeypatch, kind):
    root = tmp_path / "cg"
    if kind == "file":
        root.write_text("x")
    elif kind != "missing":
        root.mkdir()
    if kind == "unreadable":
        root.chmod(0)
        monkeypatch.setattr(cgroups, "_read", _raise(PermissionError(13, "Permission denied")))
        monkeypatch.setattr(cgroups.os, "listdir", _raise(PermissionError(13, "Permission denied")))
    if kind == "fake-v1":  # plain directories: mkdir works but no control files appear
        for c in ("pids", "memory"):
            (root / c).mkdir()
    if kind == "fake-v2":
        (root / "cgroup.controllers").write_text("pids memory\n")
        (root / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", str(root))
    assert Cgroups.probe(name=f"{TAG}-bad") is None
    reason = cgroups.unavailable_reason()
    assert reason and "\n" not in reason
    assert not list((tmp_path).rglob(f"{TAG}-bad*"))


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


def test_probe_never_raises_without_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroups, "PROC_SELF_CGROUP", str(tmp_path / "nope"))
    assert Cgroups.probe() is None and "nope" in cgroups.unavailable_reason()
    monkeypatch.setattr(cgroups, "_self_cgroups", _raise(RuntimeError("odd")))
    assert Cgroups.probe() is None and "odd" in cgroups.unavailable_reason()


def test_v2_fake_tree(tmp_path, monkeypatch):
    """The v2 branch, on a fake unified tree whose mkdir fills in control files as cgroupfs does."""
    root = tmp_path / "cg"
    ours = root / "user.slice" / "me"
    ours.mkdir(parents=True)
    for d in (root, ours):
        (d / "cgroup.controllers").write_text("cpu pids memory\n")
        (d / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/user.slice/me\n")
    real_mkdir = os.mkdir

    def mkdir(path, *a, **k):
        real_mkdir(path, *a, **k)
        for f in ("cgroup.controllers", "cgroup.subtree_control", "cgroup.procs", "pids.max",
                  "memory.max", "memory.swap.max", "memory.oom.group", "memory.events"):
            open(os.path.join(path, f), "w").close()

    monkeypatch.setattr(cgroups, "CGROUP_ROOT", str(root))
    monkeypatch.setattr(cgroups, "PROC_SELF_CGROUP", str(proc))
    monkeypatch.setattr(cgroups.os, "mkdir", mkdir)
    # our group holds processes: the kernel refuses +pids +memory (EBUSY) -> a reason, no group
    real_write = cgroups._write

    def busy(path, value):
        if path == str(ours / "cgroup.subtree_control"):
            raise OSError(16, "Device or resource busy")
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", busy)
    with pytest.raises(CgroupError, match="no-internal-processes"):
        Cgroups._make("p")
    assert not (ours / "p").exists()
    # allowed (e.g. the root group, or already enabled): parent made, limits written
    monkeypatch.setattr(cgroups, "_write", real_write)
    c = Cgroups._make("p")
    try:
        assert c.version == 2 and c.parents == [str(ours / "p")]
        assert (ours / "cgroup.subtree_control").read_text() == "+pids +memory"
        assert (ours / "p" / "cgroup.subtree_control").read_text() == "+pids +memory"
        g = c.create(MEM, PIDS, name="x y")
        (d,) = g.paths
        assert g.procs_files == [os.path.join(d, "cgroup.procs")]
        assert open(os.path.join(d, "pids.max")).read() == str(PIDS)
        assert open(os.path.join(d, "memory.max")).read() == str(MEM)
        assert open(os.path.join(d, "memory.swap.max")).read() == "0"
        assert open(os.path.join(d, "memory.oom.group")).read() == "1"
        assert not g.oom_killed()
        with open(os.path.join(d, "memory.events"), "w") as f:
            f.write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        assert g.oom_killed()
    finally:
        c._finalizer.detach()  # plain files in a tmp dir: nothing to kill, tmp_path goes anyway


def test_no_cgroup_left_behind(cg):
    """Runs last in this file: nothing this process made remains anywhere in the hierarchy but the
    module's parent (removed, and checked, at the fixture's teardown), and that has no children."""
    assert Cgroups.probe(name=f"{TAG}-final") is not None  # made and dropped: finalized at once
    import gc
    gc.collect()
    assert sorted(_ours_left()) == sorted(cg.parents)
    for p in cg.parents:
        assert [n for n in os.listdir(p) if os.path.isdir(os.path.join(p, n))] == []
