"""Streamed completions: OpenAI's server-sent events, and each sample's text as its tokens come.

A sample's text is sent only once it is settled: what the final answer will surely start with.
Held back until more tokens (or the end) come: a trailing U+FFFD (a character whose UTF-8 bytes are
split across tokens: the next token completes it), and a tail that could be the start of a stop
sequence (the next token may complete the stop, and the answer is cut before it). Text after a
stop sequence is never sent. At the end, the rest of the final answer (the batcher's, exactly the
text a request without `stream` gets) is sent with the finish reason, so the pieces of a choice
put together are that answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..evals.sample import cut_at_stop

log = logging.getLogger("ccrun.serve")
DONE = b"data: [DONE]\n\n"
REPLACEMENT = "\ufffd"  # what a decoder writes for a character whose bytes are not all there yet


def settled(text: str, stops: Sequence[str]) -> str:
    """The part of `text` (a sample's decoded tokens so far) that more tokens cannot change or cut."""
    cut = cut_at_stop(text, stops)
    if cut != text:
        return cut  # a stop is in: the answer ends here
    text = text.rstrip(REPLACEMENT)
    hold = 0
    for stop in stops:  # the longest tail of the text that a stop sequence starts with
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return text[: len(text) - hold]


class TextStream:
    """One sample's text, sent in pieces: `update` with the tokens so far, `finish` with the answer."""

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str]):
        self.decode, self.stops = decode, tuple(stops)
        self.sent = ""
        self.finished = False

    def update(self, ids: list[int]) -> str:
        """The new settled text since the last piece ("" if none)."""
        now = settled(self.decode(ids), self.stops)
        if len(now) <= len(self.sent) or not now.startswith(self.sent):
            return ""
        piece, self.sent = now[len(self.sent) :], now
        return piece

    def finish(self, answer: str) -> str:
        """The rest of the final answer (it starts with what was sent; settled text is never taken back)."""
        self.finished = True
        if not answer.startswith(self.sent):  # a decoder whose text is not prefix-stable (none of ours): say so
            log.error("streamed text is not a prefix of the answer: %r vs %r", self.sent[-40:], answer[-40:])
            return ""
        piece, self.sent = answer[len(self.sent) :], answer
        return piece


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event: `data: {json}` and a blank line."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def chunk(head: dict[str, Any], index: int, text: str, finish_reason: str | None,
          usage: bool = False) -> bytes:
    """A text_completion chunk with one choice (`head`: id, object, created, model)."""
    body = {**head, "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}]}
    if usage:
        body["usage"] = None  # OpenAI: every chunk has usage null when the last one carries it
    return event(body)
