"""Files written all at once: readers see the old file or the whole new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, content: str | bytes, *, overwrite: bool = False) -> Path:
    """Write `content` to `path` all at once: readers see the old file or the whole new one.

    Without `overwrite`, an existing file is never replaced (FileExistsError).
    """
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the path exists: no clobbering, even in a race
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n", overwrite=overwrite)
