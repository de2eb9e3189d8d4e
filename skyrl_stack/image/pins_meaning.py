"""What the pins must mean, checked on load after their types (pins.py SCHEMA): one line per problem.

A pins file can have every key and type right and still make an image that
cannot run: a Ray port SkyPilot's own Ray holds on the same node (6380), one
the kernel may hand out as an ephemeral port, two ports alike, a vLLM variant
built with SGLang's extra or with none (a task with no training in it), a GPU
image marked `gpu = false` (the smoke gate would pass it on a CPU). Each is
refused naming the table and key.

Standard library only and Python 3.10, like pins.py (the image carries it).
"""
from __future__ import annotations

import re

# Ports: unprivileged (1024+) and below Linux's default ephemeral range
# (net.ipv4.ip_local_port_range 32768-60999), where Ray's unset ports and every
# outgoing connection's local port land.
PORT_MIN, EPHEMERAL_START = 1024, 32768
# The ports SkyPilot's own software holds on every node (SkyPilot 0.14.1):
# its Ray's GCS and dashboard (sky/skylet/constants.py SKY_REMOTE_RAY_PORT,
# SKY_REMOTE_RAY_DASHBOARD_PORT), object manager (sky/provision/instance_setup.py
# ray_head_start_command), client server, workers and dashboard agent (Ray's
# defaults, which SkyPilot's `ray start` leaves), sshd in the container
# (DEFAULT_DOCKER_PORT) and the skylet (SKYLET_GRPC_PORT).
# tests/launch/test_ray_ports.py reads these from SkyPilot's code and holds this table to them.
SKYPILOT_PORTS = {
    "its Ray's GCS": (6380, 6380),
    "its Ray's dashboard": (8266, 8266),
    "its Ray's object manager": (8076, 8076),
    "its Ray's client server": (10001, 10001),
    "its Ray's worker ports": (10002, 19999),
    "its sshd": (10022, 10022),
    "its skylet": (46590, 46590),
    "its Ray's dashboard agent": (52365, 52365),
}
# SkyRL's extras that carry an inference engine (skyrl-train/pyproject.toml at the
# pinned commit; `[tool.uv] conflicts` makes them two images). SkyRL names them after
# generator.backend, and the project's Dockerfile targets after them
# (`FROM stack AS vllm`): a target of that name is built with that extra.
ENGINE_EXTRAS = ("vllm", "sglang")
_VERSION = re.compile(r"^3\.[0-9]+(\.[0-9]+)?$")


def meaning_errors(raw: dict) -> list[str]:
    """Every way well-typed pins cannot make a working image, each as '[table] key: problem'."""
    return [*_port_errors(raw["ray"]), *_python_errors(raw), *_variant_errors(raw["variants"])]


def _port_errors(ray: dict) -> list[str]:
    ports = {"[ray] port": ray["port"], **{f"[ray.ports] {name}": port for name, port in ray["ports"].items()
                                           if name not in ("min_worker", "max_worker")}}
    low, high = ray["ports"]["min_worker"], ray["ports"]["max_worker"]
    spans = {**{name: (port, port) for name, port in ports.items()},
             "[ray.ports] min_worker..max_worker": (low, high)}
    problems = []
    for name, port in {**ports, "[ray.ports] min_worker": low, "[ray.ports] max_worker": high}.items():
        if not PORT_MIN <= port < EPHEMERAL_START:
            problems.append(f"{name}: {port} is outside {PORT_MIN}..{EPHEMERAL_START - 1} (unprivileged, below "
                            f"the kernel's ephemeral ports {EPHEMERAL_START}-60999)")
    if low > high:
        problems.append(f"[ray.ports] min_worker: {low} is above max_worker {high}")
    for name, (start, end) in spans.items():
        for theirs, (t_start, t_end) in SKYPILOT_PORTS.items():
            if start <= t_end and t_start <= end:
                problems.append(f"{name}: {_span(start, end)} clashes with SkyPilot's ports on every node: "
                                f"{theirs} {_span(t_start, t_end)}")
    names = list(spans)
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            (a, b), (c, d) = spans[name], spans[other]
            if a <= d and c <= b:
                problems.append(f"{name}: {_span(a, b)} is also {other} ({_span(c, d)}); each port once")
    return problems


def _span(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def _python_errors(raw: dict) -> list[str]:
    found = [("[python] version", raw["python"]["version"])]
    found += [(f"[variants.{name}] python", spec["python"]) for name, spec in raw["variants"].items() if "python" in spec]
    return [f"{key}: {value!r} is not a Python version (3.MINOR or 3.MINOR.PATCH, e.g. \"3.12.11\")"
            for key, value in found if not _VERSION.match(value)]


def _variant_errors(variants: dict) -> list[str]:
    problems, used = [], {}
    for name, spec in variants.items():
        where, extra, target = f"[variants.{name}]", spec.get("skyrl_extra"), spec["target"]
        if target in ENGINE_EXTRAS and extra is None:
            problems.append(f"{where} skyrl_extra: missing; target {target!r} is SkyRL with the {target} engine "
                            f"(without it the image has no SkyRL and the task no training)")
        if extra is None:
            continue
        if extra not in ENGINE_EXTRAS:
            problems.append(f"{where} skyrl_extra: {extra!r} is not one of SkyRL's engine extras "
                            f"({', '.join(ENGINE_EXTRAS)})")
        elif target in ENGINE_EXTRAS and extra != target:
            problems.append(f"{where} skyrl_extra: {extra!r} is another variant's engine; target {target!r} "
                            f"is built with the {target!r} extra")
        elif extra in used:
            problems.append(f"{where} skyrl_extra: {extra!r} is already [variants.{used[extra]}]'s")
        used.setdefault(extra, name)
        if spec["gpu"] is not True:
            problems.append(f"{where} gpu: false, but a SkyRL variant ({extra}) needs a GPU (gpu = true), "
                            "or the smoke gate would pass it without its GPU tiers")
    return problems
