"""`invoke launch --cloud local`: run a rendered task in N local containers, the way SkyPilot would.

Each node is a container of the task's image, started with SkyPilot's own
`docker run` flags (skypilot_container), on a private Docker network. The
task's `setup:` (if any) and then `run:` execute inside every node at once, in
SkyPilot's job script, with the SKYPILOT_* variables SkyPilot sets, and each
node's output is streamed with a node prefix. As on a SkyPilot cluster, each
node's job runs under the skylet's process-tree rule (skylet.py: what was in the
job's tree at its last poll is killed when the job ends), the job waits for every
node, and a failing node cancels the others. Containers and the network are
removed at the end; the exit code is 0 only if every node succeeded. The
labels that let a later command find a run (and remove it) are local_runs.py's.
A task's MOUNT_CACHED mount of a host directory (`--bucket DIR`) is mounted in
every node as SkyPilot's would be (local_bucket.py); `--managed` runs this
under local_managed.py's jobs controller, through run()'s hooks.
"""
from __future__ import annotations

import io
import os
import secrets
import signal
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.launch import local_bucket, skylet, skypilot_container
from skyrl_stack.launch.local_runs import owner_labels, report_leftovers
from skyrl_stack.reporter import step

# Memory the engine must have per local node. Measured: a rehearsal node with
# its Ray head up and idle takes ~240 MiB (docker stats); the job's Ray tasks
# and the smoke-sized model take more, so a node is budgeted 1 GiB.
NODE_MEMORY_BYTES = 2**30
# skylet.py goes into every node: SkyPilot's rule for a job's process tree, run beside the job.
SKYLET_SOURCE = Path(skylet.__file__)
SKYLET_PATH = "/tmp/skyrl-stack-skylet.py"
# A node whose container vanished under its job (killed, preempted): counted as SkyPilot's cancelled code.
LOST_RETURN_CODE = 137


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
    cached_mounts: dict = field(default_factory=dict)  # mount path -> host directory (local_bucket.py)


def from_task(config: dict, nodes: int, gpus_per_node: int, image: str, name: str, env_overrides: dict | None = None,
              gpu_devices: bool = False) -> LocalRun:
    """A LocalRun from a rendered task dict. Secrets come from this shell's environment, if set."""
    envs = {k: str(v) for k, v in (config.get("envs") or {}).items()}
    for key, value in (config.get("secrets") or {}).items():
        value = os.environ.get(key, value)
        if value is not None:
            envs[key] = str(value)
    envs.update(env_overrides or {})
    mounts = local_bucket.cached_mounts(config)
    return LocalRun(
        image=image,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        run=config["run"] + local_bucket.flush_script(mounts),
        setup=config.get("setup"),
        envs=envs,
        run_options=list(((config.get("config") or {}).get("docker") or {}).get("run_options") or []),
        name=name,
        gpu_devices=gpu_devices,
        cached_mounts=mounts,
    )


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


def _exec(api, container, script: str, env: dict, prefix: str, printer: _Printer, name: str) -> int:
    """Run one node's `setup:`/`run:` as SkyPilot's job driver does, under skylet.py's process-tree rule."""
    job = f"/tmp/sky_app_{name}"  # SkyPilot's job script name prefix (log_lib.run_bash_command_with_log)
    container.put_archive("/tmp", _tar({
        SKYLET_PATH.rsplit("/", 1)[1]: SKYLET_SOURCE.read_bytes(),
        job.rsplit("/", 1)[1]: skypilot_container.job_script(script, env).encode(),
    }))
    command = ["python3", SKYLET_PATH, "--pidfile", f"{job}.pid", job]
    exec_id = api.exec_create(container.id, command, tty=False)["Id"]
    pending = b""
    for chunk in api.exec_start(exec_id, stream=True, demux=False):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            printer.emit(prefix, line.decode(errors="replace").rstrip("\r"))
    if pending:
        printer.emit(prefix, pending.decode(errors="replace"))
    code = api.exec_inspect(exec_id)["ExitCode"]
    return LOST_RETURN_CODE if code is None else code  # None: the node's container was killed under the exec


def _cancel(container, name: str) -> None:
    """SkyPilot's ray.cancel(force=True) of a node's task: its skylet then kills the job's process tree."""
    # The node's skylet may not have written its pid yet: retry for a while.
    from docker.errors import DockerException

    pidfile = f"/tmp/sky_app_{name}.pid"
    try:
        container.exec_run(["/bin/sh", "-c", f"for i in $(seq 100); do kill -TERM $(cat {pidfile} 2>/dev/null) 2>/dev/null && exit 0; sleep 0.2; done"])
    except DockerException:  # the node is gone (preempted): nothing left to cancel
        pass


def _put_file(container, path: str, data: bytes) -> None:
    directory, name = path.rsplit("/", 1)
    container.put_archive(directory, _tar({name: data}))


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _on_all_nodes(api, containers, script: str, envs: list[dict], printer: _Printer, name: str) -> list[int]:
    """Run `script` on every node at once and wait for all, as SkyPilot's job does (its `get_or_fail`):
    once any node fails, the nodes still running are cancelled (exit code 137)."""
    codes: list[int | None] = [None] * len(containers)
    cancelled: set[int] = set()
    finished = threading.Condition()

    def work(rank):
        try:
            code = _exec(api, containers[rank], script, envs[rank], f"(node{rank})", printer, name)
        except Exception as exc:  # a node that vanished (killed) counts as failed, not as a crash here
            printer.emit(f"(node{rank})", f"[local cluster] node lost: {exc}")
            code = LOST_RETURN_CODE
        with finished:
            codes[rank] = code
            finished.notify_all()

    threads = [threading.Thread(target=work, args=(rank,), daemon=True) for rank in range(len(containers))]
    for thread in threads:
        thread.start()
    with finished:
        while any(code is None for code in codes):
            if any(code for code in codes):
                for rank, code in enumerate(codes):
                    if code is None and rank not in cancelled:
                        cancelled.add(rank)
                        printer.emit(f"(node{rank})", "[local cluster] cancelled: another node failed")
                        _cancel(containers[rank], name)
            finished.wait(0.2)  # short waits keep Ctrl-C / SIGTERM responsive
    return [137 if rank in cancelled else code for rank, code in enumerate(codes)]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def new_task_id(job: LocalRun) -> str:
    """SKYPILOT_TASK_ID as SkyPilot forms it (sky-<date>_<cluster>_<job id>)."""
    return f"sky-{time.strftime('%Y-%m-%d-%H-%M-%S')}_{job.name}_1"


def run(job: LocalRun, stream=None, hooks=None, task_id: str | None = None) -> int:
    """Run the job on a fresh local cluster; 0 when every node's `run:` succeeded, else the first failure's code.

    hooks (local_managed.py's controller): `started(containers)` once every node is up, `finished(containers)`
    after the job, before the nodes are removed. task_id: the controller keeps one across recoveries, as
    SkyPilot's does; a plain run gets a new one."""
    from docker.errors import DockerException

    docker = _engine_for(job)
    cluster = f"{job.name}-{secrets.token_hex(3)}"
    task_id = task_id or new_task_id(job)
    labels = owner_labels(cluster)
    network = None
    containers = []
    # A TERM (e.g. CI timeout) must still remove the containers and network.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        step(f"local cluster {cluster}: {job.nodes} node(s) of {job.image}")
        network = docker.networks.create(cluster, driver="bridge", labels=labels)
        ips = _start_nodes(docker, job, cluster, labels, network, containers)
        if hooks:
            hooks.started(containers)
        envs = [node_env(job, rank, ips, task_id) for rank in range(job.nodes)]
        return _run_job(docker.api, containers, job, envs, _Printer(stream))
    except DockerException as exc:
        raise StackError(f"local cluster failed: {exc}", hint="check `docker info` and the image") from None
    finally:
        if hooks and containers:
            hooks.finished(containers)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for remove in [*(lambda c=c: c.remove(force=True) for c in containers), *([network.remove] if network else [])]:
            try:
                remove()
            except DockerException:
                pass


def _engine_for(job: LocalRun):
    """The Docker engine, once it is known to hold the cluster: memory for every node, and the image."""
    from docker.errors import ImageNotFound

    from skyrl_stack.engine import client

    if job.nodes < 1:
        raise StackError(f"bad --nodes {job.nodes}", hint="use 1 or more nodes")
    docker = client()
    check_capacity(docker, job.nodes)
    try:
        docker.images.get(job.image)
    except ImageNotFound:
        raise StackError(f"image {job.image} is not in the local Docker engine", hint="build it first: invoke build --variant ...") from None
    report_leftovers(docker)
    return docker


def _start_nodes(docker, job: LocalRun, cluster: str, labels: dict, network, containers: list) -> list[str]:
    """Start the nodes on the network, each appended to containers as soon as it exists; their addresses, head first."""
    # SkyPilot's run line, except the network: N nodes on one machine need N addresses.
    run_kwargs = skypilot_container.run_kwargs(
        run_options=job.run_options, gpus=-1 if job.gpu_devices else None, network=network.name,
        nvidia_runtime=job.gpu_devices and "nvidia" in (docker.info().get("Runtimes") or {}))
    for rank in range(job.nodes):
        # create, record, then start: a container that fails to start is still removed by run().
        volumes = {**job.volumes, **local_bucket.volumes(job.cached_mounts)}
        containers.append(docker.containers.create(job.image, name=f"{cluster}-node{rank}", hostname=f"node{rank}",
                                                   labels=labels, volumes=volumes or None, **run_kwargs))
        containers[-1].start()
    for container in containers:
        container.reload()
        if job.cached_mounts:
            local_bucket.mount_in(container, job.cached_mounts, _put_file)
    return [container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"] for container in containers]


def _run_job(api, containers, job: LocalRun, envs: list[dict], printer: _Printer) -> int:
    """`setup:` then `run:` on every node, as SkyPilot's job does; the job's exit code."""
    if job.setup:
        step("setup on every node")
        codes = _on_all_nodes(api, containers, job.setup, envs, printer, "setup")
        if any(codes):
            failed = [rank for rank, code in enumerate(codes) if code]
            raise StackError(f"setup failed on node(s) {failed} (exit codes {codes})", hint="see the (nodeN) lines above")
    step("run on every node")
    codes = _on_all_nodes(api, containers, job.run, envs, printer, "run")
    for rank, code in enumerate(codes):
        printer.emit(f"(node{rank})", f"[local cluster] exited with code {code}")
    failed = [code for code in codes if code and code != skylet.CANCELLED_RETURN_CODE]
    return failed[0] if failed else max(codes)


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
