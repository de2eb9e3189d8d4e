"""The smoke suite's machinery: checks, their outcomes, and the context they share.

A check is a function ``fn(ctx) -> str`` that returns a one-line detail when it
passes, raises :class:`Skip` when the image or machine lacks what it needs, and
raises :class:`Fail` (or anything else) with a one-line cause when it fails.
Checks run in a fixed order (tiers, then the order inside a tier) so that the
first failure explains the later ones; a check whose prerequisite did not pass
is skipped and names that prerequisite. Standard library only.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from skyrl_stack.errors import first_line

# Tiers in the order they run: each one assumes what the earlier ones checked.
TIERS = ("environment", "cuda", "gpu", "ray", "engine", "skyrl")

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class Skip(Exception):
    """The check does not apply here; the message says why (never counts as passed)."""


class Fail(Exception):
    """The check ran and found a problem; the message is the one-line cause."""


@dataclass(frozen=True)
class Check:
    name: str  # "<tier>.<what>", e.g. environment.skypilot-prereqs
    fn: Callable
    requires: tuple[str, ...] = ()  # checks that must have passed first

    @property
    def tier(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass
class Result:
    name: str
    tier: str
    status: str
    seconds: float
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "tier": self.tier, "status": self.status,
                "seconds": self.seconds, "detail": self.detail}


@dataclass
class Context:
    """What every check may ask: where it runs, what the variant promises, what is visible."""

    host: bool  # running on a machine, not inside one of our images
    gpus: str  # "all" | "none" | a count, as given on the command line
    pins: object | None = None  # skyrl_stack.image.pins.Pins, when loadable
    variant: object | None = None  # skyrl_stack.image.pins.Variant, when known
    manifest: dict | None = None
    manifest_error: str | None = None  # why there is no manifest
    # What the host running `invoke smoke` expects the image to hold (its build
    # record / pins.toml); None where nobody outside the image said.
    expected_pins_digest: str | None = None
    overrides: list[str] | None = None  # Hydra overrides of the training command
    results: dict[str, Result] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)  # facts one check finds and later ones reuse
    cleanups: list[Callable] = field(default_factory=list)  # run after the last check

    @property
    def expected_gpus(self) -> int | None:
        """The GPU count asked for: None with 'all' (whatever is visible), 0 with 'none'."""
        if self.gpus == "all":
            return None
        if self.gpus == "none":
            return 0
        return int(self.gpus)

    def visible_gpus(self) -> int:
        """GPUs this process can use, found without any Python GPU library."""
        if "visible_gpus" not in self.cache:
            self.cache["visible_gpus"] = 0 if self.gpus == "none" else count_visible_gpus()
        return self.cache["visible_gpus"]

    def require_gpu(self) -> None:
        if self.gpus == "none":
            raise Skip("no GPU requested (--gpus none)")
        if self.visible_gpus() == 0:
            raise Skip("no GPU visible")

    def require_variant(self) -> object:
        if self.variant is None:
            raise Skip("variant unknown (no manifest here; pass --variant)")
        return self.variant

    def expects(self, package: str) -> bool | None:
        """Whether the variant promises this package; None when the variant is unknown."""
        if self.variant is None:
            return None
        return package in self.variant.expect

    def import_promised(self, package: str, module: str | None = None):
        """Import a package the check needs: Skip where the variant does not promise it,
        Fail where it promises it but the import breaks."""
        if self.expects(package) is False:
            raise Skip("not in this variant")
        try:
            return importlib.import_module(module or package)
        except ImportError as exc:
            if self.expects(package):
                raise Fail(f"{package} does not import: {exc}") from None
            raise Skip(f"{package} not installed (variant unknown)") from None


def count_visible_gpus() -> int:
    """NVIDIA GPUs visible: `nvidia-smi -L`, else /dev/nvidiaN, narrowed by CUDA_VISIBLE_DEVICES."""
    found = 0
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=False).stdout
            found = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.TimeoutExpired):
            found = 0
    if not found and os.path.isdir("/dev"):
        found = sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia[0-9]+", name))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip() and e.strip() != "-1"]
        found = min(found, len(entries))
    return found


def joined(text: object, limit: int = 300) -> str:
    """All lines of a short multi-line message on one line."""
    return first_line(" ".join(line.strip() for line in str(text).splitlines() if line.strip()), limit)


def last_line(text: object, limit: int = 300) -> str:
    """The last meaningful line (where tracebacks put the cause)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return first_line(lines[-1] if lines else "", limit)


def run_checks(checks: list[Check], ctx: Context, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run checks in order; a check whose prerequisite did not pass is skipped naming it."""
    results = []
    try:
        for check in checks:
            if results and results[-1].tier != check.tier:
                _cleanup(ctx)  # each tier tears down what it started (e.g. the Ray head) before the next
            started = time.monotonic()
            blocked = _blocked_by(check, ctx)
            if blocked is not None:
                status, detail = SKIPPED, blocked
            else:
                try:
                    status, detail = PASSED, first_line(check.fn(ctx) or "ok")
                except Skip as exc:
                    status, detail = SKIPPED, first_line(exc)
                except Fail as exc:
                    status, detail = FAILED, first_line(exc)
                except Exception as exc:  # a crash in a check is a failure of that check, not of the suite
                    status, detail = FAILED, f"{type(exc).__name__}: {first_line(exc)}"
            result = Result(check.name, check.tier, status, round(time.monotonic() - started, 2), detail)
            ctx.results[check.name] = result
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        _cleanup(ctx)
    return results


def _cleanup(ctx: Context) -> None:
    while ctx.cleanups:
        try:
            ctx.cleanups.pop()()
        except Exception:  # cleanup must never hide the results
            pass


def _blocked_by(check: Check, ctx: Context) -> str | None:
    for name in check.requires:
        prior = ctx.results.get(name)
        if prior is None or prior.status == PASSED:
            continue  # not selected (another tier) or fine
        if prior.status == SKIPPED:
            # Same reason as the prerequisite ("no GPU visible"), so the table reads plainly.
            return prior.detail
        return f"blocked: {name} failed"
    return None
