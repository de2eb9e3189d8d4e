"""The smoke gate: smoke results recorded against image digests, and the check push/launch make.

Every container smoke run appends its outcome to ``<state dir>/smoke/<digest>.json``
(``sha256-<hex>.json``). `invoke push` (before moving human tags) and `invoke launch`
to a cloud call :func:`require_passed`, which refuses a digest unless its most
recent decisive run passed:

* a run with any failed check is decisive (it blocks, even if it ran only some tiers);
* a passing run is decisive only if it ran every tier (a `--tier` subset proves less);
* skipped checks never count as passed, but do not block (e.g. GPU checks on a CPU machine);
  the record says how many were skipped, so the message shows what was not covered.

``override=True`` lets the action go ahead anyway and prints a loud warning.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack.cli import step
from skyrl_stack.errors import StackError
from skyrl_stack.records import state_dir, write_json_atomic
from skyrl_stack.refs import image_digest

# Older runs are dropped; the gate only needs the recent ones.
MAX_RUNS = 20


def normalise_digest(digest: str) -> str:
    """'sha256:<hex>' from a digest or a 'repo@sha256:<hex>' reference."""
    value = image_digest(digest)
    if value is None:
        raise StackError(
            f"not an image digest: {digest!r}",
            hint="pass sha256:<64 hex digits> or repository@sha256:<...> (see the build record)",
        )
    return value


def gate_path(digest: str) -> Path:
    return state_dir() / "smoke" / (normalise_digest(digest).replace(":", "-") + ".json")


def load_runs(digest: str) -> list[dict]:
    """Recorded smoke runs for this digest, oldest first (empty when none)."""
    path = gate_path(digest)
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["runs"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"smoke record {path} is unreadable: {exc}", hint="delete it and rerun: invoke smoke") from exc


def record_run(digest: str, report: dict, *, image: str, variant: str | None, all_tiers: bool) -> Path:
    """Append one suite report (the suite's JSON) to the digest's record."""
    digest = normalise_digest(digest)
    counts = report.get("counts", {})
    run = {
        "recorded_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image": image,
        "variant": variant,
        "all_tiers": all_tiers,
        "tiers": report.get("tiers", []),
        "gpus": report.get("gpus"),
        "gpus_visible": report.get("gpus_visible"),
        # A run where nothing passed (everything skipped) proves nothing.
        "passed": bool(report.get("ok")) and counts.get("failed", 0) == 0 and counts.get("passed", 0) > 0,
        "counts": counts,
        "failed": [c["name"] for c in report.get("checks", []) if c["status"] == "failed"],
        "skipped": [c["name"] for c in report.get("checks", []) if c["status"] == "skipped"],
        "seconds": report.get("seconds"),
    }
    runs = (load_runs(digest) + [run])[-MAX_RUNS:]
    path = gate_path(digest)
    write_json_atomic(path, {"digest": digest, "runs": runs})
    return path


def decisive_run(digest: str) -> dict | None:
    """The run the gate judges by: the newest failing run or full passing run."""
    for run in reversed(load_runs(digest)):
        if not run["passed"] or run["all_tiers"]:
            return run
    return None


def require_passed(digest: str, override: bool = False, action: str = "this action") -> dict | None:
    """Raise StackError unless `digest` has a passing smoke run; return that run.

    With override=True a missing or failed run only prints
    ``WARNING: gate overridden: ...`` to stderr and returns None; so does an
    image given by tag (--allow-tag), which no recorded run can vouch for.
    """
    try:
        digest = normalise_digest(digest)
    except StackError:
        if not override:
            raise
        print(f"WARNING: gate overridden: {action} goes ahead with {digest}, which is not pinned by digest, "
              "so no smoke run can vouch for it", file=sys.stderr, flush=True)
        return None
    run = decisive_run(digest)
    if run is not None and run["passed"]:
        skipped = f", {len(run['skipped'])} checks skipped" if run.get("skipped") else ""
        step(f"smoke gate: {digest} passed on {run['recorded_at']} (--gpus {run.get('gpus')}{skipped})")
        return run
    if run is None:
        cause = f"no smoke run of all tiers recorded for {digest}"
    else:
        cause = f"the last smoke run of {digest} failed ({', '.join(run['failed']) or 'suite error'})"
    if override:
        print(f"WARNING: gate overridden: {action} goes ahead although {cause}", file=sys.stderr, flush=True)
        return None
    raise StackError(
        f"{action} refused: {cause}",
        hint="run `invoke smoke --variant V` (or --image REF) and fix what fails; "
        "an explicit override flag of the command skips this gate",
    )
