"""The server's decoder: a fixed, small set of compiled programs, all built before the first request.

`evals.sample.generate` compiles a program for every (samples per prompt, batch, prompt bucket,
max_new_tokens) it meets: fine for an evaluation, which meets a handful, but a server meets whatever
its clients send (64 x 255 pairs on a small model, ~10 s and ~10 MB each). Here every shape is a
bucket known at start:

- rows: sequences decoded together (a request's n samples are n rows), a power of two up to
  `max_rows`; a request with more samples than that is decoded over several batches.
- slots: KV-cache length per row, from `Shapes.plan` (128, 192, 256, 384, 512, then powers of two,
  and one top bucket that holds the longest prompt with the largest budget). A prompt is
  left-padded to a multiple of `PREFILL` tokens and prefilled `PREFILL` tokens per call, so the
  prompt length is not a shape; each row has its own token budget (a traced value), so
  max_new_tokens is not a shape either.

Two programs per (rows, slots): prefill one block of the prompt, and decode `chunk` tokens. Results
are those of `generate` (the same model calls, masks and positions: padding is never attended to and
positions count real tokens only), up to the summation order of a longer, masked cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..common.streams import stream_key
from ..evals.sample import Sampling, choose  # the sampler's own token choice, so the two agree

PREFILL = 64  # prompt tokens per prefill call (the sampler's prompt bucket)
FINE_SLOTS = 512  # cache buckets below this grow by 1.5x, above by 2x (measured: 8 rows, 16 tokens, d_model 256:
# 173 ms at 144 slots, 179 ms at 192, 244 ms at 256, 423 ms at 528)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Shapes:
    """The buckets: every batch is decoded as (rows, slots) from these lists, nothing else."""

    rows: tuple[int, ...]  # sequences per batch, powers of two
    slots: tuple[int, ...]  # KV-cache slots per row, ascending; the last holds any admissible request

    @classmethod
    def plan(cls, *, max_rows: int, positions: int, max_new_tokens: int) -> Shapes:
        """Rows 1, 2, 4, ... up to max_rows rounded up to a power of two; slots 128, 192, 256, 384, 512,
        then doubling, up to the top bucket: the longest prompt (positions - 1 tokens, padded to
        PREFILL) plus max_new_tokens (a bucket within 25% of the top one is left out)."""
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 (got {max_rows})")
        rows = tuple(1 << i for i in range(_pow2(max_rows).bit_length()))
        top = PREFILL * math.ceil((positions - 1) / PREFILL) + max_new_tokens
        sizes, s = [], 2 * PREFILL
        while s < top:  # below FINE_SLOTS also 1.5x s: editor requests live there, and a step takes time ~ slots
            sizes += [s, s * 3 // 2] if s < FINE_SLOTS else [s]
            s *= 2
        slots = [x for x in sizes if x < top]
        if len(slots) > 1 and top <= 1.25 * slots[-1]:  # the top bucket is barely larger: two programs less
            slots.pop()
        return cls(rows, (*slots, top))

    @property
    def programs(self) -> int:
        """Compiled programs: prefill and decode for every (rows, slots)."""
        return 2 * len(self.rows) * len(self.slots)

    def fit(self, rows: int, slots: int) -> tuple[int, int]:
        """The smallest bucket that holds `rows` sequences of `slots` cache slots."""
        R = next((r for r in self.rows if r >= rows), None)
        S = next((s for s in self.slots if s >= slots), None)
        if R is None or S is None:
            raise ValueError(f"{rows} rows x {slots} slots fit no bucket (rows {self.rows}, slots {self.slots})")
        return R, S

    def describe(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "slots": list(self.slots), "prefill_block": PREFILL,
                "programs": self.programs}


@partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def _prefill(graphdef, state, cache, ids, mask):
    """One block [R, PREFILL] of the left-padded prompts into the cache → the cache, last logits [R, V]."""
    model = nnx.merge(graphdef, state)
    logits, cache = model.extend(ids, cache, attention_mask=mask)
    return cache, logits[:, -1]


@partial(jax.jit, static_argnames=("graphdef", "steps", "eos"), donate_argnames=("cache",))
def _decode(graphdef, state, cache, logits, done, limit, start, key, knobs, *, steps: int, eos: int):
    """Up to `steps` tokens per row → (cache, logits, done, tokens [R, steps], steps taken). Token t of
    a row (t = start + i) is drawn with fold_in(key, t); a row is done after EOS or `limit[row]` tokens;
    done rows write EOS."""
    model = nnx.merge(graphdef, state)

    def cond(carry):
        i, _, _, done, _ = carry
        return (i < steps) & ~jnp.all(done)

    def body(carry):
        i, cache, logits, done, out = carry
        token = choose(logits, jax.random.fold_in(key, start + i), knobs)
        out = jax.lax.dynamic_update_slice(out, jnp.where(done, eos, token)[:, None], (0, i))
        done = done | (token == eos) | (start + i + 1 >= limit)
        logits, cache = model.extend(token[:, None], cache)
        return i + 1, cache, logits[:, -1], done, out

    out = jnp.full((done.shape[0], steps), eos, jnp.int32)
    i, cache, logits, done, out = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), cache, logits, done, out))
    return cache, logits, done, out, i


def compiled_programs() -> int:
    """Programs compiled in this process by the decoder (every Decoder shares them)."""
    return _prefill._cache_size() + _decode._cache_size()


class Decoder:
    """Decodes a batch of rows (prompt tokens, sampling, token budget) with the compiled programs only."""

    def __init__(self, model: Any, shapes: Shapes, *, eos_id: int, chunk: int):
        self.model, self.shapes, self.eos, self.chunk = model, shapes, eos_id, chunk
        self.graphdef, self.state = nnx.split(model)
        self._layouts: dict[tuple[int, int], Any] = {}

    def _empty_cache(self, R: int, S: int) -> Any:
        """An empty cache [R rows, S slots]: the model's layout, filled with zeros on the device."""
        if (R, S) not in self._layouts:
            self._layouts[R, S] = jax.eval_shape(lambda: self.model.init_cache(R, S))
        return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), self._layouts[R, S])

    def warm(self, progress: Callable[[int], None] | None = None) -> None:
        """Compile every program (a dummy call of each); `progress(k)` after k programs."""
        k = 0
        for S in self.shapes.slots:
            # two prompt blocks where they fit: the second prefill call is the one later requests make
            prompt = [self.eos] * (PREFILL + 1 if 2 * PREFILL < S else 1)
            for R in self.shapes.rows:
                self.run([prompt] * R, [Sampling(max_new_tokens=1)] * R, [1] * R, seed=0, slots=S)
                k += 2
                if progress is not None:
                    progress(k)

    def run(self, prompts: Sequence[Sequence[int]], settings: Sequence[Sampling], limits: Sequence[int], *,
            seed: int, after_chunk: Callable[[list[list[int]], np.ndarray], np.ndarray] | None = None,
            slots: int | None = None) -> list[list[int]]:
        """Tokens per row (without the prompt, up to and excluding EOS, at most its limit).

        `after_chunk(tokens, done)` is told, after every chunk, each row's tokens so far and which rows
        are done, and returns which rows are done (it may end rows: stop sequences, deadlines, clients
        that left). Every prompt must fit: len(prompt) + limit <= the model's positions.
        """
        live = len(prompts)
        P = PREFILL * max(1, math.ceil(max(len(p) for p in prompts) / PREFILL))
        R, S = self.shapes.fit(live, max(P + max(limits), slots or 0))
        ids = np.full((R, P), self.eos, np.int32)
        mask = np.zeros((R, P), np.int32)
        for r, p in enumerate(prompts):
            if p:
                ids[r, P - len(p) :] = p
                mask[r, P - len(p) :] = 1
        mask[live:, -1] = 1  # padding rows: one dummy token so attention has something to see
        table = np.zeros((R, 3), np.float32)  # (temperature, top_p, top_k) per row; padding rows greedy
        table[:, 1] = 1.0
        for r, s in enumerate(settings):
            table[r] = (s.temperature, s.top_p, float(s.top_k))
        knobs = jnp.asarray(table)
        limit = jnp.asarray(np.array([*limits, *[0] * (R - live)], np.int32))
        key = stream_key(seed, "serve")

        cache = self._empty_cache(R, S)
        for b in range(0, P, PREFILL):
            cache, logits = _prefill(self.graphdef, self.state, cache, jnp.asarray(ids[:, b : b + PREFILL]),
                                     jnp.asarray(mask[:, b : b + PREFILL]))
        done = np.arange(R) >= live  # padding rows start done
        rows: list[list[int]] = [[] for _ in range(live)]
        ended = [False] * live  # the row has reached EOS (what follows is EOS padding)
        start = 0
        while not done.all():
            cache, logits, done_dev, out, taken = _decode(
                self.graphdef, self.state, cache, logits, jnp.asarray(done), limit, jnp.int32(start), key, knobs,
                steps=self.chunk, eos=self.eos)
            taken = int(taken)
            out = np.asarray(out)[:, :taken]
            start += taken
            done = np.array(done_dev)  # a writable copy
            for r in range(live):
                if ended[r]:
                    continue
                cut = np.flatnonzero(out[r] == self.eos)
                rows[r].extend(out[r, : cut[0]].tolist() if len(cut) else out[r].tolist())
                ended[r] = bool(len(cut))
            if after_chunk is not None and not done.all():
                done[:live] = after_chunk(rows, done[:live].copy())
        return [row[:lim] for row, lim in zip(rows, limits, strict=True)]
