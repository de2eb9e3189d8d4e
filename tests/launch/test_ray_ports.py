"""Our Ray's ports (pins.toml [ray] port and [ray.ports]) stay clear of SkyPilot's on the same node.

SkyPilot's ports are read from the installed SkyPilot's own code: its constants
and the `ray start` lines it runs (sky/provision/instance_setup.py). Where
SkyPilot leaves a port to Ray's default, the default is read from Ray's own
code in the image (container test below) and pinned here with that citation.
"""
from __future__ import annotations

import re

import pytest

from skyrl_stack.image.pins import load_pins

# Ray 2.48.0's defaults for the ports SkyPilot's `ray start` leaves unset
# (ray/_private/ray_constants.py, ray/scripts/scripts.py `ray start` options);
# test_ray_defaults_are_read_from_the_image checks these against the image's Ray.
RAY_DEFAULTS = {"ray_client_server": 10001, "min_worker": 10002, "max_worker": 19999, "dashboard_agent_listen": 52365}
# Linux's default net.ipv4.ip_local_port_range: where Ray's unset (random) ports land.
EPHEMERAL = range(32768, 61000)


def skypilot_ports() -> dict[str, range]:
    """Every port SkyPilot's own software takes on a cluster node, as ranges."""
    from sky.provision import instance_setup
    from sky.skylet import constants

    head = instance_setup.ray_head_start_command(None, None)
    worker = instance_setup.ray_worker_start_command(None, None, no_restart=False)

    def default(flag: str, line: str) -> int:
        return int(re.search(rf"--{flag}[= ]\$\{{\w+:-(\d+)\}}", line).group(1))

    min_worker = int(re.search(r"--min-worker-port (\d+)", head).group(1))
    assert "--max-worker-port" not in head + worker  # so Ray's default maximum applies
    assert "--min-worker-port" not in worker  # so workers use Ray's default range
    assert "--ray-client-server-port=$" in head and "--dashboard-agent-listen-port=$" in head  # only when probed
    ports = {
        "gcs": default("port", head),
        "dashboard": default("dashboard-port", head),
        "object_manager": default("object-manager-port", head),
        "ray_client_server": RAY_DEFAULTS["ray_client_server"],
        "dashboard_agent_listen": RAY_DEFAULTS["dashboard_agent_listen"],
        "sshd": constants.DEFAULT_DOCKER_PORT,
        "skylet": constants.SKYLET_GRPC_PORT,
    }
    assert (ports["gcs"], ports["dashboard"]) == (constants.SKY_REMOTE_RAY_PORT, constants.SKY_REMOTE_RAY_DASHBOARD_PORT)
    ranges = {name: range(port, port + 1) for name, port in ports.items()}
    ranges["workers"] = range(min(min_worker, RAY_DEFAULTS["min_worker"]), RAY_DEFAULTS["max_worker"] + 1)
    return ranges


def our_ports() -> dict[str, range]:
    pins = load_pins()
    ports = dict(pins.ray_ports)
    ranges = {name: range(port, port + 1) for name, port in ports.items() if name not in ("min_worker", "max_worker")}
    ranges["gcs"] = range(pins.ray_port, pins.ray_port + 1)
    ranges["workers"] = range(ports["min_worker"], ports["max_worker"] + 1)
    return ranges


def test_every_port_ray_start_takes_is_pinned():
    """The keys are the `ray start` options skyrl-ray-up builds (`--<key with dashes>-port`)."""
    assert set(load_pins().ray_ports) == {
        "dashboard", "dashboard_agent_listen", "dashboard_agent_grpc", "ray_client_server", "node_manager",
        "object_manager", "metrics_export", "runtime_env_agent", "min_worker", "max_worker"}
    assert all(isinstance(port, int) for port in load_pins().ray_ports.values())


def test_our_ports_are_clear_of_skypilots_and_of_each_other():
    theirs, ours = skypilot_ports(), our_ports()
    clashes = [(a, b) for a, mine in ours.items() for b, other in theirs.items() if set(mine) & set(other)]
    assert clashes == []
    names = sorted(ours)
    overlaps = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if set(ours[a]) & set(ours[b])]
    assert overlaps == []
    # Ray wants room for its workers (SkyPilot's scp provisioner: at least 3 x nproc); ours gives 8000.
    assert len(ours["workers"]) >= 3 * 256


def test_our_ports_are_below_the_ephemeral_range():
    """SkyPilot's Ray leaves some ports random (node manager, metrics, ...): those come from the ephemeral range."""
    assert [name for name, ports in our_ports().items() if set(ports) & set(EPHEMERAL)] == []


def test_a_clash_would_be_caught(monkeypatch):
    """The check can fail: our old default client server port (Ray's 10001) is SkyPilot's."""
    pins = load_pins()
    monkeypatch.setitem(pins.raw["ray"]["ports"], "ray_client_server", 10001)
    theirs, ours = skypilot_ports(), our_ports()
    assert [b for b, other in theirs.items() if set(ours["ray_client_server"]) & set(other)] == ["ray_client_server"]


@pytest.mark.container
def test_ray_defaults_are_read_from_the_image(rehearsal_image):
    """Ray's own defaults (what SkyPilot's Ray gets where it sets nothing), and that every pinned key is a
    `ray start` option of the image's Ray."""
    from skyrl_stack.engine import client

    # The client server's default is set in `ray start`'s body ("no port, has client -> default to 10001").
    probe = (
        "import inspect, re; from ray._private import ray_constants as c; from ray.scripts.scripts import start; "
        "opts = {o.name: o.default for o in start.params}; "
        "client = re.search(r'ray_client_server_port = (\\d+)', inspect.getsource(start.callback)).group(1); "
        "print(c.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT, client, opts['min_worker_port'], opts['max_worker_port']); "
        "print(' '.join(sorted(o.opts[0] for o in start.params)))"
    )
    out = client().containers.run(rehearsal_image.ref, ["-c", f"/opt/skyrl/venv/bin/python -c \"{probe}\""],
                                  entrypoint="/bin/bash", remove=True).decode().splitlines()
    agent, client_server, min_worker, max_worker = (int(x) for x in out[-2].split())
    assert {"dashboard_agent_listen": agent, "ray_client_server": client_server, "min_worker": min_worker,
            "max_worker": max_worker} == RAY_DEFAULTS
    options = set(out[-1].split())
    assert [key for key in load_pins().ray_ports if f"--{key.replace('_', '-')}-port" not in options] == []
