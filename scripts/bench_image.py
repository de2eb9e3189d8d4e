#!/usr/bin/env python3
"""Benchmark the rehearsal image: build times, size overhead, incremental push bytes.

Not a test: it measures and prints figures (and writes reports/bench-image.json).
Needs the machine set up by scripts/setup-dev.sh (engine, base image, the local
registry on 127.0.0.1:5000 with user ci). Run: .venv/bin/python scripts/bench_image.py

Figures:
  cold build      --no-cache (BuildKit's download cache mounts stay warm, as on a dev machine)
  top-layer build after a change to the project's own scripts (stands in for a SkyRL bump)
  no-op rebuild   nothing changed (the fingerprint check skips the build)
  size overhead   unpacked image vs unpacked base + the Python environment (same du measure)
  push bytes      what an incremental push sends after the top-layer change vs the first push
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from skyrl_stack.build import build_variants  # noqa: E402
from skyrl_stack.pins import load_pins  # noqa: E402
from skyrl_stack.push import push_variant  # noqa: E402
# A throwaway registry process, so the first push really sends the whole image
# (a registry that saw earlier runs would already hold most layers).
from tests.support.registry import RegistryProcess  # noqa: E402

CA = "/etc/ssl/certs/ca-certificates.crt"
TOP_LAYER_FILE = REPO / "docker/scripts/bin/skyrl-smoke"


def timed_build(repository: str, no_cache: bool = False):
    started = time.monotonic()
    (record,) = build_variants(["rehearsal"], repository, no_cache=no_cache,
                               ca_bundle=CA if Path(CA).exists() else None, progress="quiet")
    return record, round(time.monotonic() - started, 1)


def unpacked_bytes(ref: str, path: str = "/") -> int:
    """Bytes of files under path in a container of ref (du, one filesystem): the same
    measure for the image, its base and its Python environment."""
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "du", ref, "-sbx", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def registry_bytes(record) -> int:
    """What a registry stores for the image: its compressed layers (from the build record)."""
    return sum(record.layers.values())


def largest_layers(ref: str, count: int = 6) -> list[str]:
    """The biggest layers with the step that made them (docker history)."""
    out = subprocess.run(["docker", "history", "--no-trunc", "--human", "--format", "{{.Size}}\t{{.CreatedBy}}", ref],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t", 1) for line in out.splitlines() if "\t" in line]

    def size(text: str) -> float:
        units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
        number = text.rstrip("kKMGB")
        return float(number or 0) * units.get(text[len(number):], 1)

    rows.sort(key=lambda row: size(row[0]), reverse=True)
    return [f"{row[0]:>8}  {' '.join(row[1].split())[:110]}" for row in rows[:count]]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-image-"))
    os.environ["SKYRL_STACK_STATE_DIR"] = str(work / "state")
    with RegistryProcess(work / "registry") as registry:
        os.environ["SKYRL_STACK_REGISTRY_USER"] = registry.user
        os.environ["SKYRL_STACK_REGISTRY_PASSWORD"] = registry.password
        return measure(f"{registry.host}/skyrl-stack-bench")


def measure(repository: str) -> int:
    results: dict[str, float | int | str] = {}

    print("cold build (--no-cache) ...", flush=True)
    first, results["cold_build_s"] = timed_build(repository, no_cache=True)
    print("first push (whole image) ...", flush=True)
    results["push_full_bytes"] = push_variant("rehearsal", override_gate=True).pushed["bytes_sent"]

    print("no-op rebuild ...", flush=True)
    _, results["noop_rebuild_s"] = timed_build(repository)

    original = TOP_LAYER_FILE.read_text()
    try:
        TOP_LAYER_FILE.write_text(original + f"# bench {time.time()}\n")
        print("rebuild after a top-layer change ...", flush=True)
        changed, results["top_layer_rebuild_s"] = timed_build(repository)
        print("incremental push ...", flush=True)
        results["push_incremental_bytes"] = push_variant("rehearsal", override_gate=True).pushed["bytes_sent"]
    finally:
        TOP_LAYER_FILE.write_text(original)
    assert changed.digest != first.digest, "a changed script must change the digest"

    base = load_pins().variant("rehearsal").base_image
    results["image_unpacked_bytes"] = unpacked_bytes(changed.ref)
    results["base_unpacked_bytes"] = unpacked_bytes(base)
    results["venv_unpacked_bytes"] = unpacked_bytes(changed.ref, "/opt/skyrl/venv")
    results["image_compressed_bytes"] = registry_bytes(changed)
    payload = results["base_unpacked_bytes"] + results["venv_unpacked_bytes"]
    results["size_overhead_pct"] = round(100 * (results["image_unpacked_bytes"] - payload) / payload, 1)
    results["cold_vs_top_layer_ratio"] = round(results["cold_build_s"] / results["top_layer_rebuild_s"], 1)
    results["cold_vs_noop_ratio"] = round(results["cold_build_s"] / results["noop_rebuild_s"], 1)
    results["push_incremental_pct"] = round(100 * results["push_incremental_bytes"] / results["push_full_bytes"], 4)

    out = REPO / "reports" / "bench-image.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    print(f"(written to {out})")
    print("largest layers:")
    for line in largest_layers(changed.ref):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
