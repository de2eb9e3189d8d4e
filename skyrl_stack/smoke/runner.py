"""`invoke smoke`: run the in-image smoke suite in a container as SkyPilot would, or here with --host.

In a container the run uses SkyPilot's `docker run` flags (launch/skypilot_container.py:
GPU device requests, host network, SkyPilot's /dev/shm size, SYS_ADMIN and
SYS_RESOURCE, /dev/fuse, its locale variables) and the task's host IPC, mounts the report
directory out, and records the outcome against the image digest (see
smoke/gate.py). `--host` runs the suite from this checkout on this machine (a GPU
box without Docker); that is no image, so nothing is recorded for the gate.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from skyrl_stack import engine
from skyrl_stack.errors import StackError, first_line
from skyrl_stack.image.bake import LABEL_PREFIX
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.records import load_build_record, workspace_write
from skyrl_stack.image.refs import image_digest, parse_reference
from skyrl_stack.launch import skypilot_container
from skyrl_stack.project import project_root, workspace
from skyrl_stack.reporter import step
from skyrl_stack.smoke import gate as smoke_gate
from skyrl_stack.smoke.suite import TIERS

REPORT_MOUNT = "/smoke-report"
OVERRIDES_NAME = "overrides.json"
TIMEOUT_S = 1800


@dataclass
class SmokeOutcome:
    report: dict  # the suite's smoke.json
    report_dir: Path
    digest: str | None  # None for --host runs
    gate_record: Path | None

    @property
    def passed(self) -> bool:
        return self.report["counts"]["failed"] == 0


def parse_options(gpus: str, tiers: list[str]) -> tuple[str, list[str]]:
    """Validate --gpus and --tier with the suite's own parsers (one definition of both)."""
    import argparse

    from skyrl_stack.smoke.main import parse_gpus, parse_tiers

    try:
        return parse_gpus(str(gpus)), parse_tiers(tiers)
    except argparse.ArgumentTypeError as exc:
        raise StackError(str(exc), hint="e.g. --gpus all --tier environment,ray") from None


def read_overrides(path: str | None) -> list[str] | None:
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read overrides file {path}: {exc}", hint="give a JSON list of key=value strings") from None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise StackError(f"overrides file {path} is not a JSON list of strings", hint='e.g. ["trainer.epochs=1"]')
    return data


def default_overrides(variant_name: str, image: str) -> list[str] | None:
    """The training command's overrides as `invoke render` writes them (None where no SkyRL)."""
    variant = load_pins().variant(variant_name)
    if not variant.has_skyrl:
        return None
    from skyrl_stack.launch.task_spec import TaskSpec, training_overrides

    # SkyRL's extra is named after its generator.backend (pins.Variant.skyrl_extra).
    return training_overrides(TaskSpec(variant=variant.name, image=image, backend=variant.skyrl_extra))


def suite_args(gpus: str, tiers: list[str], report: str, variant: str | None, overrides: str | None,
               pins_digest: str | None = None) -> list[str]:
    args = ["--gpus", gpus, "--tier", ",".join(tiers), "--report", report]
    if variant:
        args += ["--variant", variant]
    if overrides:
        args += ["--overrides-file", overrides]
    if pins_digest:
        args += ["--expect-pins-digest", pins_digest]
    return args


def run_options(gpus: str) -> dict:
    """docker-py keyword arguments for SkyPilot's `docker run` line (skypilot_container), plus the
    rendered task's `--ipc=host`. Unlike sky_container, the suite is the container's command
    (`/bin/bash -c`), so its exit code and output are the container's."""
    options = skypilot_container.run_kwargs(run_options=["--ipc=host"], gpus=None if gpus == "none" else
                                            -1 if gpus == "all" else int(gpus))
    # The suite is the main process, not kept alive by `-it`; SkyPilot's jobs get no terminal either.
    options.update(entrypoint=["/bin/bash", "-c"], tty=False, stdin_open=False)
    return options


def prepare_report_dir(directory: Path, overrides: list[str] | None) -> str | None:
    """Make the report directory, remove a previous run's reports (so a crashed run is never read
    as this one's) and write the overrides file; its name in the directory, None without overrides."""
    from skyrl_stack.smoke.report import JSON_NAME, JUNIT_NAME, SUMMARY_NAME

    with workspace_write(directory, hint="free space there or make it writable, or pass another --report folder"):
        directory.mkdir(parents=True, exist_ok=True)
        for name in (JSON_NAME, JUNIT_NAME, SUMMARY_NAME, OVERRIDES_NAME):
            (directory / name).unlink(missing_ok=True)
        if overrides is None:
            return None
        (directory / OVERRIDES_NAME).write_text(json.dumps(overrides, indent=2) + "\n")
    return OVERRIDES_NAME


def load_report(directory: Path, how: str) -> dict:
    path = directory / "smoke.json"
    if not path.exists():
        raise StackError(f"the smoke suite wrote no report ({how})", hint="its output above says why it stopped")
    return json.loads(path.read_text())


def run_smoke(
    *,
    variant: str | None = None,
    image: str | None = None,
    gpus: str = "all",
    tiers: list[str] | None = None,
    report_dir: str | None = None,
    host: bool = False,
    overrides_file: str | None = None,
    timeout_s: int = TIMEOUT_S,
    overrides: list[str] | None = None,
    record: bool = True,
    raise_on_failure: bool = True,
) -> SmokeOutcome:
    """Run the suite; StackError when a check failed (after writing reports and the gate record).

    `overrides` (instead of a file): the training command's exact overrides,
    e.g. those of the task `invoke launch` is about to launch. record=False
    keeps the run out of the smoke gate: a check of one task's plan says
    nothing about the image, so it must neither pass nor block the digest.
    """
    gpus, tiers = parse_options(gpus, tiers or [])
    if overrides is None:
        overrides = read_overrides(overrides_file)
    if variant:
        load_pins().variant(variant)  # unknown names fail here, before anything runs
    if host:
        if image:
            raise StackError("--host runs on this machine, not in an image", hint="drop --image, or drop --host")
        if overrides is None and variant:
            overrides = default_overrides(variant, f"host-run-of-{variant}")
        return _run_on_host(variant, gpus, tiers, Path(report_dir or workspace() / "reports/smoke/host"), overrides, timeout_s)
    if bool(variant) == bool(image):
        raise StackError("give exactly one of --variant or --image", hint="e.g. invoke smoke --variant rehearsal")
    if image and not image_digest(image):  # a bare sha256:<id> names a local image; anything else by the grammar
        parse_reference(image, what="--image")
    return _run_in_container(variant, image, gpus, tiers, report_dir, overrides, timeout_s, record, raise_on_failure)


def _run_on_host(variant, gpus, tiers, report_dir: Path, overrides, timeout_s) -> SmokeOutcome:
    overrides_name = prepare_report_dir(report_dir, overrides)
    command = [sys.executable, "-m", "skyrl_stack.smoke", "--host"] + suite_args(
        gpus, tiers, str(report_dir.resolve()), variant, str(report_dir / overrides_name) if overrides_name else None)
    step(f"running the smoke suite on this host: {shlex.join(command)}")
    try:
        result = subprocess.run(command, cwd=project_root(), timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise StackError(f"the smoke suite ran longer than {timeout_s}s", hint="its output above shows the check it hung in") from None
    outcome = SmokeOutcome(load_report(report_dir, f"exit {result.returncode}"), report_dir, None, None)
    step("host run: not recorded against any image digest (the gate needs a container run)")
    _raise_if_failed(outcome, "this host")
    return outcome


@dataclass
class Target:
    """The image a container run tests, and what the host expects of it."""

    ref: str
    digest: str
    variant: str | None  # from the build record, else the image's variant label
    pins_digest: str  # the pins the host expects inside (build record = this checkout's pins.toml)
    gpu: bool  # a GPU image: the pins say so, or the image carries a CUDA label


def _resolve_image(client, variant: str | None, image: str | None) -> Target:
    """The image to run, from a build record or an image reference."""
    from docker.errors import APIError, ImageNotFound

    pins = load_pins()
    if variant:
        record = load_build_record(variant)
        if record.pins_digest != pins.digest():
            raise StackError(f"the {variant} image was built from pins {record.pins_digest}, pins.toml is now {pins.digest()}",
                             hint=f"rebuild it: invoke build --variant {variant}")
        try:
            found = client.images.get(record.digest)
        except ImageNotFound:
            raise StackError(f"the {variant} image {record.ref} is not in the engine", hint=f"run: invoke build --variant {variant}") from None
        return Target(record.ref, record.digest, variant, record.pins_digest, _is_gpu_image(variant, found))
    try:
        found = client.images.get(image)
    except ImageNotFound:
        step(f"pulling {image}")
        try:
            found = client.images.pull(image)
        except APIError as exc:
            raise StackError(f"image {image} is neither local nor pullable: {first_line(exc)}",
                             hint="build it (invoke build) or log in to its registry") from None
    # The engine's containerd store names an image by its manifest digest, the one registries report.
    labelled = (found.labels or {}).get(f"{LABEL_PREFIX}.variant")
    return Target(image, found.id, labelled, pins.digest(), _is_gpu_image(labelled, found))


def _is_gpu_image(variant: str | None, image) -> bool:
    """The stricter of two sources: the pins' gpu flag, or a CUDA label on the image (bake.labels)."""
    return smoke_gate.is_gpu_variant(variant) or f"{LABEL_PREFIX}.cuda.version" in (image.labels or {})


def _run_in_container(variant, image, gpus, tiers, report_dir, overrides, timeout_s, record=True,
                      raise_on_failure=True) -> SmokeOutcome:
    client = engine.client()
    target = _resolve_image(client, variant, image)
    if overrides is None and target.variant:
        overrides = default_overrides(target.variant, target.ref)
    short_digest = target.digest.split(":", 1)[1][:12]
    directory = Path(report_dir or workspace() / "reports/smoke" / (variant or short_digest)).resolve()
    overrides_name = prepare_report_dir(directory, overrides)
    overrides_arg = f"{REPORT_MOUNT}/{overrides_name}" if overrides_name else None
    # The host's variant and pins digest go in, so the manifest is held against them, not itself.
    command = ["skyrl-smoke"] + suite_args(gpus, tiers, REPORT_MOUNT, target.variant, overrides_arg, target.pins_digest)
    step(f"running the smoke suite in {target.ref} (--gpus {gpus}{', a GPU image' if target.gpu else ''})")
    exit_code = _run_suite_container(client, target, shlex.join(command), gpus, directory, timeout_s)
    if record:
        return _record_for_gate(target, tiers, directory, exit_code)
    # A check of something other than the image (e.g. a launch's training plan): reports only, no gate record.
    outcome = SmokeOutcome(load_report(directory, f"container exit {exit_code}"), directory, target.digest, None)
    if raise_on_failure:
        _raise_if_failed(outcome, target.ref)
    return outcome


def _run_suite_container(client, target: Target, command: str, gpus: str, directory: Path, timeout_s: int) -> int:
    """Run the suite as the container's command, its output passed through; the container's exit code."""
    container = _start_container(client, target.ref, [command], gpus, target.gpu, dict(
        name=f"skyrl-smoke-{target.digest.split(':', 1)[1][:12]}-{os.getpid()}",
        labels={"io.skyrl-stack.smoke": "1"},
        environment={"SKYRL_SMOKE_REPORT_OWNER": f"{os.getuid()}:{os.getgid()}"},
        volumes={str(directory): {"bind": REPORT_MOUNT, "mode": "rw"}},
    ))
    # A hung check must not hang the caller: kill the container at the deadline.
    timer = threading.Timer(timeout_s, _kill, args=(container,))
    timer.start()
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        exit_code = container.wait()["StatusCode"]
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
        container.remove(force=True)
    if timed_out:
        raise StackError(f"the smoke suite ran longer than {timeout_s}s and was killed", hint="its output above shows the check it hung in")
    return exit_code


def _record_for_gate(target: Target, tiers: list[str], directory: Path, exit_code: int) -> SmokeOutcome:
    """Record the run against the image digest (smoke/gate.py), then raise if it failed or is not trusted."""
    digest = target.digest
    meta = dict(image=target.ref, variant=target.variant, all_tiers=list(tiers) == list(TIERS), gpu_image=target.gpu)
    try:
        report = load_report(directory, f"container exit {exit_code}")
    except StackError as exc:
        # A suite that died before its report still counts: the gate must not keep an older pass.
        path = smoke_gate.record_run(digest, {}, **meta, exit_code=exit_code, error=exc.message)
        step(f"recorded the failed run against {digest}: {path}")
        raise
    # The exit code must agree with the report (record_run marks a disagreement as a failure).
    path = smoke_gate.record_run(digest, report, **meta, exit_code=exit_code)
    outcome = SmokeOutcome(report, directory, digest, path)
    step(f"recorded against {digest}: {path}")
    run = smoke_gate.load_runs(digest)[-1]
    if run["error"]:
        raise StackError(f"smoke run of {target.ref} not trusted: {run['error']}",
                         hint=f"the suite's output above says why it exited so; details in {directory / 'summary.txt'}")
    _raise_if_failed(outcome, target.ref)
    if run["verdict"] == "cpu-only":
        step(f"smoke: CPU-only for a GPU image: tiers {', '.join(run['missing_tiers'])} did not pass on a GPU; "
             "`invoke push` sends the digest but moves no human tag")
    return outcome


def _start_container(client, ref: str, command: list[str], gpus: str, gpu_image: bool, fixed: dict):
    """Start with SkyPilot's flags, dropping only what this engine cannot grant (and saying so).

    A GPU image with GPUs requested fails when the engine cannot give them:
    running it without would only skip the tiers the run is for. A CPU image
    (rehearsal) with `--gpus all` runs without them, as SkyPilot does on CPU
    hosts; an explicit count is an error there.
    """
    from docker.errors import APIError

    options = run_options(gpus)
    while True:
        container = None
        try:
            environment = {**options.get("environment", {}), **fixed.get("environment", {})}  # SkyPilot's + ours
            container = client.containers.create(ref, command, **{**options, **fixed, "environment": environment})
            container.start()
            return container
        except APIError as exc:
            if container is not None:  # created, but the engine could not start it
                container.remove(force=True)
            message = str(exc.explanation or exc)
            if "CapAdd" in message and "cap_add" in options:
                step(f"this engine cannot grant {'/'.join(options.pop('cap_add'))}; running without them")
            elif "device driver" in message and "device_requests" in options and gpu_image:
                raise StackError(
                    f"--gpus {gpus} for the GPU image {ref}, but this Docker host cannot give containers GPUs: "
                    f"{first_line(message)}",
                    hint="install and configure the NVIDIA container toolkit (nvidia-ctk runtime configure "
                         "--runtime=docker, then restart dockerd), check `docker run --rm --gpus all IMAGE nvidia-smi`; "
                         "or run --gpus none for a CPU-only run, which the gate records as such") from None
            elif "device driver" in message and "device_requests" in options and gpus == "all":
                options.pop("device_requests")
                step("no GPU on this Docker host: running without GPUs (GPU checks will be skipped)")
            else:
                raise StackError(f"cannot start the smoke container: {first_line(message)}",
                                 hint="is the NVIDIA container toolkit installed for --gpus?" if "device" in message else None) from None


def _kill(container) -> None:
    try:
        container.kill()
    except Exception:  # already gone: nothing to stop
        pass


def _raise_if_failed(outcome: SmokeOutcome, where: str) -> None:
    if outcome.passed:
        n = outcome.report["counts"]
        step(f"smoke: no check failed ({n['passed']} passed, {n['skipped']} skipped); reports in {outcome.report_dir}")
        return
    failed = [c["name"] for c in outcome.report["checks"] if c["status"] == "failed"]
    raise StackError(
        f"smoke failed in {where}: {', '.join(failed)}",
        hint=f"the first failure explains the rest; details in {outcome.report_dir / 'summary.txt'}",
    )
