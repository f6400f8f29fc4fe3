"""Durations as people read them, the one format of every time ccrun prints (the training
progress line's ETA, `ccrun runs`, the model card, `ccrun compare`)."""

from __future__ import annotations


def duration(seconds: float, *, precise: bool = False) -> str:
    """`42s`, `1m05s`, `2h03m`; precise (tables that compare runs): `42.5s`, `1m05s`, `2h03m07s`
    (hours go on counting past a day)."""
    if precise and seconds < 59.95:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    hours, rest = divmod(s, 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m" + (f"{rest % 60:02d}s" if precise else "")
    return f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{s}s"
