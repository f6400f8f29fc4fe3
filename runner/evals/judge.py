"""The judge: runs a benchmark's trusted test code against a candidate it can only call (standard library only).

HumanEval's `check(candidate)` and the helpers its prompt defines (e.g. `encode_cyclic`) are
trusted: they come with the benchmark. The completion is not. They never share an interpreter:
the completion runs in its own sandbox (inside.py, mode "call") and only defines its function;
this process executes the trusted prompt and test and calls `check` with a proxy whose every
call crosses the channel (channel.py) as plain values, so a comparison here is always between
builtin values this process built. The completion cannot reach this process: it runs in other
namespaces (PID, mount, network, user), so it can neither see nor signal nor trace it.

One judge process (`serve`, in a sandbox of its own started once per `Sandbox`) forks a child
per sample, so each check starts from the same clean state in about a millisecond. A request is
a message on a SOCK_SEQPACKET socket carrying four descriptors: the spec (a file of marshal data: prompt, test,
entry point, seconds left, frame limit), the pipe to the program, the pipe from it, and the
verdict pipe to the parent. The verdict is one JSON object `{"outcome", "detail"}` with outcome
passed (check returned), failed (AssertionError), error (any other exception, or the program
broke the channel), exited_early (the program left through SystemExit) or timeout; "gone" means
the program ended during the check and the parent, which knows how, says why.
"""

import builtins
import json
import marshal
import os
import signal
import socket
import sys
import time

if __package__:  # imported as runner.evals.judge; run as -c text, channel.py's source precedes this
    from .channel import ChannelError, Frames, PeerGone, decode, encode, receive, request_frame, send


class Gone(BaseException):
    """The program cannot answer any more: not an exception a test could catch."""

    def __init__(self, outcome, detail):
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one, or returned what is not plain data."""


def _not_plain(type_name):
    raise CandidateError(f"the candidate returned a {type_name}, not a plain value")


def _exception(type_name, message):
    """The builtin exception the candidate raised (so a test expecting ValueError sees one), else CandidateError."""
    kind = getattr(builtins, str(type_name), None)
    if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, Warning):
        try:
            return kind(message)
        except Exception:
            pass
    return CandidateError(message)


class Candidate:
    """The completion's function, called through the channel."""

    def __init__(self, to_program, from_program, deadline, limit, reader):
        self._to, self._from, self._deadline, self._limit, self._reader = to_program, from_program, deadline, limit, reader
        self.calls = 0

    def _ask(self, message):
        try:
            send(self._to, request_frame(message), self._deadline)
            return receive(self._from, self._reader, self._deadline)
        except TimeoutError:
            raise Gone("timeout", "still running when the time was up") from None
        except PeerGone as exc:
            raise Gone("gone", str(exc)) from None
        except ChannelError as exc:
            raise Gone("error", f"the program broke the channel: {exc}") from None
        except EOFError:
            raise Gone("gone", "the program ended during a call") from None

    def __call__(self, *args, **kwargs):
        self.calls += 1
        try:
            message = {"args": encode(list(args))}
            if kwargs:
                message["kwargs"] = encode(kwargs)
        except ChannelError as exc:  # the test's own arguments: not the candidate's fault, but no verdict either
            raise CandidateError(f"the test's arguments cannot cross the channel: {exc}") from None
        reply = self._ask(message)
        if type(reply) is not dict:
            raise Gone("error", "the program broke the channel: an answer that is not an object")
        if "ok" in reply:
            try:
                return decode(reply["ok"], opaque=_not_plain)
            except ChannelError as exc:
                raise Gone("error", f"the program broke the channel: {exc}") from None
        detail = str(reply.get("raise", "?"))[:500]
        if reply.get("exit"):
            raise Gone("exited_early", detail)
        raise _exception(reply.get("type"), detail)


def _line(exc):
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace("\n", " ")[:500]


def judge(spec, to_program, from_program):
    """(outcome, detail) of one sample."""
    deadline = time.monotonic() + spec["timeout_s"]
    limit = spec["limit"]
    reader = Frames(limit)
    try:
        loaded = receive(from_program, reader, deadline)
    except TimeoutError:
        return "timeout", "still loading when the time was up"
    except EOFError:
        return "gone", "the program ended before it was loaded"
    except ChannelError as exc:
        return "error", f"the program broke the channel: {exc}"
    if type(loaded) is not dict or loaded.get("loaded") is not True:
        detail = str(loaded.get("detail", "?") if type(loaded) is dict else "?")[:500]
        return ("exited_early" if type(loaded) is dict and loaded.get("exit") else "error"), detail
    candidate = Candidate(to_program, from_program, deadline, limit, reader)
    scope = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        exec(compile(spec["prompt"], "<prompt>", "exec"), scope)
    except Exception as exc:
        return "error", f"the problem's prompt does not run: {_line(exc)}"
    scope[spec["entry_point"]] = candidate  # a test that calls the function by its name calls the candidate too
    try:
        exec(compile(spec["test"], "<test>", "exec"), scope)
        scope["check"](candidate)
    except Gone as gone:
        return gone.outcome, gone.detail
    except AssertionError as exc:
        return "failed", _line(exc)
    except Exception as exc:
        return "error", _line(exc)
    return "passed", ""


def _check(spec_fd, to_program, from_program, verdict_fd):
    os.lseek(spec_fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(spec_fd, 1 << 20):
        data += chunk
    os.close(spec_fd)
    spec = marshal.loads(data)
    signal.alarm(int(spec["timeout_s"]) + 2)  # the test itself is bounded too
    try:
        outcome, detail = judge(spec, to_program, from_program)
    except BaseException as exc:  # noqa: BLE001 - whatever happened, the parent gets a verdict
        outcome, detail = "error", f"judge: {_line(exc)}"
    os.write(verdict_fd, json.dumps({"outcome": outcome, "detail": detail}).encode())


# Imported once here, before any fork, so that a check whose prompt or test imports them (most
# HumanEval prompts import typing) does not pay for it: ~10 ms of a 40 ms sample otherwise.
PRELOAD = ("typing", "math", "re", "hashlib", "collections", "itertools", "functools", "random", "string",
           "copy", "heapq", "bisect", "fractions", "decimal", "statistics", "json")


def serve(sock_fd):
    """Fork a child per request until the parent closes the socket."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 64, 4)
        except OSError:
            break
        if not message:
            break
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _check(*fds)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    sys.set_int_max_str_digits(4300)
    serve(int(sys.argv[1]))
