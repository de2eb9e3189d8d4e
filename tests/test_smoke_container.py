"""`invoke smoke` against real images in the real engine, and the gate that follows from it.

The rehearsal image passes its CPU tiers; an image derived from it with
deliberate defects (rsync removed, Ray's recorded version changed) fails with
those checks named, and the gate then refuses its digest.
"""
from __future__ import annotations

import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from skyrl_stack import smoke_gate
from skyrl_stack.errors import StackError
from skyrl_stack.smoke_run import run_smoke

pytestmark = pytest.mark.container


def _statuses(report: dict) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}


@pytest.fixture(scope="module")
def defective_image(rehearsal_image):
    """The rehearsal image with rsync removed and Ray's installed version rewritten to 2.47.1.

    Made by committing a container (offline: BuildKit would ask the registry
    for the base image by digest).
    """
    import docker

    client = docker.from_env()
    damage = ("rm /usr/bin/rsync && sed -i 's/^Version: 2.48.0$/Version: 2.47.1/' "
              "/opt/skyrl/venv/lib/python3*/site-packages/ray-*.dist-info/METADATA")
    container = client.containers.run(rehearsal_image.ref, ["-c", damage], entrypoint=["/bin/bash"], detach=True)
    try:
        assert container.wait()["StatusCode"] == 0, container.logs().decode()
        image = container.commit("skyrl-stack-smoke-defect", uuid.uuid4().hex[:8], conf={"Cmd": ["/bin/bash"]})
    finally:
        container.remove(force=True)
    yield image.tags[0]
    client.images.remove(image.id, force=True)


def test_rehearsal_passes_cpu_tiers_and_opens_the_gate(rehearsal_image, state_dir, tmp_path, capsys):
    started = time.monotonic()
    outcome = run_smoke(image=rehearsal_image.ref, report_dir=str(tmp_path))
    wall = time.monotonic() - started
    with capsys.disabled():
        print(f"\nsmoke suite on the rehearsal image, container start included: {wall:.1f}s")

    assert outcome.digest == rehearsal_image.digest
    status = _statuses(outcome.report)
    cpu_checks = ["environment.python", "environment.manifest", "environment.pinned-packages",
                  "environment.manifest-packages", "environment.skypilot-prereqs", "environment.root-or-sudo",
                  "environment.ray-runtime-env-hook", "environment.login-shell", "cuda.libnuma",
                  "ray.head", "ray.cpu-task"]
    assert {name: status[name][0] for name in cpu_checks} == {name: "passed" for name in cpu_checks}
    for name in ("gpu.nvidia-smi", "gpu.bf16-matmul", "gpu.nccl-all-reduce", "gpu.flash-attn", "ray.gpu-task"):
        assert status[name] == ("skipped", "no GPU visible")
    for name in ("cuda.torch-cuda", "cuda.nvcc", "engine.generate", "skyrl.entrypoint", "skyrl.config", "skyrl.validate"):
        assert status[name] == ("skipped", "not in this variant")

    # The three reports agree with each other and with the summary.
    report = json.loads((tmp_path / "smoke.json").read_text())
    counts = report["counts"]
    assert counts == {"passed": len(cpu_checks), "failed": 0, "skipped": len(status) - len(cpu_checks)}
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in junit.iter("testcase")}
    assert set(cases) == set(status)
    assert int(junit.get("skipped")) == counts["skipped"] and int(junit.get("failures")) == 0
    for name, (state, detail) in status.items():
        skipped = cases[name].find("skipped")
        assert (skipped is not None) == (state == "skipped")
        if skipped is not None:
            assert skipped.get("message") == detail
    summary = (tmp_path / "summary.txt").read_text()
    assert f"OK: {counts['passed']} passed, 0 failed, {counts['skipped']} skipped" in summary
    assert "reports:" in capsys.readouterr().out  # the suite's own output streamed through

    run = smoke_gate.require_passed(rehearsal_image.digest, action="push")
    assert run["passed"] and run["image"] == rehearsal_image.ref


def test_defective_image_fails_with_the_checks_named_and_the_gate_refuses(defective_image, state_dir, tmp_path):
    with pytest.raises(StackError) as caught:
        run_smoke(image=defective_image, report_dir=str(tmp_path))
    message = caught.value.message
    for name in ("environment.pinned-packages", "environment.manifest-packages", "environment.skypilot-prereqs"):
        assert name in message

    status = _statuses(json.loads((tmp_path / "smoke.json").read_text()))
    assert status["environment.pinned-packages"] == ("failed", "drift from pins: ray 2.47.1 installed, pinned 2.48.0")
    assert "ray 2.48.0 -> 2.47.1" in status["environment.manifest-packages"][1]
    assert status["environment.skypilot-prereqs"][0] == "failed" and "rsync" in status["environment.skypilot-prereqs"][1]
    assert status["ray.head"][0] == "passed"  # only the defects fail, nothing else
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    failed = {case.get("name") for case in junit.iter("testcase") if case.find("failure") is not None}
    assert failed == {name for name, (state, _) in status.items() if state == "failed"}

    digest = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", defective_image],
                            capture_output=True, text=True, check=True).stdout.strip()
    with pytest.raises(StackError, match=r"push refused: the last smoke run of sha256:.* failed \(environment.pinned-packages"):
        smoke_gate.require_passed(digest, action="push")


def test_bad_options_fail_before_any_container(state_dir, tmp_path):
    with pytest.raises(StackError, match="exactly one of --variant or --image"):
        run_smoke(report_dir=str(tmp_path))
    with pytest.raises(StackError, match="--gpus takes all, none or a positive count"):
        run_smoke(image="x", gpus="lots")
    with pytest.raises(StackError, match="unknown tier"):
        run_smoke(image="x", tiers=["gpus"])
    with pytest.raises(StackError, match="not in an image"):
        run_smoke(image="x", host=True)
    assert list(tmp_path.iterdir()) == []


def test_push_refuses_to_move_tags_of_a_digest_whose_smoke_run_failed(defective_image, state_dir, tmp_path,
                                                                      registry, monkeypatch):
    """The whole chain: defective image -> failing smoke run -> `push` refuses; the registry stays empty."""
    from skyrl_stack.pins import load_pins
    from skyrl_stack.push import PASSWORD_ENV, USER_ENV, push_variant
    from skyrl_stack.records import BuildRecord

    with pytest.raises(StackError):
        run_smoke(image=defective_image, report_dir=str(tmp_path))
    digest = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", defective_image],
                            capture_output=True, text=True, check=True).stdout.strip()
    pins = load_pins()
    BuildRecord(variant="rehearsal", repository=f"{registry.host}/defect", digest=digest, tags=[],
                pins_digest=pins.digest(), pins=pins.raw, source_date_epoch=pins.source_date_epoch,
                base_image="n/a", built_at="n/a", build_seconds=0).save()
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, registry.password)
    with pytest.raises(StackError, match="refused: the last smoke run .* failed"):
        push_variant("rehearsal")
    assert registry.tags("defect") == []
