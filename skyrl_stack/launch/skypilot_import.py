"""Import SkyPilot once per process, at the lowest cost the interpreter allows.

`import sky` runs sky/__init__.py, which imports nearly all of SkyPilot
(backends, jobs, serve, the API-server client, SQLAlchemy, FastAPI, aiohttp:
about 1,900 modules); a submodule (sky.task, sky.utils.schemas) cannot be
imported without it, and those submodules import most of the rest themselves.
So render's check pays for the whole package. Two costs of that are the
garbage collector's, not SkyPilot's, and are avoidable without changing what
is imported or checked:
  * during the import, collections triggered by the millions of allocations
    traverse an ever larger heap of objects that all stay alive (module
    globals, classes, functions): the collector is held off while importing;
  * at exit, the interpreter's final collection traverses all of them again
    (about 0.4 s on the CI machine): gc.freeze() moves the objects alive after
    the import into the permanent generation, which no collection visits, as
    the gc docs suggest for long-lived state (gc.freeze).
Frozen objects are never freed by the collector; they are SkyPilot's modules,
which live as long as the process anyway. Only the first import does this.

require_sky is the same import for the commands that need SkyPilot (render's
checks, launch, status, logs, down): a missing SkyPilot is a one-line error.
"""
from __future__ import annotations

import gc
import sys
from types import ModuleType


def import_sky() -> ModuleType:
    """The `sky` package, imported with the collector held off, then frozen (first call only).

    Raises ImportError as `import sky` does when SkyPilot is not installed.
    """
    if "sky" in sys.modules:
        import sky

        return sky
    enabled = gc.isenabled()
    gc.disable()
    try:
        import sky
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return sky


def require_sky(or_else: str = "") -> ModuleType:
    """import_sky for a command that needs SkyPilot: a missing SkyPilot is one line saying how to install it
    (or_else: another way out, e.g. "or --no-validate"). Every caller in the launch goes through here."""
    from skyrl_stack.errors import StackError

    try:
        return import_sky()
    except ImportError as exc:
        hint = "pip install 'skypilot[aws]'" + (f" ({or_else})" if or_else else "")
        raise StackError(f"SkyPilot is not installed: {exc}", hint=hint) from None
