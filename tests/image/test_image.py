"""The rehearsal image, built for real from the debootstrap base through `invoke build`'s code path.

It shares every stage but the Python environment with the production targets,
so these tests prove the runtime stage, the uv stage, the stack stage, the
labels and the manifest for all variants.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from skyrl_stack.image.pins import load_pins
from tests.conftest import TEST_REPOSITORY, marker_certificate

pytestmark = pytest.mark.container


def run_in(image: str, command: str) -> str:
    result = subprocess.run(["docker", "run", "--rm", image, "bash", "-lc", command],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ray_is_the_pinned_version_in_login_and_plain_shells(rehearsal_image):
    assert run_in(rehearsal_image.ref, "ray --version").strip().endswith(load_pins().ray)
    plain = subprocess.run(["docker", "run", "--rm", rehearsal_image.ref, "python", "-c",
                            "import ray; print(ray.__version__)"], capture_output=True, text=True, timeout=120)
    assert plain.stdout.strip() == load_pins().ray


def test_manifest_lists_every_pin_and_installed_package(rehearsal_image):
    manifest = json.loads(run_in(rehearsal_image.ref, "cat /opt/skyrl-stack/manifest.json"))
    pins = load_pins()
    assert manifest["pins"] == pins.raw
    assert manifest["pins_digest"] == pins.digest()
    assert manifest["variant"] == "rehearsal"
    assert manifest["packages"]["ray"] == pins.ray
    assert manifest["uv"] == pins.uv
    assert manifest["python"].startswith(pins.variant("rehearsal").python)


def test_labels_carry_the_pins(rehearsal_image):
    out = subprocess.run(["docker", "image", "inspect", rehearsal_image.ref, "--format", "{{json .Config.Labels}}"],
                         capture_output=True, text=True, check=True).stdout
    labels = json.loads(out)
    pins = load_pins()
    assert labels["io.skyrl-stack.ray.version"] == pins.ray
    assert labels["io.skyrl-stack.pins-digest"] == pins.digest()
    assert labels["org.opencontainers.image.created"] == "2025-10-13T19:42:07Z"
    assert labels["org.opencontainers.image.version"] == "rehearsal-ray2.48.0-py3.11-cpu"


def test_skypilot_prerequisites_and_no_runtime_env_hook(rehearsal_image):
    out = run_in(rehearsal_image.ref,
                 "for c in rsync curl wget patch sshd pip3 fusermount sudo; do command -v $c >/dev/null || echo MISSING $c; done;"
                 " env | grep -c RAY_RUNTIME_ENV_HOOK || true")
    assert "MISSING" not in out, out
    assert out.strip().splitlines()[-1] == "0"


def test_no_fabric_userspace_so_render_asks_no_network_tier(rehearsal_image):
    """Why `network_tier: best` is not requested by default (README, SkyPilot section).

    With `best`, SkyPilot gives the container the fabric's devices (AWS EFA:
    sky/clouds/aws.py _EFA_DOCKER_RUN_OPTIONS; Nebius InfiniBand:
    sky/provision/nebius/constants.py INFINIBAND_DOCKER_OPTIONS), but NCCL can
    only use them through userspace in the image: libfabric with the EFA
    provider plus the aws-ofi-nccl plugin (libnccl-net*.so) for EFA, libibverbs
    for InfiniBand. The shared stages (OS, uv, stack) carry none of them; the
    GPU targets add only SkyRL's locked Python packages on top.
    """
    out = run_in(rehearsal_image.ref,
                 "ldconfig -p | grep -E 'libfabric|libnccl-net|libibverbs|libefa' || true;"
                 " ls -d /opt/amazon/efa /opt/amazon/aws-ofi-nccl /opt/aws-ofi-nccl 2>/dev/null || true;"
                 " find / -xdev \\( -name 'libnccl-net*.so*' -o -name 'libfabric.so*' -o -name 'libibverbs.so*' \\) 2>/dev/null;"
                 " echo END")
    assert out.strip() == "END", out


def test_each_container_gets_its_own_sshd_host_keys(rehearsal_image):
    """The image ships none; a login shell (as SkyPilot's setup runs) makes them."""
    first = run_in(rehearsal_image.ref, "cat /etc/ssh/ssh_host_ed25519_key.pub")
    second = run_in(rehearsal_image.ref, "cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert first.startswith("ssh-ed25519") and first != second


def _layer_members(image_ref: str):
    """Every file in every layer of the image, as (path, bytes-or-None), read from `docker save`."""
    saved = subprocess.run(["docker", "save", image_ref], capture_output=True, check=True).stdout
    outer = tarfile.open(fileobj=io.BytesIO(saved))
    for member in outer.getmembers():
        if not member.isfile():
            continue
        blob = outer.extractfile(member).read()
        try:
            layer = tarfile.open(fileobj=io.BytesIO(blob))
        except tarfile.TarError:
            continue  # configs, manifests, index
        for item in layer.getmembers():
            data = layer.extractfile(item).read() if item.isfile() and item.size < 2_000_000 else None
            yield item.name, data


def _marker_probes(bundle: Path) -> list[bytes]:
    """Lines of the marker certificate's PEM body: what a copy of the bundle in a layer would contain."""
    pem = (bundle.parent / "marker.pem").read_bytes()
    assert marker_certificate() in b"".join(bundle.read_bytes().split())  # the build is given the marker
    return [line for line in pem.splitlines() if len(line) == 64][:3]


def _leaks(image_ref: str, probes: list[bytes]) -> list[str]:
    leaks = []
    for path, data in _layer_members(image_ref):
        if path.startswith(("root/.cache/", "var/cache/apt/archives/", "run/secrets/")) and not path.endswith("/"):
            leaks.append(path)
        if path.startswith("var/lib/apt/lists/") and not path.endswith(("lock", "/")) and "partial" not in path:
            leaks.append(path)
        if data and any(probe in data for probe in probes):
            leaks.append(f"marker CA in {path}")
    return leaks


def test_no_ca_bundle_token_or_cache_in_any_layer_or_history(rehearsal_image, test_ca_bundle):
    """The build's CA bundle (the host's, plus a marker certificate made by the test_ca_bundle fixture,
    so this holds with or without a proxy on the host) reaches no layer and no history line. BuildKit
    keeps secrets out of its cache keys: steps taken from the cache ran with an earlier bundle of the
    same marker (it is made once per checkout); a cold build (CI) runs them all with it."""
    probes = _marker_probes(test_ca_bundle)
    assert _leaks(rehearsal_image.ref, probes) == []
    history = subprocess.run(["docker", "history", "--no-trunc", rehearsal_image.ref], capture_output=True,
                             text=True, check=True).stdout
    assert "BEGIN CERTIFICATE" not in history
    assert all(probe.decode() not in history for probe in probes)


def test_the_leak_scan_finds_a_bundle_copied_into_a_layer(test_ca_bundle, tmp_path):
    """The scan above can fail: an image (FROM scratch, one layer) that holds the bundle is caught."""
    (tmp_path / "bundle.pem").write_bytes(test_ca_bundle.read_bytes())
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY bundle.pem /etc/ssl/leaked.pem\n")
    tag = f"{TEST_REPOSITORY}-leak-probe:{os.getpid()}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(tmp_path)], check=True, capture_output=True)
    try:
        assert _leaks(tag, _marker_probes(test_ca_bundle)) == ["marker CA in etc/ssl/leaked.pem"]
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True)


def test_image_env_is_only_the_venv(rehearsal_image):
    """Build-time uv settings must not leak into SkyPilot's own uv runs on the node; LD_LIBRARY_PATH names
    only where a host's NVIDIA driver may be mounted, never a CUDA toolkit directory that would shadow the
    CUDA libraries torch's wheels pin (the Dockerfile's `ENV LD_LIBRARY_PATH`)."""
    out = subprocess.run(["docker", "image", "inspect", rehearsal_image.ref, "--format", "{{json .Config.Env}}"],
                         capture_output=True, text=True, check=True).stdout
    env = dict(entry.split("=", 1) for entry in json.loads(out))
    assert set(env) == {"PATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH"}
    assert env["LD_LIBRARY_PATH"].split(":") == ["/usr/local/nvidia/lib", "/usr/local/nvidia/lib64"]


def test_unchanged_inputs_skip_the_build(rehearsal_image, test_ca_bundle, monkeypatch, capsys):
    """Same fingerprint (every build input) and the image still in the engine: nothing is rebuilt."""
    from skyrl_stack.image.build import build_variants
    from tests.conftest import TEST_BASE_IMAGE, TEST_REPOSITORY

    monkeypatch.setenv("SKYRL_STACK_WORKSPACE", str(rehearsal_image.state_dir.parent))
    (again,) = build_variants(["rehearsal"], TEST_REPOSITORY, base_image=TEST_BASE_IMAGE,
                              ca_bundle=str(test_ca_bundle), progress="quiet")
    assert (again.digest, again.built_at) == (rehearsal_image.digest, rehearsal_image.built_at)
    assert "rehearsal: up to date" in capsys.readouterr().err


def test_pip_installs_into_the_environment(rehearsal_image):
    """Issue 9: `pip` in a task must be the environment's (uv makes venvs without pip; the system pip is
    another Python's and PEP 668 refuses it)."""
    for shell in ("bash -lc", "bash -c"):
        out = subprocess.run(["docker", "run", "--rm", rehearsal_image.ref, *shell.split(), "pip --version; pip3 --version"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 2 and all("from /opt/skyrl/venv/lib/" in line for line in lines), out.stdout
    # A dry run resolves into the env without touching the network (ray is already there).
    dry = run_in(rehearsal_image.ref, "pip install --no-index --dry-run ray && python -c 'import sys; print(sys.prefix)'")
    assert "Requirement already satisfied: ray" in dry and dry.strip().endswith("/opt/skyrl/venv")


def test_image_config_has_no_entrypoint_and_a_driver_only_library_path(rehearsal_image):
    """The CUDA base's ENTRYPOINT is reset and its LD_LIBRARY_PATH replaced by the driver mount points only,
    so no CUDA toolkit directory can shadow the libraries torch's wheels pin (the GPU tier reports them).
    (The Debian base has no ENTRYPOINT of its own: the reset itself is proven on the CUDA targets' shared stage.)"""
    out = subprocess.run(["docker", "image", "inspect", rehearsal_image.ref, "--format", "{{json .Config}}"],
                         capture_output=True, text=True, check=True).stdout
    config = json.loads(out)
    assert not config.get("Entrypoint")
    assert config["Cmd"] == ["/bin/bash"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
    assert "cuda" not in run_in(rehearsal_image.ref, "echo $LD_LIBRARY_PATH")
