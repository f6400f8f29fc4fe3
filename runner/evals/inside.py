"""What runs inside the sandbox, before and around the untrusted program (standard library only).

Run as `python -I -S -c STUB IN_FD OUT_FD CODE_FD PRELOAD` (see sandbox.py; CODE_FD holds
channel.py's source followed by this file's, compiled). The process is started before it has
work (a spare): it imports the PRELOAD modules (comma-separated: what the programs of its kind
import anyway, e.g. typing for HumanEval, the APPS header's numpy) and waits for its
configuration, the first frame on IN_FD (mode, the program's source, module name, resource
limits, site directories, the target function, standard input); one process serves one sample.
Everything here shares the
interpreter with the program, so nothing here is trusted by the judging side: in the modes that
give verdicts ("call", "stdin"), what leaves this process is only frames of plain values that the
parent (APPS) or the judge (HumanEval) checks against answers this process never sees.

Modes:
- "call": load the program as module `module`, find the target (`Solution().<fn>` when `cls`,
  else the module's `<fn>`), answer `{"loaded": true}` (or why not), then for each request
  `{"args": [...]}` call it and answer `{"ok": value}` or `{"raise": "Type: message", "type":
  "Type", "exit": bool}`.
- "stdin": compile the program, answer `{"loaded": true}`, then for each request `{"stdin": text}`
  run it as `__main__` in a fresh namespace with that text as file descriptor 0 and a fresh file
  as descriptor 1, and answer `{"status": "done" | "exit" | "raise", "detail", "out", "truncated"}`.
- "run": run the program once as module `module`; if its top-level code returns, write the nonce
  to OUT_FD (the one-shot `Sandbox.run`: a program written to forge this can, see sandbox.py).
"""

import _signal  # not `signal`: it imports enum, a few milliseconds of every program's start
import _sitebuiltins  # exit() and quit() as site would install them (site itself is skipped: -S)
import builtins
import io
import os
import resource
import sys
import types

if __package__:  # imported as runner.evals.inside; run as -c text, channel.py's source precedes this
    from .channel import ChannelError, Frames, answer_frame, decode, encode, receive, request, send

REQUEST_LIMIT = 1 << 30  # the parent is trusted: a request is as large as a test's input


def _line(exc):
    """`Type: message` of an exception, in one line, without importing traceback."""
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except BaseException:
        text = type(exc).__name__
    return text.replace("\n", " ")[:500]


def _traceback(exc):
    try:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
        sys.stderr.flush()
    except BaseException:
        pass


def _setup(config):
    for name, (soft, hard) in config["limits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # past the file size limit a write fails (EFBIG), no kill
    sys.path.extend(config["site"])
    if config.get("stdin") is not None:  # one-shot runs: the standard input, a file of its own
        stdin = os.memfd_create("stdin")
        os.write(stdin, config["stdin"].encode("utf-8", "surrogatepass"))
        os.lseek(stdin, 0, os.SEEK_SET)
        os.dup2(stdin, 0)
        os.close(stdin)
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    builtins.help = _sitebuiltins._Helper()


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass


def run_once(config, out_fd):
    """One-shot: the nonce reaches OUT_FD only if the program's top-level code returned."""
    write, exit_now, me, nonce = os.write, os._exit, os.getpid(), config["nonce"].encode()

    def report(kind, clean, detail):
        _flush()
        if os.getpid() == me:
            write(out_fd, b"\0".join([kind.encode(), b"1" if clean else b"0", detail]))
        exit_now(0 if kind == "passed" else 1)

    module = types.ModuleType(config["module"])
    module.__file__ = "program.py"
    sys.modules[config["module"]] = module
    sys.argv = ["program.py"]
    try:
        exec(compile(config["source"], "program.py", "exec"), module.__dict__)
    except SystemExit as e:
        report("exited_early", e.code in (None, 0), f"SystemExit({e.code!r})".encode("utf-8", "replace"))
    except BaseException as e:
        _traceback(e)
        report("failed" if isinstance(e, AssertionError) else "error", False, _line(e).encode("utf-8", "replace"))
    report("passed", True, nonce)


def serve_calls(config, in_fd, out_fd, reader):
    me = os.getpid()
    module = types.ModuleType(config["module"])
    module.__file__ = "<solution>"
    sys.modules[config["module"]] = module
    sys.argv = ["<solution>"]
    try:
        exec(compile(config["source"], "<solution>", "exec"), module.__dict__)
        owner = module.Solution() if config.get("cls") else module
        target = getattr(owner, config["fn"])
    except SystemExit as e:
        _flush()
        send(out_fd, answer_frame({"loaded": False, "exit": True, "detail": f"SystemExit({e.code!r})"}))
        os._exit(1)
    except BaseException as e:
        _traceback(e)
        send(out_fd, answer_frame({"loaded": False, "exit": False, "detail": _line(e)}))
        os._exit(1)
    _flush()
    send(out_fd, answer_frame({"loaded": True}))
    while True:
        try:
            message = receive(in_fd, reader)
        except (EOFError, ChannelError, ValueError):
            os._exit(0)
        if os.getpid() != me:  # a child forked by the program does not answer for it
            os._exit(0)
        try:
            args = decode(message["args"])
            kwargs = decode(message.get("kwargs") or {"t": "dict", "v": []})
            answer = {"ok": encode(target(*args, **kwargs))}
        except SystemExit as e:
            answer = {"raise": f"SystemExit({e.code!r})", "type": "SystemExit", "exit": True}
        except BaseException as e:
            _traceback(e)
            answer = {"raise": _line(e), "type": type(e).__name__, "exit": False}
        _flush()
        if os.getpid() != me:
            os._exit(0)
        try:
            send(out_fd, answer_frame(answer))
        except (ValueError, RecursionError) as e:  # an int of too many digits for JSON, ...
            send(out_fd, answer_frame({"raise": f"the value cannot be sent: {_line(e)}", "type": "ValueError", "exit": False}))


def serve_stdin(config, in_fd, out_fd, reader):
    me, cap = os.getpid(), config["output_cap"]
    try:
        code = compile(config["source"], "<solution>", "exec")
    except BaseException as e:
        send(out_fd, answer_frame({"loaded": False, "exit": False, "detail": _line(e)}))
        os._exit(1)
    send(out_fd, answer_frame({"loaded": True}))
    while True:
        try:
            message = receive(in_fd, reader)
        except (EOFError, ChannelError, ValueError):
            os._exit(0)
        if os.getpid() != me:
            os._exit(0)
        stdin = os.memfd_create("stdin")
        os.write(stdin, message["stdin"].encode("utf-8", "surrogatepass"))
        os.lseek(stdin, 0, os.SEEK_SET)
        os.dup2(stdin, 0)
        os.close(stdin)
        stdout = os.memfd_create("stdout")
        os.dup2(stdout, 1)
        sys.stdin = sys.__stdin__ = io.open(0, "r", encoding="utf-8", closefd=False)
        sys.stdout = sys.__stdout__ = io.open(1, "w", encoding="utf-8", closefd=False)
        main = types.ModuleType("__main__")
        main.__builtins__ = builtins
        sys.modules["__main__"] = main
        sys.argv = ["<solution>"]
        try:
            exec(code, main.__dict__)
            status, detail = "done", ""
        except SystemExit as e:
            status, detail = "exit", f"SystemExit({e.code!r})"
        except BaseException as e:
            _traceback(e)
            status, detail = "raise", _line(e)
        _flush()
        if os.getpid() != me:
            os._exit(0)
        os.lseek(stdout, 0, os.SEEK_SET)
        out = os.read(stdout, cap + 1)
        os.close(stdout)
        send(out_fd, answer_frame({"status": status, "detail": detail, "out": out[:cap].decode("utf-8", "replace"),
                      "truncated": len(out) > cap}))


def run_sample(in_fd, out_fd):
    """Wait for the configuration (the first frame on IN_FD) and run the sample it describes."""
    reader = Frames(REQUEST_LIMIT, request)
    try:
        config = receive(in_fd, reader)
    except (EOFError, ChannelError, ValueError):  # a spare never used
        os._exit(0)
    _setup(config)
    mode = config["mode"]
    if mode == "run":
        run_once(config, out_fd)
    elif mode == "call":
        serve_calls(config, in_fd, out_fd, reader)
    else:
        serve_stdin(config, in_fd, out_fd, reader)


def main():
    in_fd, out_fd, code_fd = (int(x) for x in sys.argv[1:4])
    os.close(code_fd)  # this file, compiled (sandbox.py's STUB loaded it)
    for name in filter(None, sys.argv[4].split(",")):
        try:
            __import__(name)
        except Exception:  # the program's own import will say what is wrong
            pass
    run_sample(in_fd, out_fd)


if __name__ == "__main__" and sys.argv[1:2] != ["--forkserver"]:  # forkserver.py's source may follow
    main()
