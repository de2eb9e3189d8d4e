"""`invoke smoke` against real images in the real engine, and the gate that follows from it.

The rehearsal image passes its CPU tiers; an image derived from it with
deliberate defects (rsync removed, Ray's recorded version changed) fails with
those checks named, and the gate then refuses its digest.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.smoke import gate as smoke_gate
from skyrl_stack.smoke.runner import run_smoke
from tests.conftest import TEST_REPOSITORY

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
        image = container.commit(f"{TEST_REPOSITORY}-smoke-defect", uuid.uuid4().hex[:8], conf={"Cmd": ["/bin/bash"]})
    finally:
        container.remove(force=True)
    yield image.tags[0]
    client.images.remove(image.tags[0])  # by its one tag, made here (never by id: that takes every tag of it)


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
    with pytest.raises(StackError, match="smoke failed in ") as caught:
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
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.push import PASSWORD_ENV, USER_ENV, push_variant
    from skyrl_stack.image.records import BuildRecord

    with pytest.raises(StackError, match="smoke failed in "):
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


@contextlib.contextmanager
def derived_image(base_ref: str, script: str, name: str, changes: list[str] | None = None):
    """An image committed from a container of `base_ref` after `script` (offline: no BuildKit pull of the base
    by digest); removed when the block ends."""
    import docker

    client = docker.from_env()
    container = client.containers.run(base_ref, ["-c", script], entrypoint=["/bin/bash"], detach=True)
    try:
        assert container.wait()["StatusCode"] == 0, container.logs().decode()
        ref = f"{name}:{uuid.uuid4().hex[:8]}"
        subprocess.run(["docker", "commit", *[a for c in changes or [] for a in ("--change", c)],
                        "--change", 'CMD ["/bin/bash"]', container.id, ref],
                       check=True, capture_output=True)
    finally:
        container.remove(force=True)
    try:
        yield ref
    finally:
        subprocess.run(["docker", "rmi", "--force", ref], capture_output=True)


def _digest_of(ref: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def cpu_stand_in_gpu_image(rehearsal_image):
    """CPU stand-in for a GPU variant: the rehearsal image with the CUDA label that GPU builds carry
    (bake.labels sets io.skyrl-stack.cuda.version only for gpu variants). Its suite runs on the CPU;
    the gate must then hold it to the GPU tiers it cannot pass here."""
    with derived_image(rehearsal_image.ref, "true", f"{TEST_REPOSITORY}-smoke-gpu-stand-in",
                       ["LABEL io.skyrl-stack.cuda.version=12.8"]) as ref:
        yield ref


def test_gpu_image_with_gpus_requested_fails_loudly_on_a_host_without_them(cpu_stand_in_gpu_image, state_dir, tmp_path):
    """This Docker host has no NVIDIA runtime: the run must not quietly go ahead without GPUs."""
    with pytest.raises(StackError, match="this Docker host cannot give containers GPUs") as caught:
        run_smoke(image=cpu_stand_in_gpu_image, gpus="all", report_dir=str(tmp_path))
    assert "NVIDIA container toolkit" in caught.value.hint
    assert smoke_gate.load_runs(_digest_of(cpu_stand_in_gpu_image)) == []  # nothing ran, nothing recorded


def test_cpu_only_run_of_a_gpu_image_is_recorded_as_such(cpu_stand_in_gpu_image, state_dir, tmp_path, capsys):
    outcome = run_smoke(image=cpu_stand_in_gpu_image, gpus="none", report_dir=str(tmp_path))
    run = smoke_gate.load_runs(outcome.digest)[-1]
    assert (run["verdict"], run["gpu_image"], run["exit_code"], run["error"]) == ("cpu-only", True, 0, None)
    assert run["missing_tiers"] == ["gpu", "engine", "skyrl"]
    assert run["coverage"]["gpu"]["why"] == ["no GPU requested (--gpus none)"]
    assert run["coverage"]["environment"]["status"] == "passed"
    assert "moves no human tag" in capsys.readouterr().err
    assert not smoke_gate.decide(outcome.digest).human_tags


def test_manifest_is_held_against_the_hosts_pins_not_against_itself(rehearsal_image, state_dir, tmp_path):
    """An image whose pins.toml and manifest agree with each other (built from other pins) fails the manifest check:
    before, the container run compared the manifest with the image's own pins.toml and passed."""
    rewrite = (
        "cd /opt/skyrl-stack/skyrl_stack/image && sed -i 's/^port = 6479$/port = 6480/' pins.toml && "
        "python -c \"import json; from skyrl_stack.image.pins import load_pins; p='/opt/skyrl-stack/manifest.json'; "
        "m=json.load(open(p)); m['pins_digest']=load_pins().digest(); json.dump(m, open(p, 'w'))\"")
    with derived_image(rehearsal_image.ref, rewrite, f"{TEST_REPOSITORY}-smoke-other-pins") as ref:
        with pytest.raises(StackError, match="environment.manifest"):
            run_smoke(image=ref, gpus="none", tiers=["environment"], report_dir=str(tmp_path))
    status, detail = _statuses(json.loads((tmp_path / "smoke.json").read_text()))["environment.manifest"]
    assert status == "failed" and f"the {rehearsal_image.pins_digest} the host expects" in detail


def test_container_exit_code_must_agree_with_the_report(rehearsal_image, state_dir, tmp_path):
    """The suite writes a clean report, then its process exits 139 (as a crash at shutdown would)."""
    wrap = ("rm /usr/local/bin/skyrl-smoke && "
            "printf '#!/bin/bash\\n/opt/skyrl-stack/bin/skyrl-smoke \"$@\"\\nexit 139\\n' > /usr/local/bin/skyrl-smoke && "
            "chmod +x /usr/local/bin/skyrl-smoke")
    with derived_image(rehearsal_image.ref, wrap, f"{TEST_REPOSITORY}-smoke-exit-139") as ref:
        with pytest.raises(StackError, match="not trusted: the suite exited 139 but its report says 0 failed"):
            run_smoke(image=ref, gpus="none", tiers=["environment"], report_dir=str(tmp_path))
        assert json.loads((tmp_path / "smoke.json").read_text())["ok"] is True  # the report alone looked fine
        digest = _digest_of(ref)
        assert smoke_gate.load_runs(digest)[-1]["exit_code"] == 139
        with pytest.raises(StackError, match="the suite exited 139"):
            smoke_gate.require_passed(digest, action="push")


def test_cpu_checked_gpu_image_pushes_its_digest_but_human_tags_wait_for_a_gpu_run(
        cpu_stand_in_gpu_image, state_dir, tmp_path, registry, monkeypatch, capsys):
    """The chain the CI runs: CPU smoke -> push (digest + -cpu-checked tag) -> [GPU smoke] -> promote.

    The GPU run cannot happen here: its report is the CPU run's with the GPU tiers marked passed on one
    visible GPU (the narrowest stand-in: the gate reads only the recorded report). Everything else is real:
    the engine, the registry process, the registry-side tag move."""
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.promote import promote
    from skyrl_stack.image.push import PASSWORD_ENV, USER_ENV, content_tag, cpu_checked_tag, push_variant
    from skyrl_stack.image.records import BuildRecord, load_build_record

    outcome = run_smoke(image=cpu_stand_in_gpu_image, gpus="none", report_dir=str(tmp_path))
    digest, pins = outcome.digest, load_pins()
    human = {"rehearsal-ray2.48.0-py3.11-cpu", f"rehearsal-pins-{pins.digest()}", "rehearsal-latest"}
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, registry.password)

    def pushed_to(name: str, **options) -> None:
        BuildRecord(variant="rehearsal", repository=f"{registry.host}/{name}", digest=digest, tags=[],
                    pins_digest=pins.digest(), pins=pins.raw, source_date_epoch=pins.source_date_epoch,
                    base_image="n/a", built_at="n/a", build_seconds=0).save()
        push_variant("rehearsal", backoff_seconds=0.1, **options)

    pushed_to("gpu")  # no skip_smoke_gate: the digest goes, the human tags stay where they were
    assert set(registry.tags("gpu")) == {content_tag("rehearsal", digest), cpu_checked_tag("rehearsal", digest)}
    assert registry.manifest_digest("gpu", cpu_checked_tag("rehearsal", digest)) == digest
    pushed = load_build_record("rehearsal").pushed
    assert (pushed["human_tags"], pushed["missing_tiers"]) == (False, ["gpu", "engine", "skyrl"])
    assert "human tags NOT moved: tiers gpu, engine, skyrl did not pass on a GPU" in capsys.readouterr().err

    image = f"{registry.host}/gpu@{digest}"
    with pytest.raises(StackError, match=r"promote refused: .* CPU-checked only \(tiers gpu, engine, skyrl"):
        promote("rehearsal", image)
    assert human.isdisjoint(registry.tags("gpu"))

    pushed_to("gpu-overridden", skip_smoke_gate=True)  # skip_smoke_gate: visible in the output and the record
    assert human <= set(registry.tags("gpu-overridden"))
    assert "WARNING: gate overridden: push human tags of rehearsal goes ahead although" in capsys.readouterr().err
    (entry,) = json.loads(smoke_gate.gate_path(digest).read_text())["smoke_gate_skips"]
    assert entry["missing_tiers"] == ["gpu", "engine", "skyrl"]
    assert load_build_record("rehearsal").pushed["smoke_gate_skipped"] is True

    gpu_report = json.loads(json.dumps(outcome.report))
    for check in gpu_report["checks"]:
        if check["tier"] in smoke_gate.GPU_TIERS:
            check.update(status="passed", detail="stand-in for a GPU run")
    gpu_report.update(gpus="all", gpus_visible=1, counts={"passed": len(gpu_report["checks"]), "failed": 0, "skipped": 0})
    smoke_gate.record_run(digest, gpu_report, image=image, variant="rehearsal", all_tiers=True, gpu_image=True,
                          exit_code=0)
    moved = promote("rehearsal", image)
    assert {ref.rsplit(":", 1)[1] for ref in moved} == human
    for tag in human:
        assert registry.manifest_digest("gpu", tag) == digest  # the same manifest, not a new index


def test_build_push_smoke_tests_then_pushes_what_passed(rehearsal_image, state_dir, registry, monkeypatch):
    """`invoke build --push` (push.smoke_and_push): the smoke run is recorded against the digest, so the
    push that follows moves the human tags with no override. Without the run the gate refuses the push."""
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.push import PASSWORD_ENV, USER_ENV, content_tag, smoke_and_push
    from skyrl_stack.image.records import BuildRecord

    pins = load_pins()
    # As `invoke build` leaves it: the image tagged in the repository its record names.
    local = f"{registry.host}/built:local"
    subprocess.run(["docker", "tag", rehearsal_image.ref, local], check=True)
    BuildRecord(variant="rehearsal", repository=f"{registry.host}/built", digest=rehearsal_image.digest, tags=[local],
                pins_digest=pins.digest(), pins=pins.raw, source_date_epoch=pins.source_date_epoch,
                base_image="n/a", built_at="n/a", build_seconds=0).save()
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, registry.password)
    assert smoke_gate.load_runs(rehearsal_image.digest) == []
    (record,) = smoke_and_push(["rehearsal"])  # (the registry fixture removes the local tags)
    (run,) = smoke_gate.load_runs(rehearsal_image.digest)
    assert run["verdict"] == "passed"
    assert record.pushed["human_tags"] is True and record.pushed["smoke_gate_skipped"] is False
    assert set(registry.tags("built")) == {content_tag("rehearsal", rehearsal_image.digest), "rehearsal-latest",
                                           "rehearsal-ray2.48.0-py3.11-cpu", f"rehearsal-pins-{pins.digest()}"}
