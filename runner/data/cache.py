"""The data cache: one directory per content key, built once, checked whenever it is reused, never
reachable for writing from an output.

  <cache>/<key>/                an entry: manifest.json, documents/, tokens/, tokenizer/, contents.json
  <cache>/.build-<key12>-*/     a build in progress; the builder holds an flock on its .lock while it lives
  <cache>/.stale-*/             an entry or a dead build being removed

A build is published by renaming its directory to the key; contents.json (every file's path, size
and sha256) is written last before that, so a directory named by a key without a readable
contents.json is not an entry. Entries' files are read-only and handed out as copies (a reflink
where the filesystem shares blocks copy-on-write, else a copy made by the kernel), never as hard
links: editing an output or a run directory cannot change the cache. Reuse checks every file's size
and sha256 against contents.json; an entry that fails is removed with a warning and rebuilt.

A builder killed with SIGKILL leaves its .build-* directory; the next use of the cache finds its
lock free (the kernel drops an flock with its last holder) and removes it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

CONTENTS = "contents.json"
LOCK = ".lock"
# A .build-* directory without a .lock: its builder died between making it and taking the lock (a
# moment), or is in that moment now. Removed once this old (seconds).
UNLOCKED_BUILD_AGE_S = 600
FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int): share src's blocks copy-on-write


# --- the builder's side ---------------------------------------------------------------------------


@contextmanager
def build_dir(cache: Path, key: str) -> Iterator[Path]:
    """A new build directory under `cache`, locked for as long as the block runs; removed if the
    block fails, and whatever `publish` did not take is removed too."""
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=cache))
    # The lock file appears under its name already locked, so a cleaner never finds it free while
    # its builder lives: locked as a temporary name, then renamed.
    fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=building)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
                                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}).encode())
        os.rename(tmp, building / LOCK)
        yield building
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
        os.close(fd)


def publish(building: Path, cache: Path, key: str, warn: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Make the finished build `building` the entry of `key`: (entry, its files). If another
    process published the key first, theirs is used once it passes the check."""
    files = {}
    for path in _files(building):
        rel = path.relative_to(building).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        path.chmod(0o444)
    contents = building / CONTENTS
    contents.write_text(json.dumps({"format": 1, "files": files}, indent=1) + "\n")
    contents.chmod(0o444)
    entry = cache / key
    for _ in range(2):
        try:
            os.rename(building, entry)
        except OSError:  # the key is taken: another process finished first
            found = lookup(cache, key, warn)
            if found is not None:
                return found
            continue  # theirs failed the check and was removed: take the place
        (entry / LOCK).unlink(missing_ok=True)
        return entry, files
    raise OSError(f"{entry}: cannot publish the data cache entry (another process keeps replacing it)")


# --- the reader's side ----------------------------------------------------------------------------


def lookup(cache: Path, key: str, warn: Callable[[str], None]) -> tuple[Path, dict[str, Any]] | None:
    """(entry, its files) when `key` has an entry that passes the check; None to build. An entry
    that fails is removed, with a warning saying why."""
    entry = cache / key
    if not entry.exists():
        return None
    files, problem = check(entry)
    if problem is None:
        return entry, files
    warn(f"data cache entry {entry} failed its check ({problem}); rebuilding it")
    discard(entry)
    return None


def check(entry: Path) -> tuple[dict[str, Any], str | None]:
    """(the entry's files, None) when every file has the size and sha256 it was built with, else
    (…, what is wrong). Sizes first (cheap), then hashes."""
    try:
        files = json.loads((entry / CONTENTS).read_text())["files"]
        listed = [(str(rel), int(f["size"]), str(f["sha256"])) for rel, f in files.items()]
    except FileNotFoundError:
        return {}, f"no {CONTENTS}: an unfinished build or an older cache format"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"{CONTENTS} unreadable ({type(exc).__name__})"
    for rel, size, _ in listed:
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
            return files, f"{CONTENTS} names {rel!r}, outside the entry"
        path = entry / rel
        if path.is_symlink() or not path.is_file():
            return files, f"{rel} is missing"
        if path.stat().st_size != size:
            return files, f"{rel} is {path.stat().st_size} bytes, {size} when built"
    for rel, _, digest in listed:
        if _sha256(entry / rel) != digest:
            return files, f"{rel} changed since it was built (sha256)"
    return files, None


def copy_out(entry: Path, files: dict[str, Any], out: Path, skip: tuple[str, ...] = ()) -> None:
    """A copy of the entry's files (all but `skip`) under `out`: reflinks or kernel copies, never links."""
    for rel in files:
        if rel in skip:
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        copy_file(entry / rel, dst)


def copy_file(src: Path, dst: Path) -> None:
    """`dst`, a new file with `src`'s bytes and the usual permissions, sharing nothing writable with
    it: a reflink (btrfs, XFS: blocks shared copy-on-write), else copy_file_range, else read/write."""
    with open(src, "rb", buffering=0) as fin, open(dst, "xb", buffering=0) as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            return
        except OSError:  # EOPNOTSUPP, EXDEV, EINVAL, ENOTTY: no reflinks here
            pass
        left = os.fstat(fin.fileno()).st_size
        try:
            while left > 0:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
                if n == 0:
                    break
                left -= n
        except OSError:  # EXDEV, ENOSYS, ...: both offsets moved together, go on by hand
            pass
        while chunk := os.read(fin.fileno(), 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fout.fileno(), view):]


# --- cleaning -------------------------------------------------------------------------------------


def clean_stale(cache: Path) -> list[str]:
    """Remove what dead builders left under `cache`: .build-* directories whose lock nobody holds,
    and .stale-* ones. Returns the names removed."""
    removed: list[str] = []
    if not cache.is_dir():
        return removed
    for path in sorted(cache.iterdir()):
        if path.name.startswith(".stale-"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        elif path.name.startswith(".build-") and path.is_dir() and _builder_gone(path):
            discard(path)
            removed.append(path.name)
    return removed


def _builder_gone(building: Path) -> bool:
    try:
        fd = os.open(building / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        try:
            return time.time() - building.stat().st_mtime > UNLOCKED_BUILD_AGE_S
        except FileNotFoundError:
            return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its builder holds it
        return False
    finally:
        os.close(fd)  # a free lock stays free: nobody takes a dead build's lock again
    return True


def discard(path: Path) -> None:
    """Remove a cache directory: first out of the way under a .stale-* name (one rename, so no
    reader sees half of it), then its files."""
    stale = path.with_name(f".stale-{path.name.lstrip('.')}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, stale)
    except FileNotFoundError:  # someone else removed it
        return
    shutil.rmtree(stale, ignore_errors=True)


# --- helpers --------------------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    """Every file under root but the lock, in a fixed order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not (dirpath == str(root) and name in (LOCK, CONTENTS)):
                out.append(Path(dirpath) / name)
    return out


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
