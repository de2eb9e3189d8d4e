"""A training run's name: the folder its checkpoints go to under the bucket (`--run NAME` / `--resume NAME`).

One path per run, so that a second run with the same bucket never mixes its
checkpoints with the first's (SkyRL's cleanup_old_checkpoints keeps the highest
steps in the folder, which would be the older run's). A new run gets a
generated name, `<variant>-YYYYmmdd-HHMMSS-xxxx`, unless --run names it;
--resume NAME continues a run on purpose.
"""
from __future__ import annotations

import re
import secrets
import time

from skyrl_stack.errors import StackError

# One path segment an object store and a shell take as is.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def generated_run_name(variant: str) -> str:
    return f"{variant}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def parse_run(run: str | None, resume: str | None, variant: str) -> tuple[str, bool]:
    """(--run or --resume or a generated name, whether it is a resume)."""
    if run and resume:
        raise StackError(f"--run {run} and --resume {resume} together",
                         hint="--run NAME starts a new run, --resume NAME continues one: give one of them")
    name = run or resume
    if name is not None and not _NAME.match(name):
        option = "--run" if run else "--resume"
        raise StackError(f"bad {option} {name!r}: a run name is one path segment of letters, digits, '.', '_' or '-'",
                         hint=f"e.g. {option} {variant}-r1")
    return (name or generated_run_name(variant)), bool(resume)
