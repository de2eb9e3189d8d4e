#!/usr/bin/env python3
"""Benchmark SkyPilot's container start: its own DockerInitializer on the image vs a plain image.

    SKYRL_STACK_WORKSPACE=... .venv/bin/python scripts/bench_start.py [--repeat 3] [--image REF]

The plain image is built in the same run: the same Debian base + Ray from the same hashed lock
(docker/rehearsal/requirements.lock) in a venv, nothing else, i.e. what a user gets without this
project. SkyPilot's DockerInitializer.initialize() (sky/provision/docker_utils.py) runs on each,
alternately, through tests/support/skypilot_start.py (the harness the SkyPilot-readiness test
uses); host-side steps are recorded, not run, on both. The image is already in the engine for
both, so the pull is not part of the figure. Not a test: timings depend on the machine, its
load and the Debian mirror (SkyPilot runs `apt-get update` and `apt-get install` in both).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from skyrl_stack import engine  # noqa: E402
from tests.support.skypilot_start import prepared_container  # noqa: E402

CA = "/etc/ssl/certs/ca-certificates.crt"
PLAIN_TAG = "skyrl-stack-bench/plain-debian-ray:latest"
# A plain image: the base, a venv, Ray from the same hashed lock. The CA bundle is a build secret.
PLAIN_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN --mount=type=secret,id=ca,required=false --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \\
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \\
    && python3 -m venv /opt/ray && /opt/ray/bin/pip install -q --no-cache-dir --require-hashes -r /tmp/requirements.lock
ENV PATH=/opt/ray/bin:${PATH}
"""


def build_plain_image(base_image: str, ca_bundle: str | None) -> str:
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(PLAIN_DOCKERFILE)
        Path(context, "requirements.lock").write_bytes((REPO / "docker/rehearsal/requirements.lock").read_bytes())
        # The engine's own builder, as `invoke build` uses: the image must land in the engine whatever is active.
        command = ["docker", "buildx", "build", "--builder", engine.engine_builder().name, "--load", "--progress",
                   "quiet", "-t", PLAIN_TAG,
                   "--build-arg", f"BASE_IMAGE={base_image}", context]
        if ca_bundle:
            command[3:3] = ["--secret", f"id=ca,src={ca_bundle}"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return PLAIN_TAG


def start_seconds(image: str) -> float:
    with prepared_container(image) as prepared:
        if prepared.user != "root":
            raise SystemExit(f"DockerInitializer on {image} answered user {prepared.user!r}")
        return prepared.seconds


def measure(image: str, base_image: str, repeat: int, ca_bundle: str | None) -> dict:
    plain = build_plain_image(base_image, ca_bundle)
    runs: dict[str, list[float]] = {"image": [], "plain": []}
    try:
        for _ in range(repeat):  # alternate, so a change in load or mirror speed hits both alike
            runs["image"].append(round(start_seconds(image), 2))
            runs["plain"].append(round(start_seconds(plain), 2))
    finally:  # the baseline is made for the measurement only: its tag (and so the image) goes after it
        subprocess.run(["docker", "image", "rm", plain], capture_output=True)
    image_s, plain_s = statistics.median(runs["image"]), statistics.median(runs["plain"])
    return {"skypilot_start_image_s": image_s, "skypilot_start_plain_s": plain_s,
            "skypilot_start_ratio": round(image_s / plain_s, 2),
            "skypilot_start_runs": runs, "skypilot_start_images": {"image": image, "plain": plain}}


def built_rehearsal_ref() -> str:
    from skyrl_stack.image.records import load_build_record

    return load_build_record("rehearsal").ref


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--image", help="image to measure (default: the rehearsal build record's)")
    parser.add_argument("--base-image", default=os.environ.get("SKYRL_STACK_TEST_BASE", "skyrl-stack/debian-base:bookworm"))
    parser.add_argument("--ca-bundle", default=CA if Path(CA).exists() else None)
    args = parser.parse_args(argv)
    results = measure(args.image or built_rehearsal_ref(), args.base_image, args.repeat, args.ca_bundle)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
