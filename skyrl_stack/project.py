"""Where the project is: the one anchor for every path the tools read or write.

What the tools read (the build context, the infra templates, the benchmark
scripts) is under the checkout that holds tasks.py; what they write (records,
smoke reports, rendered task files) is under the workspace, the same checkout by
default. (`invoke bench` writes its figures to the checkout's reports/, beside
the README table it updates.) Both are found from here, never from the current directory, so
`invoke` run from a subfolder reads and writes the same files.
"""
from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The checkout holding tasks.py, or the current directory for an installed package."""
    return _CHECKOUT if (_CHECKOUT / "tasks.py").is_file() else Path.cwd()


def workspace() -> Path:
    """Where the tools write: state (.skyrl-stack/), reports/ and rendered skypilot/*.yaml.
    The project root, unless SKYRL_STACK_WORKSPACE names another folder (tests, or CI
    jobs that keep their runs apart)."""
    configured = os.environ.get("SKYRL_STACK_WORKSPACE")
    return Path(configured).resolve() if configured else project_root()


def shown(path: Path) -> str:
    """A path as a user reads it: relative to the current directory when it is below it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
