"""ccrun's exceptions. Each carries the exit code the command line turns it into, in one place
(`runner.cli.main`): 2 bad input (a recipe, an argument, a file, a checkpoint), 1 a run that failed,
130 an interrupted run. Raise the most specific class where the problem is found; never catch one
just to print it.

`hint` is a second line some callers add on the way out (e.g. the run directory that keeps what was
written); the message itself says what is wrong.
"""

from __future__ import annotations


class CcrunError(Exception):
    """Base: a message for the user and an exit code (1 unless a subclass says otherwise)."""

    exit_code: int = 1
    # Printed as "ccrun: <message>"; multi-line located messages (recipes) print as they are.
    prefixed: bool = True

    def __init__(self, *args: object, hint: str | None = None):
        super().__init__(*args)
        self.hint = hint

    def render(self) -> str:
        text = str(self)
        if self.prefixed:
            text = f"ccrun: {text}"
        return f"{text}\n{self.hint}" if self.hint else text


class BadInput(CcrunError):
    """The user's input is wrong: a recipe, a command-line argument, a file, a directory. Exit 2."""

    exit_code = 2


class RunFailed(CcrunError):
    """A run started and could not finish (non-finite loss, a failed process). Exit 1."""

    exit_code = 1


class Interrupted(CcrunError):
    """SIGINT/SIGTERM: stopped on purpose, resumable. Exit 130."""

    exit_code = 130


class DataError(BadInput):
    """Bad data input: a missing or malformed file, an empty corpus, an unreachable dataset."""


class NotARunDirectory(BadInput):
    """A path given as a run directory is not one."""
