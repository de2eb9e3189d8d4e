"""On Kubernetes a pod of the image installs nothing: SkyPilot's own pod script, run in the image, finds
every package it would install (container test).

SkyPilot 0.14.1's pod start (sky/templates/kubernetes-ray.yml.j2, STEP 1) lists
PACKAGES, tests each by its executable (pkg_present) and, for a task with
bucket mounts (k8s_fuse_device_required), queues fuse/fuse3; whatever is
missing is apt-installed on every pod start. Here that section is taken from
SkyPilot's installed template, rendered with Jinja2 as SkyPilot renders it,
and run in the rehearsal image (the GPU images share its runtime stage) and,
to show the check can fail, in the bare base image.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_BASE_IMAGE

pytestmark = pytest.mark.container
FIRST = 'PACKAGES="'
LAST = "# Detect distro for mirror fallback"


def pod_package_section() -> str:
    """The pod script from `PACKAGES=` to the end of its FUSE block, rendered for a task with a bucket mount."""
    import jinja2
    import sky

    template = (Path(sky.__file__).parent / "templates" / "kubernetes-ray.yml.j2").read_text().splitlines()
    start = next(i for i, line in enumerate(template) if line.strip().startswith(FIRST))
    end = next(i for i, line in enumerate(template) if line.strip() == LAST)
    section = "\n".join(line.strip() for line in template[start:end])
    return jinja2.Template(section).render(k8s_fuse_device_required=True)


def what_a_pod_would_install(image: str) -> dict[str, list[str]]:
    script = "\n".join([
        "prefix_cmd() { :; }",  # the pod script's sudo wrapper; nothing is installed here anyway
        "CORE_PKGS_READY=/tmp/core-pkgs-ready",
        pod_package_section(),
        'echo "PACKAGES=$PACKAGES"',
        'echo "INSTALL_FIRST=$INSTALL_FIRST"',
        'echo "MISSING_PACKAGES=$MISSING_PACKAGES"',
    ])
    result = subprocess.run(["docker", "run", "--rm", "--entrypoint", "/bin/bash", image, "-c", script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {key: lines[key].split() for key in ("PACKAGES", "INSTALL_FIRST", "MISSING_PACKAGES")}


def test_a_pod_of_the_image_installs_nothing(rehearsal_image):
    found = what_a_pod_would_install(rehearsal_image.ref)
    assert {"rsync", "netcat", "gcc", "pciutils", "openssh-server"} <= set(found["PACKAGES"])  # SkyPilot's list, read
    assert found["INSTALL_FIRST"] == [] and found["MISSING_PACKAGES"] == [], found


def test_the_check_sees_what_a_bare_image_lacks(docker_engine):
    found = what_a_pod_would_install(TEST_BASE_IMAGE)
    assert {"rsync", "curl", "wget", "fuse"} <= set(found["INSTALL_FIRST"]), found
    assert {"gcc", "pciutils", "openssh-server", "fuse3"} <= set(found["MISSING_PACKAGES"]), found


@pytest.mark.parametrize("executable", ["fusermount", "fusermount3", "lspci", "nc", "gcc"])
def test_the_fuse_and_pod_tools_are_on_path(rehearsal_image, executable):
    """fusermount3 is what rclone's mount (MOUNT_CACHED) installs fuse3 for when missing (sky/data/mounting_utils.py)."""
    result = subprocess.run(["docker", "run", "--rm", rehearsal_image.ref, "bash", "-lc", f"command -v {executable}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
