"""SkyPilot's container contract, in one place: how SkyPilot starts `sky_container` and runs a job in it.

`invoke smoke`, `invoke launch --cloud local` and the tests all start
containers through `run_kwargs` and run jobs through `job_script`, so there is
one copy of these rules, transcribed from SkyPilot's own code (tested range in
pins.toml [skypilot]; read at 0.14.1 and 0.10.5, which differ only where noted):

- `sky/provision/docker_utils.py::docker_start_cmds`:
  `docker run --name sky_container -d -it -e LC_ALL=C.UTF-8 -e LANG=C.UTF-8
  <run_options> --net=host --cap-add=SYS_ADMIN --cap-add=SYS_RESOURCE
  --device=/dev/fuse --security-opt=apparmor:unconfined --entrypoint=/bin/bash IMAGE`
  (0.10.5 has no --cap-add=SYS_RESOURCE; we follow the newer line, see capabilities()).
- `DockerInitializer._auto_configure_shm`: `--shm-size` = min(MemAvailable x 0.3
  x 1.1, 200e9) bytes, unless the task's run_options already set one.
- `DockerInitializer._configure_runtime`: `--runtime=nvidia --gpus all` where the
  engine has the NVIDIA runtime (and the host has GPUs).
- `sky/skylet/log_lib.py::make_task_bash_script` + `run_bash_command_with_log`:
  a task's `setup:`/`run:` is written to a script that sources ~/.bashrc (0.14.1
  guards it with `[ -f ~/.bashrc ]`; 0.10.5 sources it unguarded),
  exports PYTHONUNBUFFERED=1, cd's to ~/sky_workdir, exports the task's envs,
  and runs under `/bin/bash -i`, as the container's default user (SkyPilot
  ssh-es in as the user `whoami` reports in the container: root for our images).
  Running it that way (and skipping `bash -i`'s terminal warnings) is skylet.py's
  part: it goes into the node alone, standard library only.
"""
from __future__ import annotations

import os
import shlex

# docker_start_cmds: `env_vars = {'LC_ALL': 'C.UTF-8', 'LANG': 'C.UTF-8'}` ("for click, used in ray cli").
ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
CAPABILITIES = ["SYS_ADMIN", "SYS_RESOURCE"]
SECURITY_OPT = ["apparmor:unconfined"]
ENTRYPOINT = "/bin/bash"
FUSE_DEVICE = "/dev/fuse"
# docker_utils.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION and DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES.
SHM_PROPORTION = 0.3 * 1.1
SHM_MAX_BYTES = 200 * 10**9
# Linux capability numbers (linux/capability.h), to read the bounding set.
_CAP_NUMBERS = {"SYS_ADMIN": 21, "SYS_RESOURCE": 24}

# log_lib.make_task_bash_script: SkyPilot's constants.SKY_REMOTE_WORKDIR.
WORKDIR = "~/sky_workdir"


def capabilities(status_path: str = "/proc/self/status") -> list[str]:
    """SkyPilot's --cap-add list, less what this kernel's capability bounding set lacks.

    Some kernels (such as this project's CI machines) lack CAP_SYS_RESOURCE, and the
    engine refuses the whole container with "invalid CapAdd"; SkyPilot's VMs have it.
    """
    try:
        with open(status_path) as fh:
            bounding = next(int(line.split()[1], 16) for line in fh if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return list(CAPABILITIES)  # not Linux, or no /proc: ask for everything, as SkyPilot does
    return [cap for cap in CAPABILITIES if bounding >> _CAP_NUMBERS[cap] & 1]


def shm_size(meminfo_path: str = "/proc/meminfo") -> int:
    """SkyPilot's automatic --shm-size: 30% of MemAvailable plus 10%, capped at 200 GB."""
    with open(meminfo_path) as fh:
        available_kib = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
    return int(min(available_kib * 1024 * SHM_PROPORTION, SHM_MAX_BYTES))


def task_run_options_kwargs(run_options: list[str]) -> dict:
    """The task's `config.docker.run_options` as docker SDK arguments (the ones our tasks use)."""
    from docker.types import Ulimit

    from skyrl_stack.errors import StackError

    kwargs: dict = {}
    for option in run_options:
        flag, _, value = option.replace(" ", "=", 1).partition("=")
        if flag == "--ipc":
            kwargs["ipc_mode"] = value
        elif flag == "--shm-size":
            kwargs["shm_size"] = value.strip('"')
        elif flag == "--ulimit":
            name, _, limits = value.partition("=")
            soft, _, hard = limits.partition(":")
            kwargs.setdefault("ulimits", []).append(Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))
        else:
            raise StackError(f"the local cluster does not support docker run option {option!r}", hint="remove it from config.docker.run_options")
    return kwargs


def run_kwargs(*, run_options: list[str] | None = None, gpus: int | None = None, network: str = "host",
               nvidia_runtime: bool = False) -> dict:
    """docker SDK `containers.create` keyword arguments for SkyPilot's `docker run` line.

    gpus: None for none, -1 for all (SkyPilot's `--gpus all`), or a count.
    network: "host" as SkyPilot (`--net=host`); the local cluster passes its own
    network instead, so that N nodes on one machine get N addresses.
    nvidia_runtime: whether the engine lists the NVIDIA runtime (SkyPilot adds
    `--runtime=nvidia` only then).
    """
    kwargs = {
        "entrypoint": ENTRYPOINT,
        "tty": True,  # -it keeps bash, the entrypoint, alive
        "stdin_open": True,
        "environment": dict(ENV),
        "network_mode": network,
        "cap_add": capabilities(),
        "security_opt": list(SECURITY_OPT),
    }
    if os.path.exists(FUSE_DEVICE):  # only where the host has FUSE (SkyPilot's VMs do)
        kwargs["devices"] = [f"{FUSE_DEVICE}:{FUSE_DEVICE}:rwm"]
    options = list(run_options or [])
    kwargs.update(task_run_options_kwargs(options))
    if not any("--shm-size" in option for option in options):
        kwargs["shm_size"] = shm_size()
    if gpus is not None and gpus != 0:
        from docker.types import DeviceRequest

        kwargs["device_requests"] = [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
        if nvidia_runtime:
            kwargs["runtime"] = "nvidia"
    return kwargs


def job_script(user_script: str, envs: dict[str, str]) -> str:
    """The script SkyPilot runs for a task's `setup:`/`run:` (log_lib.make_task_bash_script).

    SkyPilot's conda and runtime-env lines are left out: our images have neither.
    ~/sky_workdir is created, as SkyPilot's workdir sync does.
    """
    lines = [
        "#!/bin/bash",
        "[ -f ~/.bashrc ] && source ~/.bashrc",
        "export PYTHONUNBUFFERED=1",
        f"mkdir -p {WORKDIR} && cd {WORKDIR}",
    ]
    lines += [f"export {key}={shlex.quote(str(value))}" for key, value in envs.items()]
    return "\n".join(lines + [user_script, ""])
