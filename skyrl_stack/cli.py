"""Glue between Invoke tasks and the library: error reporting and progress lines.

Tasks stay thin: they parse options, call a library function, and let
:func:`reports_errors` turn a :class:`StackError` into two readable lines and a
non-zero exit (never a traceback, never a half-done side effect).
"""
from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading

from skyrl_stack.errors import StackError


def reports_errors(fn):
    """Decorate an Invoke task body (below ``@task``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from invoke.exceptions import Exit

        try:
            return fn(*args, **kwargs)
        except StackError as exc:
            raise Exit(exc.render(), code=1) from None
        except KeyboardInterrupt:
            raise Exit("error: interrupted", code=130) from None

    return wrapper


def step(message: str) -> None:
    """A progress line for long operations (builds, pushes, launches)."""
    print(f"==> {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def interrupt_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, for work that is done and only being recorded:
    yields a list that holds the signal if one came (the caller says so, and does not fail)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield []
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def split_csv(value: str | None) -> list[str]:
    """'a,b' or 'a b' -> ['a', 'b'] (for options that take several values)."""
    if not value:
        return []
    return [part for part in value.replace(",", " ").split() if part]
