"""Ray tier: a head of our own on free ports reports the right CPUs and GPUs, and tasks run on it.

The head is started with `ray start --head --block` in its own process group
and torn down by signalling that group, never with `ray stop` (which would also
stop SkyPilot's Ray on a SkyPilot node). Every port is chosen free, so it never
collides with SkyPilot's Ray (6380, 8266, 52365) or the training cluster (6479).
"""
from __future__ import annotations

import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from skyrl_stack.smoke.gpu import free_port
from skyrl_stack.smoke.suite import Check, Fail, last_line

START_TIMEOUT_S = 90
TASK_TIMEOUT_S = 120
STARTED_MARK = "Ray runtime started"


def expected_cpus() -> int:
    """The CPUs Ray should detect: the machine's, capped by a cgroup v2 CPU quota (as Ray does)."""
    count = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return count


def ray_executable() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.access(beside, os.X_OK) else shutil.which("ray")


def import_ray(ctx):
    return ctx.import_promised("ray")


def start_head(ctx) -> tuple[str, subprocess.Popen]:
    executable = ray_executable()
    if executable is None:
        raise Fail("the `ray` command is not on PATH")
    temp_dir = tempfile.mkdtemp(prefix="smoke-ray-")  # short: Ray's socket paths must stay < 108 bytes
    port = free_port()
    command = [
        executable, "start", "--head", "--block", "--disable-usage-stats",
        f"--port={port}", f"--temp-dir={temp_dir}",
        "--include-dashboard=false",
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
    ]
    # Ray's client server (default port 10001) exists only with ray[client], which needs grpc.
    if importlib.util.find_spec("grpc") is not None:
        command.append(f"--ray-client-server-port={free_port()}")
    if ctx.gpus == "none":
        command.append("--num-gpus=0")
    log = open(os.path.join(temp_dir, "ray-start.log"), "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        _stop_group(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)

    ctx.cleanups.append(stop)
    ctx.cache["ray_log"] = log.name
    # Ray maps 127.0.0.1 to the node IP it advertises, so connecting there works on any network.
    return f"127.0.0.1:{port}", process


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the head's process group (gcs, raylet, workers), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # the group's other members exit after the leader


def check_head(ctx) -> str:
    ray = import_ray(ctx)
    address, process = start_head(ctx)
    deadline = time.monotonic() + START_TIMEOUT_S
    # ray.init retries an absent GCS forever: wait for `ray start` to say it is up.
    while STARTED_MARK not in _read(ctx.cache["ray_log"]):
        if process.poll() is not None:
            raise Fail(f"`ray start --head` exited with {process.returncode}: {last_line(_read(ctx.cache['ray_log']))}")
        if time.monotonic() > deadline:
            raise Fail(f"the Ray head at {address} did not start within {START_TIMEOUT_S}s")
        time.sleep(0.5)
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    ctx.cleanups.append(ray.shutdown)
    resources = {}
    while time.monotonic() < deadline:
        resources = ray.cluster_resources()
        if resources.get("CPU"):
            break
        time.sleep(0.5)
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    want_cpus, want_gpus = expected_cpus(), ctx.visible_gpus()
    if (cpus, gpus) != (want_cpus, want_gpus):
        raise Fail(f"Ray head reports {cpus} CPU / {gpus} GPU, expected {want_cpus} CPU / {want_gpus} GPU")
    ctx.cache["ray"] = ray
    return f"head at {address} (ray {ray.__version__}): {cpus} CPU, {gpus} GPU"


def _where_am_i() -> dict:
    import ray

    return {"pid": os.getpid(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _run_task(ctx, what: str, **resources) -> dict:
    ray = ctx.cache["ray"]
    task = ray.remote(**resources)(_where_am_i)
    try:
        return ray.get(task.remote(), timeout=TASK_TIMEOUT_S)
    except Exception as exc:
        raise Fail(f"{what} task did not run: {type(exc).__name__}: {last_line(exc)}") from None


def check_cpu_task(ctx) -> str:
    found = _run_task(ctx, "CPU", num_cpus=1)
    if found["pid"] == os.getpid():
        raise Fail("CPU task ran in the driver, not in a Ray worker")
    return f"ran in worker pid {found['pid']}"


def check_gpu_task(ctx) -> str:
    ctx.require_gpu()
    found = _run_task(ctx, "GPU", num_gpus=1)
    if not found["gpu_ids"] or not found["cuda_visible"]:
        raise Fail(f"GPU task ran without a GPU assigned (gpu_ids={found['gpu_ids']}, CUDA_VISIBLE_DEVICES={found['cuda_visible']})")
    return f"ran on GPU {','.join(found['gpu_ids'])} (CUDA_VISIBLE_DEVICES={found['cuda_visible']})"


_NEEDS_HEAD = ("ray.head",)
CHECKS = [
    Check("ray.head", check_head),
    Check("ray.cpu-task", check_cpu_task, requires=_NEEDS_HEAD),
    Check("ray.gpu-task", check_gpu_task, requires=_NEEDS_HEAD),
]
