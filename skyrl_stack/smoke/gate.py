"""The smoke gate: smoke results recorded against image digests, judged by coverage.

Every container smoke run appends its outcome to ``<state dir>/smoke/<digest>.json``
(``sha256-<hex>.json``): per tier what ran, passed, failed or was skipped and why,
whether a GPU was visible, the suite's exit code, and a verdict. The gate judges a
digest by its decisive run (:func:`decisive_run`):

* a run with any failed check, or whose exit code disagrees with its report, is
  decisive (it blocks, even if it ran only some tiers);
* a passing run counts only if it ran every tier (a `--tier` subset proves less);
* skipped checks never count as passed. For a GPU image (the pins' ``gpu`` flag)
  the human tags move only when the gpu, engine and skyrl tiers passed on a GPU
  (:func:`decide`); a CPU-only run lets `push` send the digest with a
  ``-cpu-checked`` tag and no human tags.

``skip_smoke_gate`` (the commands' ``--skip-smoke-gate``) lets the action go
ahead anyway, prints ``WARNING: gate overridden`` with the tiers it goes without,
and records that in the digest's record (``smoke_gate_skips``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.records import state_dir, write_json_atomic
from skyrl_stack.image.refs import image_digest
from skyrl_stack.reporter import step
from skyrl_stack.smoke.suite import TIERS

# Older runs are dropped; the gate only needs the recent ones.
MAX_RUNS = 20
# What only a GPU can prove: these tiers must pass on a GPU before a GPU
# image's human tags move (a CPU run skips them all).
GPU_TIERS = ("gpu", "engine", "skyrl")
# Where a record keeps the actions that went ahead with --skip-smoke-gate.
SKIPS_KEY = "smoke_gate_skips"
_OLD_SKIPS_KEY = "overrides"


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
        return list(json.loads(path.read_text()).get("runs", []))
    except (ValueError, AttributeError, TypeError) as exc:
        raise StackError(f"smoke record {path} is unreadable: {exc}", hint="delete it and rerun: invoke smoke") from exc


def tier_coverage(report: dict) -> dict[str, dict]:
    """Per tier of the suite: what ran and how it ended, with the reasons for skips.

    status: ``passed`` (every check passed), ``partial`` (some passed, the rest
    skipped), ``skipped`` (nothing ran to a result), ``failed`` (any failure),
    ``not-run`` (the tier was not selected).
    """
    chosen = report.get("tiers") or []
    coverage = {}
    for tier in TIERS:
        checks = [c for c in report.get("checks", []) if (c.get("tier") or c["name"].split(".", 1)[0]) == tier]
        n = {status: sum(1 for c in checks if c["status"] == status) for status in ("passed", "failed", "skipped")}
        if tier not in chosen and not checks:
            status = "not-run"
        elif n["failed"]:
            status = "failed"
        elif n["passed"] and not n["skipped"]:
            status = "passed"
        elif n["passed"]:
            status = "partial"
        else:
            status = "skipped"
        why = sorted({c.get("detail") or "no reason given" for c in checks if c["status"] == "skipped"})
        coverage[tier] = dict(n, status=status, why=why)
    return coverage


def is_gpu_variant(variant: str | None) -> bool:
    """Whether the pins call this variant a GPU image; an unknown variant counts as one (the strict side)."""
    from skyrl_stack.image.pins import load_pins

    if not variant or variant not in load_pins().variant_names:
        return True
    return load_pins().variant(variant).gpu


def missing_gpu_tiers(coverage: dict[str, dict], gpus_visible: int | None) -> list[str]:
    """The GPU tiers that did not pass on a GPU (all of them when no GPU was visible)."""
    if not gpus_visible:
        return list(GPU_TIERS)
    return [tier for tier in GPU_TIERS if coverage[tier]["status"] != "passed"]


def record_run(digest: str, report: dict, *, image: str, variant: str | None, all_tiers: bool,
               gpu_image: bool | None = None, exit_code: int | None = None, error: str | None = None) -> Path:
    """Append one suite report (the suite's JSON) to the digest's record.

    `gpu_image` (default: the pins' flag for `variant`) makes the GPU tiers
    required; `exit_code` is the suite's, which must agree with its report
    (0 when no check failed, 1 when one did); `error` records a run that
    produced no usable report.
    """
    digest = normalise_digest(digest)
    counts = report.get("counts", {})
    if exit_code is not None and error is None:
        wanted = 1 if counts.get("failed", 0) else 0
        if exit_code != wanted:
            error = (f"the suite exited {exit_code} but its report says "
                     f"{counts.get('failed', 0)} failed (expected exit {wanted})")
    coverage = tier_coverage(report)
    gpu_image = is_gpu_variant(variant) if gpu_image is None else gpu_image
    # A run where nothing passed (everything skipped) proves nothing.
    passed = (error is None and bool(report.get("ok")) and counts.get("failed", 0) == 0
              and counts.get("passed", 0) > 0)
    missing = missing_gpu_tiers(coverage, report.get("gpus_visible")) if gpu_image else []
    if not passed:
        verdict = "failed"
    elif not all_tiers:
        verdict = "partial-tiers"
    elif missing:
        verdict = "cpu-only"
    else:
        verdict = "passed"
    run = {
        "recorded_at": _now(),
        "image": image,
        "variant": variant,
        "gpu_image": gpu_image,
        "pins_digest": report.get("pins_digest"),
        "all_tiers": all_tiers,
        "tiers": report.get("tiers", []),
        "gpus": report.get("gpus"),
        "gpus_visible": report.get("gpus_visible"),
        "exit_code": exit_code,
        "error": error,
        "passed": passed,
        # passed: the human tags may move; cpu-only: no failure, but the GPU tiers
        # named in missing_tiers did not pass on a GPU; partial-tiers: a --tier subset.
        "verdict": verdict,
        "missing_tiers": missing,
        "coverage": coverage,
        "counts": counts,
        "failed": [c["name"] for c in report.get("checks", []) if c["status"] == "failed"],
        "skipped": [c["name"] for c in report.get("checks", []) if c["status"] == "skipped"],
        "seconds": report.get("seconds"),
    }
    runs = (load_runs(digest) + [run])[-MAX_RUNS:]
    path = gate_path(digest)
    write_json_atomic(path, dict(_load_record(digest), digest=digest, runs=runs))
    return path


def decisive_run(digest: str) -> dict | None:
    """The run the gate judges by: the newest failing run, else the best full run since it.

    Failures always win (a later `--tier` run that fails blocks), and among
    passing runs since the last failure a GPU-covered one beats a CPU-only one,
    so a CPU rerun after the GPU job does not take the human tags' vouch away.
    """
    best = None
    for run in reversed(load_runs(digest)):
        if not run["passed"]:
            return run if best is None else best
        if run["all_tiers"] and (best is None or (_verdict(best) != "passed" and _verdict(run) == "passed")):
            best = run
    return best


@dataclass
class GateDecision:
    """What the gate allows for one digest: the run it judged by, and whether human tags may move."""

    digest: str
    run: dict | None
    human_tags: bool  # the digest may carry the human tags (descriptive, pins, -latest)
    missing_tiers: list[str] = field(default_factory=list)  # GPU tiers not passed on a GPU
    smoke_gate_skipped: bool = False  # allowed only because skip_smoke_gate was given


def decide(digest: str, skip_smoke_gate: bool = False, action: str = "this action") -> GateDecision:
    """The gate for moving human tags: StackError unless a full run passed.

    * no run, or a failing one: refused (skip_smoke_gate: loud warning, recorded);
    * a CPU-only run of a GPU image: allowed for the digest, not for the human
      tags (``human_tags=False``, the missing tiers named), unless skip_smoke_gate,
      which is printed and recorded with the tiers it goes without;
    * a run where the gpu, engine and skyrl tiers passed on a GPU: allowed.
    """
    try:
        digest = normalise_digest(digest)
    except StackError:
        if not skip_smoke_gate:
            raise
        _warn(f"{action} goes ahead with {digest}, which is not pinned by digest, so no smoke run can vouch for it")
        return GateDecision(digest, None, True, smoke_gate_skipped=True)
    run = decisive_run(digest)
    if run is not None and run["passed"]:
        missing = run.get("missing_tiers", [])
        if not missing:
            skipped = f", {len(run['skipped'])} checks skipped" if run.get("skipped") else ""
            step(f"smoke gate: {digest} passed on {run['recorded_at']} (--gpus {run.get('gpus')}{skipped})")
            return GateDecision(digest, run, True)
        cause = (f"the gpu-image run of {run['recorded_at']} passed without tiers {', '.join(missing)} "
                 f"passing on a GPU ({_reasons(run, missing)})")
        if skip_smoke_gate:
            _warn(f"{action} goes ahead although {cause}")
            record_skipped_gate(digest, action, missing, cause)
            return GateDecision(digest, run, True, missing, smoke_gate_skipped=True)
        step(f"smoke gate: {digest} is CPU-checked only: {cause}")
        return GateDecision(digest, run, False, missing)
    if run is None:
        cause = f"no smoke run of all tiers recorded for {digest}"
    else:
        cause = f"the last smoke run of {digest} failed ({', '.join(run['failed']) or run.get('error') or 'suite error'})"
    if skip_smoke_gate:
        _warn(f"{action} goes ahead although {cause}")
        record_skipped_gate(digest, action, list(TIERS), cause)
        return GateDecision(digest, run, True, list(TIERS), smoke_gate_skipped=True)
    raise StackError(
        f"{action} refused: {cause}",
        hint="run `invoke smoke --variant V` (or --image REF) and fix what fails; "
        "--skip-smoke-gate goes ahead without it (said loudly, recorded)",
    )


def require_passed(digest: str, skip_smoke_gate: bool = False, action: str = "this action") -> dict | None:
    """Raise StackError unless `digest` has a run with no failure; return that run.

    Used by cloud `launch`: a CPU-only run lets it through (launching on GPUs
    is how such an image meets one) and says which tiers it lacks. With
    skip_smoke_gate a missing or failed run only prints
    ``WARNING: gate overridden: ...`` to stderr and returns None; so does an
    image given by tag (--allow-tag), which no recorded run can vouch for.
    """
    decision = decide(digest, skip_smoke_gate=skip_smoke_gate, action=action)
    if decision.run is None or not decision.run["passed"]:
        return None
    return decision.run


def record_skipped_gate(digest: str, action: str, missing_tiers: list[str], cause: str) -> Path:
    """Keep a skipped gate in the digest's record, naming the tiers the action went without."""
    record = _load_record(digest)
    skips = record.get(SKIPS_KEY, []) + [
        {"at": _now(), "action": action, "missing_tiers": missing_tiers, "cause": cause}]
    path = gate_path(digest)
    write_json_atomic(path, dict(record, digest=normalise_digest(digest), runs=record.get("runs", []),
                                 **{SKIPS_KEY: skips[-MAX_RUNS:]}))
    return path


def _load_record(digest: str) -> dict:
    path = gate_path(digest)
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise StackError(f"smoke record {path} is unreadable: {exc}", hint="delete it and rerun: invoke smoke") from exc
    # Records written before the rename kept the skips under "overrides": read them under the one name.
    if _OLD_SKIPS_KEY in record:
        record[SKIPS_KEY] = record.pop(_OLD_SKIPS_KEY) + record.get(SKIPS_KEY, [])
    return record


def _verdict(run: dict) -> str:
    # Records written before coverage existed: a full passing run counted as passed.
    return run.get("verdict") or ("passed" if run["passed"] and run["all_tiers"] else "failed")


def _reasons(run: dict, tiers: list[str]) -> str:
    coverage = run.get("coverage") or {}
    parts = []
    for tier in tiers:
        entry = coverage.get(tier, {})
        why = "; ".join(entry.get("why", [])) or ("no GPU visible" if not run.get("gpus_visible") else "")
        parts.append(f"{tier} {entry.get('status', 'not-run')}" + (f": {why}" if why else ""))
    return ", ".join(parts)


def _warn(message: str) -> None:
    print(f"WARNING: gate overridden: {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
