"""Glue between Invoke tasks and the library: errors become two lines and an exit code.

Tasks stay thin: they parse options, call a library function, and let
:func:`reports_errors` turn a :class:`StackError` into two readable lines and a
non-zero exit (never a traceback, never a half-done side effect).
"""
from __future__ import annotations

import functools

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


def check_project_config(tasks_file: str) -> None:
    """At import of tasks.py: a project config Invoke would fail on with a traceback becomes one line."""
    from pathlib import Path

    from invoke.exceptions import Exit

    from skyrl_stack.task_defaults import check_project_config as check

    try:
        check(Path(tasks_file).resolve().parent)
    except StackError as exc:
        raise Exit(exc.render(), code=1) from None


def split_csv(value: str | None) -> list[str]:
    """'a,b' or 'a b' -> ['a', 'b'] (for options that take several values)."""
    if not value:
        return []
    return [part for part in value.replace(",", " ").split() if part]
