"""Dynamic batching: requests that arrive together are decoded together, by one thread that owns the model.

HTTP handlers put a `Job` on the queue and await its future, so the event loop never decodes. The
thread takes the oldest job and the queued jobs that share its sample count and max_new_tokens
(the shape of the decode; temperature, top_p and top_k are per row and may differ), up to `max_batch`
requests, waiting up to `wait_s` for companions while the batch is not full, and runs
`generate` once for all of them. Batch sizes are rounded up to powers of two, so a handful of
shapes compile. Each job keeps its own stop sequences and deadline (checked between chunks).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..evals.sample import Sampling, cut_at_stop, generate

CHUNK = 16  # tokens decoded between checks of stops and deadlines (16: an editor completion's length)


@dataclass
class Job:
    text: str
    n: int
    sampling: Sampling
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() seconds; past it, the rows end with what they have
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[int, int]:
        """Jobs with the same key can share a batch: the same samples per prompt and token budget."""
        return self.n, self.sampling.max_new_tokens


@dataclass(frozen=True)
class Completion:
    text: str  # without the prompt, cut at the first stop sequence
    tokens: int
    finish_reason: str  # "stop": EOS or a stop sequence; "length": max_new_tokens or max_time reached


@dataclass(frozen=True)
class Result:
    prompt_tokens: int  # after cutting from the left to fit the context
    completions: list[Completion]


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Batcher:
    """The background decoding loop. `submit` is thread-safe; `stats()` says how batches were formed."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 8, wait_s: float = 0.005, chunk: int = CHUNK):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.wait_s, self.chunk = max_batch, wait_s, chunk
        self._generate = generate  # the sampler; one attribute, so a test can make it fail
        self._queue: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._stats = {"requests": 0, "failed": 0, "batches": 0, "largest_batch": 0, "shared_batch": 0,
                       "sequences": 0, "decode_s": 0.0}
        self._thread = threading.Thread(target=self._loop, name="ccrun-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def stats(self) -> dict[str, Any]:
        """requests/failed: finished jobs; largest_batch: most requests decoded in one batch;
        shared_batch: requests decoded together with at least one other."""
        with self._cond:
            return {**self._stats, "decode_s": round(self._stats["decode_s"], 3), "queued": len(self._queue),
                    "max_batch": self.max_batch, "batch_wait_ms": self.wait_s * 1000}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # --- the thread ----------------------------------------------------------------------------

    def _take(self) -> list[Job] | None:
        """The next batch: the oldest job and its companions (None once closed)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                for job in self._queue:
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(RuntimeError("the server is shutting down"))
                self._queue.clear()
                return None
            key = self._queue[0].key
            cap = self.max_batch  # requests per batch (each decodes its n samples)
            end = time.monotonic() + self.wait_s
            while sum(j.key == key for j in self._queue) < cap and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            group = [j for j in self._queue if j.key == key][:cap]
            for job in group:
                self._queue.remove(job)
        return [j for j in group if j.future.set_running_or_notify_cancel()]  # skip requests given up on

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            if not group:
                continue
            started = time.perf_counter()
            try:
                results = self._decode(group)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, never the server
                for job in group:
                    job.future.set_exception(exc)
                with self._cond:
                    self._stats["failed"] += len(group)
                continue
            with self._cond:
                s = self._stats
                s["requests"] += len(group)
                s["batches"] += 1
                s["largest_batch"] = max(s["largest_batch"], len(group))
                s["shared_batch"] += len(group) if len(group) > 1 else 0
                s["sequences"] += len(group) * group[0].n
                s["decode_s"] += time.perf_counter() - started
            for job, result in zip(group, results, strict=True):
                job.future.set_result(result)

    def _decode(self, group: list[Job]) -> list[Result]:
        n = group[0].n
        sampling = group[0].sampling  # max_new_tokens is the group's; the other knobs are per job
        room = self.model.config.max_positions - sampling.max_new_tokens
        if room < 1:
            raise ValueError(f"max_new_tokens {sampling.max_new_tokens} leaves no room for a prompt")
        # the cursor is at the end: a long document loses its beginning
        prompts = [self.tokenizer(j.text, add_special_tokens=False)["input_ids"][-room:] for j in group]
        timed_out: set[tuple[int, int]] = set()

        def row_done(i: int, s: int, tokens: list[int]) -> bool:
            job = group[i]
            if job.deadline is not None and time.monotonic() >= job.deadline:
                timed_out.add((i, s))
                return True
            return bool(job.stop) and any(x in self.tokenizer.decode(tokens) for x in job.stop)

        watch = any(j.stop or j.deadline is not None for j in group)
        with self._cond:
            seed = self._stats["batches"]  # a fresh draw per batch; greedy does not depend on it
        tokens = self._generate(
            self.model, prompts, n=n, sampling=[j.sampling for j in group], eos_id=self.tokenizer.eos_token_id,
            seed=seed, batch_size=min(_pow2(len(group)), self.max_batch) * n,  # sequences: a few padded shapes
            row_done=row_done if watch else None, chunk=self.chunk,
        )
        results = []
        for i, (job, samples) in enumerate(zip(group, tokens, strict=True)):
            completions = []
            for s, ids in enumerate(samples):
                text = self.tokenizer.decode(ids)
                cut = cut_at_stop(text, job.stop)
                ended = len(ids) < sampling.max_new_tokens and (i, s) not in timed_out  # EOS
                completions.append(Completion(cut, len(ids), "stop" if ended or cut != text else "length"))
            results.append(Result(len(prompts[i]), completions))
        return results
