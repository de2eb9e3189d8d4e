"""skyrl-ray-up's choice of which processes are our Ray's (the per-job restart must never stop SkyPilot's Ray).

The script runs in the image; here its function is loaded from the file and fed
a process table shaped as /proc shows a node running both Rays (argv as Ray
2.48 writes them: gcs_server `--gcs_server_port=`, the rest `--gcs-address=`,
workers renamed `ray::IDLE` with no flags). The restart itself runs for real in
tests/launch/test_local_cluster.py::test_a_second_job_on_the_cluster_gets_its_own_ray_environment.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types

from tests.support.paths import REPO_ROOT


def ray_up() -> types.ModuleType:
    path = REPO_ROOT / "docker" / "scripts" / "bin" / "skyrl-ray-up"
    loader = importlib.machinery.SourceFileLoader("skyrl_ray_up", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("skyrl_ray_up", loader))
    loader.exec_module(module)
    return module


def test_only_our_clusters_processes_and_their_children_are_stopped():
    me = os.getpid()
    table = {
        1: (0, [b"/bin/bash"]),
        50: (1, [b"/bin/bash", b"-c", b"skyrl-ray-up --port 6479"]),  # the job's run:
        me: (50, [sys.executable.encode(), b"skyrl-ray-up", b"--port", b"6479"]),
        100: (1, [b".../gcs_server", b"--gcs_server_port=6479", b"--node-ip-address=10.0.0.1"]),
        101: (1, [b".../raylet", b"--gcs-address=10.0.0.1:6479", b"--node_ip_address=10.0.0.1"]),
        102: (101, [b"ray::IDLE"]),  # a worker of our raylet
        103: (102, [b"python", b"child-of-a-worker"]),
        104: (1, [b"python", b".../dashboard/agent.py", b"--gcs_address=10.0.0.1:6479"]),
        200: (1, [b".../gcs_server", b"--gcs_server_port=6380"]),  # SkyPilot's Ray
        201: (1, [b".../raylet", b"--gcs-address=10.0.0.1:6380"]),
        202: (201, [b"ray::IDLE"]),
        203: (1, [b".../raylet", b"--gcs-address=10.0.0.1:16479"]),  # a port that only ends like ours
    }
    assert ray_up().our_ray_pids(6479, table) == [100, 101, 102, 103, 104]


def test_this_script_and_its_parents_are_spared_even_if_they_look_like_ours():
    me = os.getpid()
    table = {1: (0, [b"init"]), 60: (1, [b"bash", b"--gcs-address=x:6479"]), me: (60, [b"--gcs_server_port=6479"])}
    assert ray_up().our_ray_pids(6479, table) == []
