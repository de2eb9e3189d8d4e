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
  per-GB figures  cold build and top-layer rebuild per GB of compressed image (README: a 20 GB image)
  pull gzip/zstd  the same image built with each compression, pushed, then pulled (download + unpack)
                  by a throwaway Docker engine with its own data root, started empty for each pull
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from skyrl_stack.image.bake import DEFAULT_COMPRESSION  # noqa: E402
from skyrl_stack.image.build import build_variants  # noqa: E402
from skyrl_stack.image.pins import load_pins  # noqa: E402
from skyrl_stack.image.push import push_variant  # noqa: E402
# A throwaway registry process, so the first push really sends the whole image
# (a registry that saw earlier runs would already hold most layers).
from tests.support.registry import RegistryProcess  # noqa: E402

CA = "/etc/ssl/certs/ca-certificates.crt"
TOP_LAYER_FILE = REPO / "docker/scripts/bin/skyrl-smoke"


def timed_build(repository: str, no_cache: bool = False, compression: str = DEFAULT_COMPRESSION):
    started = time.monotonic()
    (record,) = build_variants(["rehearsal"], repository, no_cache=no_cache, compression=compression,
                               ca_bundle=CA if Path(CA).exists() else None, progress="quiet")
    return record, round(time.monotonic() - started, 1)


BENCH_BRIDGE = ("skyrlbench0", "10.213.77.1/24")  # a bridge of its own for the throwaway engine


@contextlib.contextmanager
def throwaway_engine(root: Path, registry_host: str):
    """A second dockerd with its own data root, exec root, socket and bridge (containerd
    store): an empty image store, as on a fresh node. Stopped and removed on exit.

    Never `--bridge none`: a dockerd started with it deletes the host's docker0, which
    the main engine's containers need (seen here). Its own bridge, made and removed here,
    leaves docker0 alone."""
    root.mkdir(parents=True)
    name, address = BENCH_BRIDGE
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", address, "dev", name], check=True)
    config = root / "daemon.json"
    config.write_text(json.dumps({"features": {"containerd-snapshotter": True}, "insecure-registries": [registry_host]}))
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "w")
    daemon = subprocess.Popen(["dockerd", "--config-file", str(config), "--data-root", str(root / "data"),
                               "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid"),
                               "-H", f"unix://{sock}", "--bridge", name, "--iptables=false", "--ip6tables=false"],
                              stdout=log, stderr=subprocess.STDOUT)
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=str(root / "client"))
    try:
        for _ in range(60):
            if subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"throwaway dockerd did not start (see {root / 'dockerd.log'})")
        yield env
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()
        subprocess.run(["ip", "link", "del", name], check=False)
        shutil.rmtree(root, ignore_errors=True)


def pull_seconds(ref: str, registry, root: Path) -> float:
    """Seconds for an empty engine to pull ref: download and unpack every layer."""
    with throwaway_engine(root, registry.host) as env:
        subprocess.run(["docker", "login", "--username", registry.user, "--password-stdin", registry.host],
                       input=registry.password, text=True, env=env, capture_output=True, check=True)
        started = time.monotonic()
        subprocess.run(["docker", "pull", "--quiet", ref], env=env, capture_output=True, check=True)
        seconds = round(time.monotonic() - started, 1)
        subprocess.run(["docker", "run", "--rm", "--network", "none", ref, "python", "-c", "import ray"],
                       env=env, capture_output=True, check=True)  # it runs, too
        return seconds


def manifest_layers(registry, repo: str, digest: str) -> list[dict]:
    """The pushed manifest's layers (media type, size), as the registry serves them."""
    import requests

    response = requests.get(f"http://{registry.host}/v2/{repo}/manifests/{digest}",
                            auth=(registry.user, registry.password), timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    response.raise_for_status()
    return response.json()["layers"]


def unpacked_bytes(ref: str, path: str = "/") -> int:
    """Bytes of files under path in a container of ref (du, one filesystem): the same
    measure for the image, its base and its Python environment."""
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "du", ref, "-sbx", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


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


def main(hold: str | None = None) -> int:
    """Measure; every local tag the run made is under its throwaway registry's host and goes with it
    (RegistryProcess). `hold` (a name of the caller's, who removes it) keeps the measured image for
    measurements after this one (`invoke bench`'s start and layer figures)."""
    work = Path(tempfile.mkdtemp(prefix="bench-image-"))
    os.environ["SKYRL_STACK_WORKSPACE"] = str(work)
    try:
        with RegistryProcess(work / "registry") as registry:
            os.environ["SKYRL_STACK_REGISTRY_USER"] = registry.user
            os.environ["SKYRL_STACK_REGISTRY_PASSWORD"] = registry.password
            return measure(registry, work, hold)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(registry, work: Path, hold: str | None = None) -> int:
    repository = f"{registry.host}/skyrl-stack-bench"
    results: dict[str, float | int | str] = {"compression": DEFAULT_COMPRESSION}

    print("cold build (--no-cache) ...", flush=True)
    first, results["cold_build_s"] = timed_build(repository, no_cache=True)
    print("first push (whole image) ...", flush=True)
    push_variant("rehearsal", skip_smoke_gate=True)
    # Bytes from the registry's manifests, not the engine's push progress: builds go straight
    # into the engine's store, whose API shows no compressed layer sizes, and the engine's
    # progress omits them for small layers (the top layer among them).
    first_layers = manifest_layers(registry, "skyrl-stack-bench", first.digest)
    results["push_full_bytes"] = sum(layer["size"] for layer in first_layers)

    print("no-op rebuild ...", flush=True)
    _, results["noop_rebuild_s"] = timed_build(repository)

    original = TOP_LAYER_FILE.read_text()
    try:
        TOP_LAYER_FILE.write_text(original + f"# bench {time.time()}\n")
        print("rebuild after a top-layer change ...", flush=True)
        changed, results["top_layer_rebuild_s"] = timed_build(repository)
        print("incremental push ...", flush=True)
        push_variant("rehearsal", skip_smoke_gate=True)
    finally:
        TOP_LAYER_FILE.write_text(original)
    assert changed.digest != first.digest, "a changed script must change the digest"
    # What the incremental push had to send: the layers the registry did not hold yet.
    held = {layer["digest"] for layer in first_layers}
    results["push_incremental_bytes"] = sum(layer["size"] for layer in manifest_layers(
        registry, "skyrl-stack-bench", changed.digest) if layer["digest"] not in held)

    base = load_pins().variant("rehearsal").base_image
    results["image_unpacked_bytes"] = unpacked_bytes(changed.ref)
    results["base_unpacked_bytes"] = unpacked_bytes(base)
    results["venv_unpacked_bytes"] = unpacked_bytes(changed.ref, "/opt/skyrl/venv")
    pushed = manifest_layers(registry, "skyrl-stack-bench", changed.digest)
    results["image_compressed_bytes"] = sum(layer["size"] for layer in pushed)
    gigabytes = results["image_compressed_bytes"] / 1e9
    results["cold_build_s_per_gb"] = round(results["cold_build_s"] / gigabytes, 1)
    results["top_layer_rebuild_s_per_gb"] = round(results["top_layer_rebuild_s"] / gigabytes, 1)
    results["top_layer_vs_cold_pct"] = round(100 * results["top_layer_rebuild_s"] / results["cold_build_s"], 1)

    # The same image with gzip layers, for the pull comparison (rebuilt from the cache: only
    # the compression differs). Each pull goes into an empty throwaway engine.
    print("gzip build + push, pulls into empty engines ...", flush=True)
    gzip_record, results["gzip_rebuild_s"] = timed_build(repository, compression="gzip")
    push_variant("rehearsal", repository=f"{repository}-gzip", skip_smoke_gate=True)
    gzip_layers = manifest_layers(registry, "skyrl-stack-bench-gzip", gzip_record.digest)
    results["image_compressed_bytes_gzip"] = sum(layer["size"] for layer in gzip_layers)
    results["pull_s_zstd"] = pull_seconds(f"{repository}@{changed.digest}", registry, work / "engine-zstd")
    results["pull_s_gzip"] = pull_seconds(f"{repository}-gzip@{gzip_record.digest}", registry, work / "engine-gzip")
    results["pushed_media_types"] = sorted({layer["mediaType"] for layer in pushed})
    payload = results["base_unpacked_bytes"] + results["venv_unpacked_bytes"]
    results["size_overhead_pct"] = round(100 * (results["image_unpacked_bytes"] - payload) / payload, 1)
    results["cold_vs_top_layer_ratio"] = round(results["cold_build_s"] / results["top_layer_rebuild_s"], 1)
    results["cold_vs_noop_ratio"] = round(results["cold_build_s"] / results["noop_rebuild_s"], 1)
    results["push_incremental_pct"] = round(100 * results["push_incremental_bytes"] / results["push_full_bytes"], 4)
    # Its build record goes with this run's state dir; the image stays only under `hold`.
    results["image_ref"] = changed.ref
    if hold:
        subprocess.run(["docker", "tag", changed.digest, hold], check=True)

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
