"""skyrl_stack/launch/skypilot_container.py is SkyPilot's container contract, checked against SkyPilot's code.

The unit tests read the installed SkyPilot's own functions (docker_utils.docker_start_cmds,
DockerInitializer._auto_configure_shm, log_lib.make_task_bash_script). The container
test runs SkyPilot's DockerInitializer itself against the rehearsal image.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.launch import skypilot_container
from skyrl_stack.smoke import runner as smoke_run


def _skypilot_run_line(run_options: list[str]) -> list[str]:
    from sky.provision import docker_utils

    return shlex.split(docker_utils.docker_start_cmds("IMAGE", "sky_container", run_options, "docker"))


def test_run_kwargs_are_skypilots_docker_run_line():
    line = _skypilot_run_line(["--ipc=host"])
    kwargs = skypilot_container.run_kwargs(run_options=["--ipc=host"])
    assert line[:2] == ["docker", "run"] and "-d" in line and "-it" in line and line[-1] == "IMAGE"
    assert kwargs["tty"] and kwargs["stdin_open"]
    assert "--net=host" in line and kwargs["network_mode"] == "host"
    assert f"--entrypoint={kwargs['entrypoint']}" in line
    assert kwargs["environment"] == dict(line[i + 1].split("=", 1) for i, arg in enumerate(line) if arg == "-e")
    skypilot_caps = [arg.split("=", 1)[1] for arg in line if arg.startswith("--cap-add=")]
    assert skypilot_caps == skypilot_container.CAPABILITIES
    assert set(kwargs["cap_add"]) <= set(skypilot_caps)
    assert [f"--security-opt={opt}" for opt in kwargs["security_opt"]] == [a for a in line if a.startswith("--security-opt")]
    assert f"--device={skypilot_container.FUSE_DEVICE}" in line
    assert kwargs["devices"] == ["/dev/fuse:/dev/fuse:rwm"]  # this machine has FUSE
    assert "--ipc=host" in line and kwargs["ipc_mode"] == "host"


@pytest.mark.parametrize("bounding, expected", [
    ("000001ffffffffff", ["SYS_ADMIN", "SYS_RESOURCE"]),  # a VM's usual full set
    ("000001fffeffffff", ["SYS_ADMIN"]),  # this CI kernel: bit 24, CAP_SYS_RESOURCE, missing
])
def test_capabilities_drop_only_what_the_kernel_lacks(bounding, expected, tmp_path):
    status = tmp_path / "status"
    status.write_text(f"Name:\tpython\nCapBnd:\t{bounding}\n")
    assert skypilot_container.capabilities(str(status)) == expected
    assert skypilot_container.capabilities(str(tmp_path / "absent")) == skypilot_container.CAPABILITIES


class _MeminfoRunner:
    """Answers DockerInitializer's `cat /proc/meminfo` from a fixed file, so both sides read the same numbers."""

    def __init__(self, path):
        self.path = path

    def run(self, cmd, **kwargs):
        assert cmd == "cat /proc/meminfo || true", cmd  # the only command _auto_configure_shm runs
        return 0, Path(self.path).read_text(), ""


@pytest.mark.parametrize("available_kib", [2 * 1024**2, 64 * 1024**2, 2048 * 1024**2])
def test_shm_size_is_skypilots(available_kib, tmp_path):
    from sky.provision import docker_utils

    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {available_kib * 2} kB\nMemAvailable:   {available_kib} kB\n")
    initializer = docker_utils.DockerInitializer({"container_name": "x", "image": "i"}, _MeminfoRunner(meminfo), os.devnull)
    (flag,) = initializer._auto_configure_shm([])
    skypilot_bytes = float(re.fullmatch(r'--shm-size="([0-9.e+]+)b"', flag).group(1))
    assert skypilot_container.shm_size(str(meminfo)) == int(skypilot_bytes)
    # A task's own --shm-size wins, in both.
    assert initializer._auto_configure_shm(["--shm-size=1g"]) == ["--shm-size=1g"]
    assert skypilot_container.run_kwargs(run_options=["--shm-size=1g"])["shm_size"] == "1g"


def test_job_script_follows_make_task_bash_script():
    from sky.skylet import log_lib

    envs = {"SKYPILOT_NODE_RANK": "1", "ODD": "a b'c"}
    theirs = log_lib.make_task_bash_script("echo hi", env_vars=envs).splitlines()
    ours = skypilot_container.job_script("echo hi", envs).splitlines()
    # Ours keeps SkyPilot's lines in SkyPilot's order, less its conda/runtime-env lines
    # (our images have neither) and with the workdir created.
    kept = [line.strip() for line in theirs if line.strip() and "conda" not in line and "set " not in line
            and "skypilot-runtime" not in line and "sky-user-env" not in line and "VIRTUAL_ENV" not in line
            and not (line.startswith("#") and not line.startswith("#!")) and not line.startswith("if ")]
    ours_kept = [line.replace("mkdir -p ~/sky_workdir && ", "") for line in ours]
    assert ours_kept == kept, (theirs, ours)
    assert 'echo hi' == ours[-1]


def test_task_run_options_are_translated_or_refused():
    assert skypilot_container.task_run_options_kwargs(["--ipc=host", "--shm-size=8g"]) == {"ipc_mode": "host", "shm_size": "8g"}
    (ulimit,) = skypilot_container.task_run_options_kwargs(["--ulimit memlock=-1:-1"])["ulimits"]
    assert (ulimit["Name"], ulimit["Soft"], ulimit["Hard"]) == ("memlock", -1, -1)
    with pytest.raises(StackError, match=r"does not support docker run option '--privileged'"):
        skypilot_container.task_run_options_kwargs(["--privileged"])


def test_smoke_uses_the_contract():
    options = smoke_run.run_options("2")
    contract = skypilot_container.run_kwargs(run_options=["--ipc=host"], gpus=2)
    assert {k: v for k, v in options.items() if k not in ("entrypoint", "tty", "stdin_open")} == \
        {k: v for k, v in contract.items() if k not in ("entrypoint", "tty", "stdin_open")}
    assert options["device_requests"][0]["Count"] == 2
    assert "device_requests" not in smoke_run.run_options("none")


def _fingerprint(paths):
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).exists() else None for path in paths}


@pytest.mark.container
def test_skypilots_docker_initializer_prepares_the_image(rehearsal_image, capsys):
    """SkyPilot's own container preparation (as for `image_id: docker:`) runs to completion on the image,
    and its prerequisite install finds nothing to install. The host is left as it was: the steps that act
    on the host are recorded, not run (tests/support/skypilot_start.py HOST_SIDE)."""
    from skyrl_stack.engine import client
    from tests.support.skypilot_start import HOST_SIDE, prepared_container

    watched = ["/etc/docker/daemon.json", "/etc/group"]
    before = _fingerprint(watched)
    with prepared_container(rehearsal_image.ref) as run:
        with capsys.disabled():
            print(f"\nDockerInitializer.initialize() on {rehearsal_image.ref}: {run.seconds:.1f}s")
        assert run.user == "root"
        assert run.recorded == list(HOST_SIDE)
        (run_line,) = run.run_lines
        assert "--ipc=host" in run_line and "--net=host" in run_line and "--entrypoint=/bin/bash" in run_line
        # The prerequisites are preinstalled: SkyPilot's apt-get install has nothing to install, and its
        # `fuse` resolves to the image's fuse3 (pinned; docker/Dockerfile) instead of replacing it.
        assert re.search(r"\b0 newly installed, 0 to remove\b", run.log), run.log[-3000:]
        assert "fuse3 is already the newest version" in run.log, run.log[-3000:]
        code, out = client().containers.get(run.container).exec_run(["/bin/bash", "-c",
                                        "grep -c RAY_RUNTIME_ENV_HOOK /etc/profile.d/container_env_var.sh; "
                                        "grep -q '^Port 10022' /etc/ssh/sshd_config && echo port-10022; pgrep -x sshd >/dev/null && echo sshd-up"])
        assert out.decode().split() == ["0", "port-10022", "sshd-up"], out
    assert _fingerprint(watched) == before
    assert not any(os.path.exists(lock) for lock in run.lock_files)
