"""The smoke gate: which recorded runs let push/launch through, and the loud override."""
from __future__ import annotations

import pytest

from skyrl_stack import smoke_gate
from skyrl_stack.errors import StackError

DIGEST = "sha256:" + "ab" * 32


def _report(failed: int = 0, passed: int = 5, skipped: int = 3) -> dict:
    checks = [{"name": f"t.fail{i}", "status": "failed"} for i in range(failed)]
    checks += [{"name": f"t.skip{i}", "status": "skipped"} for i in range(skipped)]
    return {"ok": failed == 0, "counts": {"passed": passed, "failed": failed, "skipped": skipped},
            "checks": checks, "tiers": ["environment"], "gpus": "all", "gpus_visible": 0, "seconds": 1.0}


def _record(report, all_tiers=True):
    return smoke_gate.record_run(DIGEST, report, image=f"repo@{DIGEST}", variant="rehearsal", all_tiers=all_tiers)


def test_no_run_refuses(state_dir):
    with pytest.raises(StackError, match=r"push refused: no smoke run of all tiers recorded"):
        smoke_gate.require_passed(DIGEST, action="push")


def test_passing_full_run_lets_through(state_dir):
    path = _record(_report())
    assert path == state_dir / "smoke" / ("sha256-" + "ab" * 32 + ".json")
    run = smoke_gate.require_passed(f"127.0.0.1:5000/x@{DIGEST}", action="push")
    assert run["passed"] and run["skipped"] == ["t.skip0", "t.skip1", "t.skip2"]


def test_later_failure_blocks_and_names_checks(state_dir):
    _record(_report())
    _record(_report(failed=2), all_tiers=False)  # even a partial run that fails blocks
    with pytest.raises(StackError, match=r"launch refused: the last smoke run of .* failed \(t.fail0, t.fail1\)"):
        smoke_gate.require_passed(DIGEST, action="launch")


def test_partial_passing_run_does_not_count(state_dir):
    _record(_report(), all_tiers=False)
    with pytest.raises(StackError, match="no smoke run of all tiers"):
        smoke_gate.require_passed(DIGEST)
    _record(_report(), all_tiers=True)
    _record(_report(), all_tiers=False)  # a later partial pass keeps the full pass decisive
    assert smoke_gate.require_passed(DIGEST)["all_tiers"] is True


def test_everything_skipped_is_not_a_pass(state_dir):
    _record(_report(passed=0, skipped=10))
    with pytest.raises(StackError, match="refused: "):
        smoke_gate.require_passed(DIGEST)


def test_override_warns_loudly(state_dir, capsys):
    _record(_report(failed=1))
    assert smoke_gate.require_passed(DIGEST, override=True, action="push") is None
    assert "WARNING: gate overridden: push goes ahead although the last smoke run" in capsys.readouterr().err


def test_override_is_silent_when_the_gate_passes(state_dir, capsys):
    _record(_report())
    assert smoke_gate.require_passed(DIGEST, override=True)["passed"]
    assert "WARNING" not in capsys.readouterr().err


def test_bad_digest_is_rejected_before_anything(state_dir):
    with pytest.raises(StackError, match="not an image digest"):
        smoke_gate.require_passed("latest")
    assert not (state_dir / "smoke").exists()


def test_history_is_bounded(state_dir):
    for _ in range(smoke_gate.MAX_RUNS + 5):
        _record(_report())
    assert len(smoke_gate.load_runs(DIGEST)) == smoke_gate.MAX_RUNS


def test_override_lets_an_image_by_tag_through_naming_it(state_dir, capsys):
    """--allow-tag --skip-smoke-gate: no digest to look up, so the override decides (loudly)."""
    image = "ghcr.io/me/skyrl-stack:vllm-latest"
    assert smoke_gate.require_passed(image, override=True, action="launch") is None
    err = capsys.readouterr().err
    assert f"WARNING: gate overridden: launch goes ahead with {image}, which is not pinned by digest" in err
    with pytest.raises(StackError, match="not an image digest"):  # without the override it stays refused
        smoke_gate.require_passed(image, action="launch")
    assert not (state_dir / "smoke").exists()
