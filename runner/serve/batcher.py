"""Dynamic batching: requests that arrive together are decoded together, by one thread that owns the model.

HTTP handlers tokenize (in a thread pool, never here), put a `Job` on the queue and await its future,
so the event loop never decodes. The thread first compiles every program of `decode.Shapes` (the
server is not ready before), then takes the oldest job and the queued jobs behind it, up to
`max_batch` requests and `max_rows` sequences (a request's n samples are n rows; one with more
samples than a batch holds is decoded over several), waiting up to `wait_s` for companions while
the batch is not full. Any requests can share a batch: sampling settings and token budgets are per
row. Each job keeps its own stop sequences and deadline, checked between chunks; a job whose client
has gone (`Job.abandon`) is dropped from the queue, and its rows end at the next chunk. A job is
answered as soon as its rows are done, not when its batch ends; a streamed job is also told each
sample's tokens after every chunk (`Job.progress`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np

from ..evals.sample import Sampling, cut_at_stop
from .decode import Decoder, Shapes

CHUNK = 16  # tokens decoded between checks of stops, deadlines and clients (16: an editor completion's length)


@dataclass(eq=False)  # a job is itself: hashed and compared by identity
class Job:
    ids: list[int]  # prompt tokens, already cut from the left to fit the context with the budget
    n: int
    sampling: Sampling
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() seconds; past it, the rows end with what they have
    future: Future = field(default_factory=Future)
    gone: bool = False  # the client has left: decode nothing more for it
    # streaming: called on the decoding thread after each chunk with (sample, its tokens so far) for each
    # sample that got new tokens; must be quick and must not raise (the final tokens come in the Result)
    progress: Callable[[int, list[int]], None] | None = None
    # the batcher's bookkeeping
    scheduled: int = 0  # samples handed to a batch so far
    samples: dict[int, list[int]] = field(default_factory=dict)
    timed_out: set[int] = field(default_factory=set)
    failed: bool = False

    def abandon(self) -> None:
        """The client has gone: a queued job never reaches the decoder; a running one ends at the next chunk."""
        self.gone = True
        self.future.cancel()


@dataclass(frozen=True)
class Completion:
    text: str  # without the prompt, cut at the first stop sequence
    tokens: int
    finish_reason: str  # "stop": EOS or a stop sequence; "length": max_new_tokens or max_time reached


@dataclass(frozen=True)
class Result:
    prompt_tokens: int  # after cutting from the left to fit the context
    completions: list[Completion]


def _settle(future: Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a future unless it was answered or cancelled already (its client has gone)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class Batcher:
    """The background decoding loop. `submit` is thread-safe; `stats()` says how batches were formed;
    `ready` is set once every program is compiled."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 8, wait_s: float = 0.005, chunk: int = CHUNK,
                 max_new_tokens: int | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.wait_s, self.chunk = max_batch, wait_s, chunk
        positions = model.config.max_positions
        self.max_new_tokens = min(max_new_tokens or positions - 1, positions - 1)
        self.shapes = Shapes.plan(max_rows=max_batch, positions=positions, max_new_tokens=self.max_new_tokens)
        self.max_rows = self.shapes.rows[-1]  # sequences per batch: max_batch rounded up to a power of two
        self.decoder = Decoder(model, self.shapes, eos_id=tokenizer.eos_token_id, chunk=chunk)
        self._run = self.decoder.run  # one attribute, so a test can make decoding fail
        self.ready = threading.Event()
        self.compiled = 0  # programs compiled so far (of shapes.programs)
        self.warm_s = 0.0
        self.warm_error: str | None = None
        self._queue: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._stats = {"requests": 0, "failed": 0, "dropped": 0, "batches": 0, "largest_batch": 0,
                       "shared_batch": 0, "sequences": 0, "decode_s": 0.0}
        self._thread = threading.Thread(target=self._main, name="ccrun-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def stats(self) -> dict[str, Any]:
        """requests/failed: finished jobs; dropped: jobs whose client left before they were answered;
        largest_batch: most requests decoded in one batch; shared_batch: requests decoded together
        with at least one other."""
        with self._cond:
            return {**self._stats, "decode_s": round(self._stats["decode_s"], 3), "queued": len(self._queue),
                    "max_batch": self.max_batch, "max_rows": self.max_rows, "batch_wait_ms": self.wait_s * 1000}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # --- the thread ----------------------------------------------------------------------------

    def _main(self) -> None:
        started = time.perf_counter()
        try:
            self.decoder.warm(lambda k: setattr(self, "compiled", k))
        except Exception as exc:  # noqa: BLE001 - the server says it cannot serve instead of dying silently
            self.warm_error = f"{type(exc).__name__}: {exc}"
        self.warm_s = time.perf_counter() - started
        self.ready.set()
        while (batch := self._take()) is not None:
            try:
                self._decode(batch)
            except Exception as exc:  # noqa: BLE001 - a bug here fails its batch, never the thread
                for job, _ in batch:
                    job.failed = True
                    _settle(job.future, error=exc)

    def _drop_gone(self) -> None:
        """Take jobs whose client has left out of the queue (the caller holds the lock)."""
        gone = [j for j in self._queue if j.gone or j.failed or j.future.cancelled()]
        for job in gone:
            self._queue.remove(job)
        self._stats["dropped"] += sum(not j.failed for j in gone)

    def _take(self) -> list[tuple[Job, int]] | None:
        """The next batch as (job, sample index) rows: the oldest job first (None once closed)."""
        with self._cond:
            while True:
                self._drop_gone()
                if self._queue or self._closed:
                    break
                self._cond.wait()
            if self._closed:
                for job in self._queue:
                    _settle(job.future, error=RuntimeError("the server is shutting down"))
                self._queue.clear()
                return None
            end = time.monotonic() + self.wait_s
            while not self._closed:
                self._drop_gone()
                waiting = sum(j.n - j.scheduled for j in self._queue)
                if len(self._queue) >= self.max_batch or waiting >= self.max_rows:
                    break
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._drop_gone()
            rows: list[tuple[Job, int]] = []
            jobs = 0
            for job in list(self._queue):
                if len(rows) >= self.max_rows or jobs >= self.max_batch:
                    break
                if not job.scheduled and not job.future.set_running_or_notify_cancel():
                    self._queue.remove(job)  # cancelled between the check and now
                    self._stats["dropped"] += 1
                    continue
                take = min(job.n - job.scheduled, self.max_rows - len(rows))
                rows += [(job, job.scheduled + s) for s in range(take)]
                job.scheduled += take
                jobs += 1
                if job.scheduled == job.n:
                    self._queue.remove(job)
            return rows

    def _decode(self, batch: list[tuple[Job, int]]) -> None:
        if not batch:
            return
        jobs = list(dict.fromkeys(job for job, _ in batch))
        started = time.perf_counter()
        answered: set[int] = set()
        told = [0] * len(batch)  # tokens of each row passed to its job's progress

        def finish(tokens: list[list[int]], done: np.ndarray, final: bool) -> None:
            """Keep the finished rows' tokens; answer every job whose samples are all in."""
            for r, (job, s) in enumerate(batch):
                if done[r] or final:
                    job.samples.setdefault(s, tokens[r][: job.sampling.max_new_tokens])
            for job in jobs:
                if id(job) not in answered and len(job.samples) == job.n:
                    answered.add(id(job))
                    self._answer(job)

        def after_chunk(tokens: list[list[int]], done: np.ndarray) -> np.ndarray:
            now = time.monotonic()
            for r, (job, s) in enumerate(batch):
                if done[r]:
                    continue
                if job.gone:
                    done[r] = True
                elif job.deadline is not None and now >= job.deadline:
                    done[r] = True
                    job.timed_out.add(s)
                elif job.stop and any(x in self.tokenizer.decode(tokens[r]) for x in job.stop):
                    done[r] = True
                if job.progress is not None and not job.gone and len(tokens[r]) > told[r]:
                    told[r] = len(tokens[r])
                    job.progress(s, tokens[r][: job.sampling.max_new_tokens])
            finish(tokens, done, final=False)
            return done

        with self._cond:
            s = self._stats
            seed = s["batches"]  # a fresh draw per batch; greedy does not depend on it
            s["batches"] += 1
            s["largest_batch"] = max(s["largest_batch"], len(jobs))
            s["shared_batch"] += len(jobs) if len(jobs) > 1 else 0
            s["sequences"] += len(batch)
        try:
            tokens = self._run([job.ids for job, _ in batch], [job.sampling for job, _ in batch],
                               [job.sampling.max_new_tokens for job, _ in batch], seed=seed, after_chunk=after_chunk)
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, never the server
            for job in jobs:
                if id(job) not in answered:
                    job.failed = True
                    _settle(job.future, error=exc)
            with self._cond:
                self._stats["failed"] += sum(id(j) not in answered for j in jobs)
            return
        with self._cond:
            self._stats["decode_s"] += time.perf_counter() - started
        finish(tokens, np.ones(len(batch), bool), final=True)

    def _answer(self, job: Job) -> None:
        """All of a job's samples are in: its Result (or nothing, if its client has gone)."""
        with self._cond:
            if job.gone:
                self._stats["dropped"] += 1
                return
            self._stats["requests"] += 1
        budget = job.sampling.max_new_tokens
        completions = []
        for s in range(job.n):
            ids = job.samples[s]
            text = self.tokenizer.decode(ids)
            cut = cut_at_stop(text, job.stop)
            ended = len(ids) < budget and s not in job.timed_out  # EOS
            completions.append(Completion(cut, len(ids), "stop" if ended or cut != text else "length"))
        _settle(job.future, result=Result(len(job.ids), completions))
