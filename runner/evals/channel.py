"""The one narrow channel between an untrusted program and whoever judges it: plain values in frames.

A value crosses tagged: None, bool, int, float (NaN and infinities included) and str as
themselves; bytes, list, tuple, set, frozenset and dict tagged (`{"t": "tuple", "v": [...]}`,
dict items as key/value pairs, so keys keep their types). Anything else the program returns is
sent as `{"t": "opaque", "v": type name}` and never becomes an object on the judging side: the
decoder builds only builtin values of exactly these types, so a returned object cannot bring its
own `__eq__` (or any other code) to the comparison.

A frame is a 4-byte big-endian length and that many bytes. Frames from the trusted side (the
parent or the judge: configuration, arguments, standard input) are `marshal` data, which the
sandboxed side reads without importing anything. Frames from the untrusted side (answers) are
UTF-8 JSON, written by `to_json` (no `json` import either: `json` pulls in `re` and `enum`, a
third of a sandboxed program's start-up) and read by the trusted side with `answer`: a frame
over the reader's limit, JSON that is not of this shape, nesting deeper than MAX_DEPTH or an
integer of more digits than Python parses by default is a ChannelError, never a crash.

Standard library only: this file's source also runs inside the sandbox (runner/evals/inside.py)
and in the judge (runner/evals/judge.py), which see no project files.
"""

import marshal
import os
import select
import struct
import time

MAX_DEPTH = 200  # nesting of containers in one value (the judge's and the parent's stack stay small)
_HEAD = struct.Struct(">I")
_TAGS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


class ChannelError(Exception):
    """A frame or value outside the protocol, a peer that went away, or a deadline that passed."""


class PeerGone(ChannelError):
    """The other end closed its side or went away."""


class Opaque:
    """What a returned value that is not plain data decodes to where that is not an error: equal to nothing."""

    __slots__ = ("type_name",)

    def __init__(self, type_name):
        self.type_name = str(type_name)[:100]

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{self.type_name}: not a plain value>"


def encode(value, depth=0):
    """A JSON-able form of `value`. Subclasses (IntEnum, numpy scalars) travel as their builtin
    base; anything else as opaque."""
    if depth > MAX_DEPTH:
        raise ChannelError(f"a value nested deeper than {MAX_DEPTH} levels")
    if value is None:
        return None
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (bytes, bytearray)):
        return {"t": "bytes", "v": bytes(value).hex()}
    for name, kind in (("tuple", tuple), ("list", list), ("frozenset", frozenset), ("set", set)):
        if isinstance(value, kind):
            return {"t": name, "v": [encode(x, depth + 1) for x in value]}
    if isinstance(value, dict):
        return {"t": "dict", "v": [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in value.items()]}
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return encode(value.item(), depth + 1)  # numpy.int64, numpy.bool_: as the reference's == sees them
    return {"t": "opaque", "v": type(value).__name__}


def decode(value, opaque=Opaque, depth=0):
    """The builtin value `encode` described; ChannelError for anything else. `opaque(type_name)`
    stands for a value that was not plain data (it may raise instead)."""
    if depth > MAX_DEPTH:
        raise ChannelError(f"a value nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is not dict or len(value) != 2 or "t" not in value or "v" not in value:
        raise ChannelError("not a plain value")
    tag, items = value["t"], value["v"]
    if tag == "opaque":
        return opaque(items if type(items) is str else "?")
    if tag == "bytes":
        if type(items) is not str:
            raise ChannelError("bytes not given as hex")
        try:
            return bytes.fromhex(items)
        except ValueError:
            raise ChannelError("bytes not given as hex") from None
    if type(items) is not list:
        raise ChannelError(f"{tag!r} without a list of items")
    try:
        if tag == "dict":
            out = {}
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    raise ChannelError("a dict item that is not a key/value pair")
                out[decode(pair[0], opaque, depth + 1)] = decode(pair[1], opaque, depth + 1)
            return out
        if tag in _TAGS:
            return _TAGS[tag](decode(x, opaque, depth + 1) for x in items)
    except TypeError:  # an unhashable key or set member
        raise ChannelError(f"an unhashable item in a {tag}") from None
    raise ChannelError(f"unknown type tag {str(tag)[:40]!r}")


_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)} | {ord('"'): '\\"', ord("\\"): "\\\\"}


def to_json(value):
    """JSON text of a message made of None, bool, int, float, str, list and str-keyed dicts (what
    `encode` builds). ValueError for an int of more digits than Python converts by default."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if kind is str:
        return '"' + value.translate(_ESCAPES) + '"'
    if kind is list:
        return "[" + ",".join(to_json(x) for x in value) + "]"
    if kind is dict:
        return "{" + ",".join(to_json(str(k)) + ":" + to_json(x) for k, x in value.items()) + "}"
    raise ValueError(f"{kind.__name__} in a message")


def answer_frame(message):
    """One frame from the untrusted side: JSON (lone surrogates pass through as such)."""
    data = to_json(message).encode("utf-8", "surrogatepass")
    return _HEAD.pack(len(data)) + data


def request_frame(message):
    """One frame from the trusted side: marshal data."""
    data = marshal.dumps(message)
    return _HEAD.pack(len(data)) + data


def answer(data):
    """An answer's message from its bytes: parsed as JSON by the trusted side only."""
    import json

    try:
        return json.loads(data.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:  # not JSON, too deep, an integer of too many digits
        raise ChannelError(f"a frame that is not valid JSON ({type(exc).__name__})") from None


def request(data):
    """A request's message from its bytes, on the untrusted side (from the trusted side only)."""
    return marshal.loads(data)


class Frames:
    """Frames from a byte stream fed in pieces; a frame longer than `limit` is a ChannelError."""

    def __init__(self, limit, parse=answer):
        self.limit = limit
        self.parse = parse
        self.buffer = bytearray()

    def feed(self, chunk):
        self.buffer += chunk
        out = []
        while len(self.buffer) >= _HEAD.size:
            (size,) = _HEAD.unpack_from(self.buffer)
            if size > self.limit:
                raise ChannelError(f"a frame of {size} bytes (the limit is {self.limit})")
            if len(self.buffer) < _HEAD.size + size:
                break
            out.append(self.parse(bytes(self.buffer[_HEAD.size:_HEAD.size + size])))
            del self.buffer[:_HEAD.size + size]
        return out


def send(fd, data, deadline=None):
    """Write one frame (`answer_frame` or `request_frame`); with a deadline (time.monotonic), never block past it."""
    data = memoryview(data)
    while data:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise ChannelError("the peer did not read in time")
        try:
            written = os.write(fd, data[:65536])
        except BlockingIOError:
            continue
        except OSError as exc:  # EPIPE: the peer is gone
            raise PeerGone(f"the peer is gone ({exc.strerror})") from None
        data = data[written:]


def receive(fd, reader, deadline=None):
    """Read one frame's message (blocking, or until `deadline`); `reader` (Frames) keeps bytes read past it."""
    pending = reader.feed(b"")
    while not pending:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer in time")
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            raise PeerGone(f"the peer is gone ({exc.strerror})") from None
        if not chunk:
            raise EOFError("the peer is gone")
        pending = reader.feed(chunk)
    if len(pending) > 1:
        raise ChannelError("more than one frame where one was expected")
    return pending[0]
