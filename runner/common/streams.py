"""Named random streams: every random number in a run comes from `recipe.seed` through one of
these, so the same resolved recipe gives the same numbers and a resumed run replays nothing."""

from __future__ import annotations

import zlib

import jax


def stream_key(seed: int, name: str) -> jax.Array:
    """The random key of a named stream ("init", "dropout", "sample", ...) under the recipe's seed."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))
