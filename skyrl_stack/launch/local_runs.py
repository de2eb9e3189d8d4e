"""The local runs on the Docker engine: whose they are, which are stale, and removing them.

Every container and network of a `--cloud local` run carries labels (LABEL:
the run's name; the owner; the launching process's host, pid and start time),
so that any later command can find the run on the engine and tell whether its
launcher still lives (RUNNING), is gone (STALE: `invoke down --cluster local
--stale` removes it) or cannot be told from here (UNKNOWN: another host).
"""
from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from skyrl_stack.errors import StackError, first_line
from skyrl_stack.reporter import step

LABEL = "skyrl-stack.local-cluster"  # value: the run's name, on its containers and its network
OWNER_LABEL = "skyrl-stack.owner"  # user@host who launched the run
# The launching process: a run whose launcher is gone is stale. The start time
# tells a reused pid from the launcher (Linux /proc; empty elsewhere).
LAUNCHER_HOST_LABEL = "skyrl-stack.launcher-host"
LAUNCHER_PID_LABEL = "skyrl-stack.launcher-pid"
LAUNCHER_START_LABEL = "skyrl-stack.launcher-start"
RUNNING, STALE, UNKNOWN = "running", "stale", "unknown"


def owner_labels(cluster: str) -> dict:
    """The labels that make a run owned: its name, who launched it, and the launching process."""
    host = socket.gethostname()
    return {LABEL: cluster, OWNER_LABEL: f"{getpass.getuser()}@{host}", LAUNCHER_HOST_LABEL: host,
            LAUNCHER_PID_LABEL: str(os.getpid()), LAUNCHER_START_LABEL: _process_start(os.getpid())}


def _process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22); "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3


def launcher_state(labels: dict) -> str:
    """RUNNING while the run's launcher lives, STALE once it is gone (or its pid belongs to another
    process), UNKNOWN where this machine cannot tell: launched on another host, or without the labels."""
    host, pid, start = (labels.get(key, "") for key in (LAUNCHER_HOST_LABEL, LAUNCHER_PID_LABEL, LAUNCHER_START_LABEL))
    if not pid.isdigit() or host != socket.gethostname():
        return UNKNOWN
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return STALE
    except PermissionError:  # alive, another user's process
        pass
    now = _process_start(int(pid))
    return STALE if start and now and now != start else RUNNING


@dataclass
class LocalCluster:
    """One run's objects on the engine, found by their labels."""

    name: str
    labels: dict
    containers: list = field(default_factory=list)
    networks: list = field(default_factory=list)

    @property
    def state(self) -> str:
        return launcher_state(self.labels)


def local_clusters(docker) -> list[LocalCluster]:
    """Every local run on the engine (containers and networks by LABEL), by name."""
    runs: dict[str, LocalCluster] = {}
    for kind, objects in (("containers", docker.containers.list(all=True, filters={"label": LABEL})),
                          ("networks", docker.networks.list(filters={"label": LABEL}))):
        for obj in objects:
            labels = (obj.labels if kind == "containers" else obj.attrs.get("Labels")) or {}
            run = runs.setdefault(labels[LABEL], LocalCluster(labels[LABEL], labels))
            getattr(run, kind).append(obj)
    return sorted(runs.values(), key=lambda run: run.name)


def remove(run: LocalCluster) -> None:
    """Remove one run's containers, then its network (gone already is fine: its launcher may be cleaning up)."""
    from docker.errors import APIError, NotFound

    for remove_one in [*(lambda c=c: c.remove(force=True) for c in run.containers),
                       *(network.remove for network in run.networks)]:
        try:
            remove_one()
        except NotFound:
            pass
        except APIError as exc:
            # 409: the engine is already removing it (the run's own launcher, at the same moment).
            if exc.status_code != 409:
                raise StackError(f"cannot remove local cluster {run.name}: {first_line(str(exc.explanation or exc))}",
                                 hint=f"see: docker ps -a --filter label={LABEL}={run.name}") from None


def report_leftovers(docker) -> None:
    """At a launch: name the runs left behind by launchers that are gone, and how to remove them."""
    stale = [run.name for run in local_clusters(docker) if run.state == STALE]
    if stale:
        step(f"note: {len(stale)} leftover local cluster(s) whose launcher is gone: {', '.join(stale)}; "
             "remove them with: invoke down --cluster local --stale")


def down(name: str | None = None, stale: bool = False) -> list[str]:
    """Remove the local run `name`, or (stale=True) every run whose launcher is gone; returns the names removed.

    Neither touches a run whose launcher is alive unless it is the one named. With no name and no
    stale, only lists the runs (a bare `invoke down --cluster local` removes nothing)."""
    from docker.errors import DockerException

    from skyrl_stack.engine import client

    try:
        docker = client()
    except StackError:  # no engine: no local runs to list or remove
        docker = None
    try:
        runs = local_clusters(docker) if docker is not None else []
    except DockerException as exc:
        raise StackError(f"cannot list local clusters: {first_line(str(exc))}", hint="check `docker info`") from None
    if name is not None:
        chosen = [run for run in runs if run.name == name]
    elif stale:
        chosen = [run for run in runs if run.state == STALE]
    else:
        for run in runs:
            print(f"{run.name:<40} {run.state:<8} {len(run.containers)} node(s)  owner {run.labels.get(OWNER_LABEL, '?')}")
        if not runs:
            print("no local clusters")
        chosen = []
    for run in chosen:
        remove(run)
    return [run.name for run in chosen]
