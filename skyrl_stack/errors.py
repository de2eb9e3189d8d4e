"""The one error type users see: a one-line cause plus a hint for what to do.

Library code raises :class:`StackError`; ``tasks.py`` turns it into a non-zero
exit with exactly two short lines (``error: ...`` and ``hint: ...``) instead of
a traceback. Anything that is not a StackError is a bug and keeps its traceback.
"""
from __future__ import annotations


class StackError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


def first_line(text: object, limit: int = 300) -> str:
    """The first non-blank line of a message, shortened: what a one-line error shows."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
