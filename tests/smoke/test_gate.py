"""The smoke gate: which recorded runs let push/launch through, and --skip-smoke-gate (loud, recorded)."""
from __future__ import annotations

import json

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.smoke import gate as smoke_gate

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


def test_skip_smoke_gate_warns_loudly(state_dir, capsys):
    _record(_report(failed=1))
    assert smoke_gate.require_passed(DIGEST, skip_smoke_gate=True, action="push") is None
    assert "WARNING: gate overridden: push goes ahead although the last smoke run" in capsys.readouterr().err


def test_skip_smoke_gate_is_silent_when_the_gate_passes(state_dir, capsys):
    _record(_report())
    assert smoke_gate.require_passed(DIGEST, skip_smoke_gate=True)["passed"]
    assert "WARNING" not in capsys.readouterr().err


def test_bad_digest_is_rejected_before_anything(state_dir):
    with pytest.raises(StackError, match="not an image digest"):
        smoke_gate.require_passed("latest")
    assert not (state_dir / "smoke").exists()


def test_history_is_bounded(state_dir):
    for _ in range(smoke_gate.MAX_RUNS + 5):
        _record(_report())
    assert len(smoke_gate.load_runs(DIGEST)) == smoke_gate.MAX_RUNS


def test_skip_smoke_gate_lets_an_image_by_tag_through_naming_it(state_dir, capsys):
    """--allow-tag --skip-smoke-gate: no digest to look up, so skip_smoke_gate decides (loudly)."""
    image = "ghcr.io/me/skyrl-stack:vllm-latest"
    assert smoke_gate.require_passed(image, skip_smoke_gate=True, action="launch") is None
    err = capsys.readouterr().err
    assert f"WARNING: gate overridden: launch goes ahead with {image}, which is not pinned by digest" in err
    with pytest.raises(StackError, match="not an image digest"):  # without skip_smoke_gate it stays refused
        smoke_gate.require_passed(image, action="launch")
    assert not (state_dir / "smoke").exists()


# --------------------------------------------------------------------------- coverage

from hypothesis import given, strategies as st  # noqa: E402

from skyrl_stack.smoke.suite import TIERS  # noqa: E402

GPU_CHECKS = {"gpu": ["gpu.nvidia-smi", "gpu.bf16-matmul"], "engine": ["engine.generate"],
              "skyrl": ["skyrl.entrypoint", "skyrl.config"]}


def _suite_report(gpu_status: str = "skipped", why: str = "no GPU requested (--gpus none)", gpus_visible: int = 0,
                  failed: tuple[str, ...] = ()) -> dict:
    """A full-tier report of a GPU image: CPU tiers passed, the GPU tiers as given.

    gpu_status="passed" with gpus_visible>0 stands in for a run on a GPU machine (there is none here)."""
    checks = [{"name": f"{tier}.a", "tier": tier, "status": "passed", "detail": "ok"}
              for tier in ("environment", "cuda", "ray")]
    for names in GPU_CHECKS.values():
        checks += [{"name": n, "tier": n.split(".")[0], "status": gpu_status,
                    "detail": why if gpu_status == "skipped" else "ok"} for n in names]
    for check in checks:
        if check["name"] in failed:
            check["status"], check["detail"] = "failed", "broken"
    counts = {s: sum(c["status"] == s for c in checks) for s in ("passed", "failed", "skipped")}
    return {"ok": not counts["failed"], "counts": counts, "checks": checks, "tiers": list(TIERS),
            "gpus": "none" if not gpus_visible else "all", "gpus_visible": gpus_visible, "pins_digest": "p1"}


def _record_vllm(report, exit_code=None):
    return smoke_gate.record_run(DIGEST, report, image=f"repo@{DIGEST}", variant="vllm", all_tiers=True,
                                 exit_code=exit_code)


def test_cpu_only_run_of_a_gpu_variant_moves_no_human_tags_and_says_why(state_dir, capsys):
    _record_vllm(_suite_report())
    run = smoke_gate.load_runs(DIGEST)[-1]
    assert (run["verdict"], run["gpu_image"], run["missing_tiers"]) == ("cpu-only", True, ["gpu", "engine", "skyrl"])
    assert run["coverage"]["environment"]["status"] == "passed"
    assert run["coverage"]["gpu"] == {"passed": 0, "failed": 0, "skipped": 2, "status": "skipped",
                                      "why": ["no GPU requested (--gpus none)"]}
    decision = smoke_gate.decide(DIGEST, action="push human tags of vllm")
    assert (decision.human_tags, decision.missing_tiers, decision.smoke_gate_skipped) == (False, ["gpu", "engine", "skyrl"], False)
    assert "CPU-checked only" in capsys.readouterr().err
    assert smoke_gate.require_passed(DIGEST, action="launch")["verdict"] == "cpu-only"  # launch: no failure suffices


def test_skip_smoke_gate_on_a_cpu_only_run_names_the_missing_tiers_in_output_and_record(state_dir, capsys):
    _record_vllm(_suite_report())
    decision = smoke_gate.decide(DIGEST, skip_smoke_gate=True, action="push human tags of vllm")
    assert decision.human_tags and decision.smoke_gate_skipped
    err = capsys.readouterr().err
    assert "WARNING: gate overridden: push human tags of vllm goes ahead although" in err
    assert "without tiers gpu, engine, skyrl passing on a GPU" in err
    (entry,) = json.loads(smoke_gate.gate_path(DIGEST).read_text())["smoke_gate_skips"]
    assert entry["missing_tiers"] == ["gpu", "engine", "skyrl"] and entry["action"] == "push human tags of vllm"


def test_a_record_from_before_the_rename_keeps_its_skips_under_the_one_name(state_dir, capsys):
    """Records written before --skip-smoke-gate had one name kept the skipped gates under "overrides":
    the next skip is appended to them, under smoke_gate_skips, and the old key is gone."""
    _record(_report(failed=1))
    path = smoke_gate.gate_path(DIGEST)
    old = {"at": "2025-01-01T00:00:00Z", "action": "push", "missing_tiers": ["gpu"], "cause": "an old one"}
    path.write_text(json.dumps(dict(json.loads(path.read_text()), overrides=[old])))
    smoke_gate.decide(DIGEST, skip_smoke_gate=True, action="promote rehearsal")
    record = json.loads(path.read_text())
    assert "overrides" not in record
    assert [entry["action"] for entry in record["smoke_gate_skips"]] == ["push", "promote rehearsal"]
    assert len(record["runs"]) == 1


def test_gpu_tiers_passed_on_a_gpu_open_the_gate(state_dir):
    """A synthetic GPU run's report (no GPU here): the gate reads only the report."""
    _record_vllm(_suite_report("passed", gpus_visible=1))
    decision = smoke_gate.decide(DIGEST)
    assert decision.human_tags and decision.missing_tiers == [] and decision.run["verdict"] == "passed"


@pytest.mark.parametrize("why", ["no GPU visible", "not in this variant"])
def test_a_skipped_gpu_check_keeps_the_gate_closed_even_with_a_gpu(state_dir, why):
    report = _suite_report("passed", gpus_visible=1)
    report["checks"][3].update(status="skipped", detail=why)  # gpu.nvidia-smi
    _record_vllm(report)
    run = smoke_gate.load_runs(DIGEST)[-1]
    assert run["missing_tiers"] == ["gpu"] and run["coverage"]["gpu"]["status"] == "partial"
    assert not smoke_gate.decide(DIGEST).human_tags


def test_cpu_rerun_keeps_the_gpu_vouch_but_a_later_failure_blocks(state_dir):
    _record_vllm(_suite_report("passed", gpus_visible=2))
    _record_vllm(_suite_report())  # a CPU run after the GPU job
    assert smoke_gate.decide(DIGEST).human_tags
    _record_vllm(_suite_report(failed=("environment.a",)))
    with pytest.raises(StackError, match=r"failed \(environment.a\)"):
        smoke_gate.decide(DIGEST)


@pytest.mark.parametrize("exit_code", [139, 1, 2])
def test_an_exit_code_that_disagrees_with_the_report_is_a_failure(state_dir, exit_code):
    _record_vllm(_suite_report("passed", gpus_visible=1), exit_code=exit_code)
    run = smoke_gate.load_runs(DIGEST)[-1]
    assert not run["passed"] and run["error"].startswith(f"the suite exited {exit_code} but its report says 0 failed")
    with pytest.raises(StackError, match=f"failed \\(the suite exited {exit_code}"):
        smoke_gate.require_passed(DIGEST, action="push")


def test_a_failed_report_with_exit_0_is_a_disagreement_too(state_dir):
    _record_vllm(_suite_report(failed=("ray.a",)), exit_code=0)
    assert "expected exit 1" in smoke_gate.load_runs(DIGEST)[-1]["error"]


def test_rehearsal_is_not_held_to_gpu_tiers(state_dir):
    smoke_gate.record_run(DIGEST, _suite_report(), image="r", variant="rehearsal", all_tiers=True, exit_code=0)
    assert smoke_gate.decide(DIGEST).human_tags


_CHECK = st.fixed_dictionaries({"tier": st.sampled_from(TIERS), "status": st.sampled_from(["passed", "failed", "skipped"]),
                                "detail": st.sampled_from(["a", "b"])})


@given(st.lists(_CHECK, max_size=20), st.lists(st.sampled_from(TIERS), unique=True))
def test_tier_coverage_accounts_for_every_check(checks, chosen):
    checks = [dict(c, name=f"{c['tier']}.{i}") for i, c in enumerate(checks)]
    coverage = smoke_gate.tier_coverage({"checks": checks, "tiers": chosen})
    assert sum(t["passed"] + t["failed"] + t["skipped"] for t in coverage.values()) == len(checks)
    for tier, entry in coverage.items():
        mine = [c["status"] for c in checks if c["tier"] == tier]
        assert (entry["status"] == "passed") == (bool(mine) and set(mine) == {"passed"})
        assert (entry["status"] == "failed") == ("failed" in mine)
        assert (entry["status"] == "not-run") == (not mine and tier not in chosen)
        assert entry["why"] == sorted({c["detail"] for c in checks if c["tier"] == tier and c["status"] == "skipped"})
