#!/usr/bin/env python3
"""Figures for the SkyPilot part: render/list wall times and local time-to-cluster.

    SKYRL_STACK_WORKSPACE=... .venv/bin/python scripts/bench_launch.py [--repeat 5] [--ca-bundle FILE]

Needs a built rehearsal image (`invoke build --variant rehearsal ...`) in the
state dir. Measures, each as the median of --repeat runs:
  * `invoke render` wall time, with and without SkyPilot's validation;
  * `invoke --list` wall time;
  * time from `invoke launch --cloud local --variant rehearsal --nodes 2` to
    "all 2 nodes joined" (the baked image);
  * the same 2-node Ray bootstrap from the plain Debian base image with the
    Python environment installed at start, as the seed's `setup:` does
    (`pip install ray==<pinned>` from PyPI on every node). This only installs
    Ray: the seed's real setup also installs torch, vLLM and flash-attn, so the
    ratio is a lower bound.
Not a test: timings depend on the machine and the network.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

JOINED = "all 2 nodes joined"


def timed(cmd, cwd, env) -> float:
    start = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.monotonic() - start


def until_joined(cmd, cwd, env) -> float:
    """Seconds from starting `cmd` to the line saying all nodes joined (the run then finishes)."""
    start = time.monotonic()
    joined = None
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if joined is None and JOINED in line:
            joined = time.monotonic() - start
    if proc.wait() != 0 or joined is None:
        raise SystemExit(f"run failed: {cmd}")
    return joined


class _JoinClock:
    """A stream for local_cluster.run that notes when the head reports all nodes joined."""

    def __init__(self, start):
        self.start, self.joined = start, None

    def write(self, text):
        if self.joined is None and JOINED in text:
            self.joined = time.monotonic() - self.start

    def flush(self):
        pass


def setup_at_start(ca_bundle: str | None) -> float:
    """The seed's way: a plain base image, the Python env installed by `setup:` on every node."""
    from skyrl_stack.launch import local_cluster
    from skyrl_stack.image.pins import load_pins

    pins = load_pins()
    variant = pins.variant("rehearsal")
    # skyrl-ray-up reads its ports from the pins (skyrl_stack), as it does inside the image.
    volumes = {str(REPO_ROOT / "docker" / "scripts" / "bin"): {"bind": "/opt/skyrl-stack/bin", "mode": "ro"},
               str(REPO_ROOT / "skyrl_stack"): {"bind": "/opt/skyrl-stack/lib/skyrl_stack", "mode": "ro"}}
    envs = {"SKYRL_RAY_JOIN_TIMEOUT": "600", "PYTHONPATH": "/opt/skyrl-stack/lib"}
    if ca_bundle:
        volumes[ca_bundle] = {"bind": "/etc/ssl/certs/ca-certificates.crt", "mode": "ro"}
        envs["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    job = local_cluster.LocalRun(
        image=variant.base_image,
        nodes=2,
        gpus_per_node=0,
        setup=(f"set -e; python3 -m venv /opt/skyrl/venv && /opt/skyrl/venv/bin/pip install -q --no-cache-dir ray=={pins.ray}"),
        # The head releases the workers' run: at once, as the rendered task does after its job.
        run=(f"set -e; /opt/skyrl-stack/bin/skyrl-ray-up --port {pins.ray_port}; "
             f'if [ "$SKYPILOT_NODE_RANK" = 0 ]; then /opt/skyrl-stack/bin/skyrl-ray-up --port {pins.ray_port} --release; fi'),
        envs=envs,
        run_options=["--ipc=host"],
        volumes=volumes,
        name="skyrl-bench-setup",
    )
    start = time.monotonic()
    clock = _JoinClock(start)
    if local_cluster.run(job, stream=clock) != 0 or clock.joined is None:
        raise SystemExit("setup-at-start run failed")
    return clock.joined


def main(argv: list[str] | None = None) -> dict:
    """Prints the figures; returns their medians in seconds (for `invoke bench`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--launch-repeat", type=int, default=3)
    parser.add_argument("--ca-bundle", default=os.environ.get("SKYRL_STACK_TEST_CA", "/etc/ssl/certs/ca-certificates.crt"))
    args = parser.parse_args(argv)

    invoke = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]
    env = {**os.environ, "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}
    figures = {}
    with tempfile.TemporaryDirectory() as cwd:
        render = [*invoke, "render", "--variant", "rehearsal", "--cloud", "aws", "--nodes", "2"]
        figures["invoke render (SkyPilot validation)"] = [timed(render, cwd, env) for _ in range(args.repeat)]
        figures["invoke render --no-validate"] = [timed([*render, "--no-validate"], cwd, env) for _ in range(args.repeat)]
        figures["invoke --list"] = [timed([*invoke, "--list"], cwd, env) for _ in range(args.repeat)]
        launch = [*invoke, "launch", "--cloud", "local", "--variant", "rehearsal", "--nodes", "2"]
        figures["launch --cloud local --nodes 2 -> all nodes joined (baked image)"] = [
            until_joined(launch, cwd, env) for _ in range(args.launch_repeat)]
    ca = args.ca_bundle if args.ca_bundle and os.path.exists(args.ca_bundle) else None
    figures["same, env installed at start (pip install ray from PyPI)"] = [
        setup_at_start(ca) for _ in range(args.launch_repeat)]

    for name, values in figures.items():
        print(f"{name:<70} median {statistics.median(values):6.2f}s  runs {', '.join(f'{v:.2f}' for v in values)}")
    baked = statistics.median(figures["launch --cloud local --nodes 2 -> all nodes joined (baked image)"])
    setup = statistics.median(figures["same, env installed at start (pip install ray from PyPI)"])
    print(f"time to a joined 2-node cluster: setup-at-start / baked image = {setup / baked:.1f}x")
    return {name: round(statistics.median(values), 2) for name, values in figures.items()}


if __name__ == "__main__":
    main()
