"""Progress lines for long operations (builds, pushes, launches, stack updates).

The library reports each step through :func:`step`; where the lines go is the
caller's choice: by default ``==> message`` on stderr (what `invoke` shows, and
what a script using the library sees), or any sink set with :func:`report_to`
(a test, or a CI wrapper that logs elsewhere). The library never imports the
CLI layer (``skyrl_stack/cli.py``); tests/test_layout.py checks it.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


def _to_stderr(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


_sink: Callable[[str], None] = _to_stderr


def step(message: str) -> None:
    """Report one step of a long operation."""
    _sink(message)


@contextlib.contextmanager
def report_to(sink: Callable[[str], None]) -> Iterator[None]:
    """Send the steps reported inside the block to sink instead."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
