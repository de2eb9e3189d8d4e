"""`invoke launch --cloud local`: run a rendered task in N local containers, the way SkyPilot would.

Each node is a container of the task's image, started with SkyPilot's own
`docker run` flags, on a private Docker network. The task's `setup:` (if any)
and then `run:` execute inside every node at once, with the SKYPILOT_*
variables SkyPilot sets, and each node's output is streamed with a node
prefix. Containers and the network are removed at the end; the exit code is
the head's, as with `sky launch`.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from skyrl_stack.cli import step
from skyrl_stack.errors import StackError

LABEL = "skyrl-stack.local-cluster"
# Memory the engine must have per local node. Measured: a rehearsal node with
# its Ray head up and idle takes ~240 MiB (docker stats); the job's Ray tasks
# and the smoke-sized model take more, so a node is budgeted 1 GiB.
NODE_MEMORY_BYTES = 2**30


@dataclass
class LocalRun:
    """What to run: the parts of a SkyPilot task the local cluster honours."""

    image: str
    nodes: int
    gpus_per_node: int
    run: str
    setup: str | None = None
    envs: dict = field(default_factory=dict)
    run_options: list = field(default_factory=list)
    volumes: dict = field(default_factory=dict)  # host path -> {"bind": ..., "mode": ...}
    name: str = "skyrl-local"
    gpu_devices: bool = False  # pass the host's GPUs, as SkyPilot's `--gpus all` on GPU hosts


def from_task(config: dict, nodes: int, gpus_per_node: int, image: str, name: str, env_overrides: dict | None = None,
              gpu_devices: bool = False) -> LocalRun:
    """A LocalRun from a rendered task dict. Secrets come from this shell's environment, if set."""
    envs = {k: str(v) for k, v in (config.get("envs") or {}).items()}
    for key, value in (config.get("secrets") or {}).items():
        value = os.environ.get(key, value)
        if value is not None:
            envs[key] = str(value)
    envs.update(env_overrides or {})
    return LocalRun(
        image=image,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        run=config["run"],
        setup=config.get("setup"),
        envs=envs,
        run_options=list(((config.get("config") or {}).get("docker") or {}).get("run_options") or []),
        name=name,
        gpu_devices=gpu_devices,
    )


def docker_run_kwargs(run_options: list[str]) -> dict:
    """Translate the task's `config.docker.run_options` into docker SDK arguments."""
    from docker.types import Ulimit

    kwargs: dict = {}
    for option in run_options:
        flag, _, value = option.replace(" ", "=", 1).partition("=")
        if flag == "--ipc":
            kwargs["ipc_mode"] = value
        elif flag == "--shm-size":
            kwargs["shm_size"] = value.strip('"')
        elif flag == "--ulimit":
            name, _, limits = value.partition("=")
            soft, _, hard = limits.partition(":")
            kwargs.setdefault("ulimits", []).append(Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))
        else:
            raise StackError(f"the local cluster does not support docker run option {option!r}", hint="remove it from config.docker.run_options")
    return kwargs


def skypilot_container_kwargs() -> dict:
    """SkyPilot's `docker run` flags for sky_container (sky/provision/docker_utils.py).

    --cap-add=SYS_RESOURCE is left out: kernels whose capability bounding set
    lacks it (such as CI machines) refuse the container with "invalid CapAdd".
    /dev/fuse is passed only where the host has it.
    """
    kwargs = {
        "entrypoint": "/bin/bash",
        "tty": True,
        "stdin_open": True,
        "cap_add": ["SYS_ADMIN"],
        "security_opt": ["apparmor:unconfined"],
    }
    if os.path.exists("/dev/fuse"):
        kwargs["devices"] = ["/dev/fuse:/dev/fuse:rwm"]
    return kwargs


def node_env(job: LocalRun, rank: int, ips: list[str], task_id: str) -> dict:
    """The variables SkyPilot sets for a task on each node (sky/skylet/constants.py)."""
    env = dict(job.envs)
    env.update({
        "SKYPILOT_NODE_RANK": str(rank),
        "SKYPILOT_NODE_IPS": "\n".join(ips),  # head first
        "SKYPILOT_NUM_NODES": str(job.nodes),
        "SKYPILOT_NUM_GPUS_PER_NODE": str(job.gpus_per_node),
        "SKYPILOT_TASK_ID": task_id,
        "SKYPILOT_CLUSTER_INFO": f'{{"cluster_name": "{job.name}", "cloud": "local", "region": null, "zone": null}}',
    })
    return env


class _Printer:
    """Line-prefixed output from several nodes without interleaving within a line."""

    def __init__(self, stream=None):
        self.lock = threading.Lock()
        self.stream = stream or sys.stdout

    def emit(self, prefix: str, line: str) -> None:
        with self.lock:
            self.stream.write(f"{prefix} {line}\n")
            self.stream.flush()


def _exec(api, container_id: str, script: str, env: dict, prefix: str, printer: _Printer) -> int:
    exec_id = api.exec_create(container_id, ["/bin/bash", "-c", script], environment=env, tty=False)["Id"]
    pending = b""
    for chunk in api.exec_start(exec_id, stream=True, demux=False):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            printer.emit(prefix, line.decode(errors="replace").rstrip("\r"))
    if pending:
        printer.emit(prefix, pending.decode(errors="replace"))
    return api.exec_inspect(exec_id)["ExitCode"]


def _on_all_nodes(api, containers, script: str, envs: list[dict], printer: _Printer, grace: float | None) -> list[int | None]:
    """Run `script` on every node at once. The head governs, as in a SkyPilot job:
    once it has exited, workers get `grace` seconds (None: no limit), then count as cancelled (None)."""
    codes: list[int | None] = [None] * len(containers)

    def work(rank):
        try:
            codes[rank] = _exec(api, containers[rank].id, script, envs[rank], f"(node{rank})", printer)
        except Exception as exc:  # a node that vanished (killed) counts as failed, not as a crash here
            printer.emit(f"(node{rank})", f"[local cluster] node lost: {exc}")
            codes[rank] = 137

    threads = [threading.Thread(target=work, args=(rank,), daemon=True) for rank in range(len(containers))]
    for thread in threads:
        thread.start()
    while threads[0].is_alive():
        threads[0].join(0.2)  # short waits keep Ctrl-C / SIGTERM responsive
    deadline = None if grace is None else time.monotonic() + grace
    for thread in threads[1:]:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return list(codes)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(job: LocalRun, stream=None, worker_grace: float = 10.0) -> int:
    """Run the job on a fresh local cluster; returns the head node's exit code."""
    from docker.errors import DockerException, ImageNotFound

    from skyrl_stack.engine import client

    if job.nodes < 1:
        raise StackError(f"bad --nodes {job.nodes}", hint="use 1 or more nodes")
    docker = client()
    check_capacity(docker, job.nodes)
    try:
        docker.images.get(job.image)
    except ImageNotFound:
        raise StackError(f"image {job.image} is not in the local Docker engine", hint="build it first: invoke build --variant ...") from None
    run_kwargs = docker_run_kwargs(job.run_options)
    if job.gpu_devices:
        from docker.types import DeviceRequest

        run_kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    printer = _Printer(stream)
    suffix = secrets.token_hex(3)
    cluster = f"{job.name}-{suffix}"
    task_id = f"sky-{time.strftime('%Y-%m-%d-%H-%M-%S')}_{job.name}_1"
    network = None
    containers = []
    # A TERM (e.g. CI timeout) must still remove the containers and network.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        step(f"local cluster {cluster}: {job.nodes} node(s) of {job.image}")
        network = docker.networks.create(cluster, driver="bridge", labels={LABEL: cluster})
        for rank in range(job.nodes):
            # create, record, then start: a container that fails to start is still removed below.
            containers.append(docker.containers.create(
                job.image,
                name=f"{cluster}-node{rank}",
                hostname=f"node{rank}",
                network=network.name,
                labels={LABEL: cluster},
                volumes=job.volumes or None,
                **skypilot_container_kwargs(),
                **run_kwargs,
            ))
            containers[-1].start()
        ips = []
        for container in containers:
            container.reload()
            ips.append(container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])
        envs = [node_env(job, rank, ips, task_id) for rank in range(job.nodes)]
        if job.setup:
            step("setup on every node")
            codes = _on_all_nodes(docker.api, containers, job.setup, envs, printer, grace=None)
            if any(codes):
                failed = [rank for rank, code in enumerate(codes) if code]
                raise StackError(f"setup failed on node(s) {failed} (exit codes {codes})", hint="see the (nodeN) lines above")
        step("run on every node")
        codes = _on_all_nodes(docker.api, containers, job.run, envs, printer, grace=worker_grace)
        for rank, code in enumerate(codes):
            state = "still running: cancelled with the cluster" if code is None else f"exited with code {code}"
            printer.emit(f"(node{rank})", f"[local cluster] {state}")
        return codes[0]
    except DockerException as exc:
        raise StackError(f"local cluster failed: {exc}", hint="check `docker info` and the image") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for container in containers:
            try:
                container.remove(force=True)
            except DockerException:
                pass
        if network is not None:
            try:
                network.remove()
            except DockerException:
                pass


def max_local_nodes(docker) -> int:
    """How many nodes this engine can host: its memory over NODE_MEMORY_BYTES (at least 1)."""
    return max(1, int(docker.info()["MemTotal"]) // NODE_MEMORY_BYTES)


def check_capacity(docker, nodes: int) -> None:
    """Refuse, before any container exists, a cluster the engine cannot hold in memory."""
    capacity = max_local_nodes(docker)
    if nodes > capacity:
        memory = int(docker.info()["MemTotal"]) / 2**30
        raise StackError(
            f"--nodes {nodes} is more than this Docker engine can host: {capacity} node(s) "
            f"({memory:.1f} GiB at {NODE_MEMORY_BYTES / 2**30:.0f} GiB per node)",
            hint=f"use --nodes {capacity} or fewer locally; larger clusters go to a cloud (--cloud aws ...)",
        )


def cleanup_leftovers() -> int:
    """Remove containers/networks of local clusters whose run was killed (e.g. SIGKILL)."""
    docker = client_or_none()
    if docker is None:
        return 0
    removed = 0
    for container in docker.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True)
        removed += 1
    for network in docker.networks.list(filters={"label": LABEL}):
        network.remove()
    return removed


def client_or_none():
    from skyrl_stack.engine import client

    try:
        return client()
    except StackError:
        return None

