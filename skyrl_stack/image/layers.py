"""Balanced layers: which image layer each locked package is installed in.

A node pulls a layer as one stream and unpacks it on one core, and a change
to any package re-pushes its whole layer. So the Python environment is not
one layer but a few, grouped by how often a group changes and how big it is,
least changing first (docker/Dockerfile, stages venv-skyrl and
venv-rehearsal):

    cudnn-cublas, cuda   the nvidia-* CUDA wheels torch pins, in two halves
            (GBs; they change with torch's CUDA)
    torch   torch, triton, flash-attn and torch's own companions
    engine  the inference engine and its compiled kernels (vLLM or SGLang)
    ray     Ray (its own pin in pins.toml; the rehearsal's biggest package)
    rest    everything else in the lock
    (then SkyRL itself, installed by the final `uv sync`)

Every layer still installs from the lock: the GPU targets run `uv sync
--frozen --inexact` with `--no-install-package` for each package of a later
group (``no-install`` below), the rehearsal target `uv pip install
--require-hashes --no-deps` of one group's entries of its hashed lock
(``select`` below); a final exact sync then proves the layers add up to the
lock.

The build runs this file as a lone script with the base image's python3
(Ubuntu 22.04: 3.10), so the build side is standard library only, like
lock_check.py. ``expected_gpu_layers`` (host side) estimates the GPU images'
layer table from the wheel sizes in SkyRL's uv.lock.
"""
from __future__ import annotations

import argparse
import re
import sys

try:  # a lone script inside the build; a package module on the host
    from lock_check import normalise
except ImportError:  # pragma: no cover - the package import path
    from skyrl_stack.image.lock_check import normalise

# Ordered, least changing first. A package belongs to the first group whose
# pattern matches its normalised name; `rest` takes what none matches.
# SkyRL's vLLM lock: cuDNN + cuBLAS 1.3 GB, the other CUDA wheels 1.4 GB (wheel bytes),
# hence two CUDA layers.
GROUPS: list[tuple[str, str]] = [
    ("cudnn-cublas", r"nvidia-cudnn-cu\d+|nvidia-cublas-cu\d+"),
    ("cuda", r"nvidia-.*|cupy-cuda\d+x"),
    ("torch", r"torch|torchvision|torchaudio|triton|flash-attn|xformers"),
    ("engine", r"vllm|sglang|sgl-kernel|flashinfer-python|xgrammar|llguidance|outlines-core|outlines|compressed-tensors"
               r"|torchao|cuda-python|cuda-bindings|nixl"),
    ("ray", r"ray"),
    ("rest", r".*"),
]
GROUP_NAMES = [name for name, _ in GROUPS]
# The project and its workspace members: installed by the last, exact `uv sync`.
PROJECT_PACKAGES = {"skyrl-train", "skyrl-gym"}

# `name==version`, `name @ url` or `-e ./path`: the first line of one requirements entry.
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==|@)")


def group_of(package: str) -> str:
    """The layer group of a package name (any spelling: 'Flash_Attn' is flash-attn)."""
    name = normalise(package)
    for group, pattern in GROUPS:
        if re.fullmatch(pattern, name):
            return group
    raise AssertionError("unreachable: the last group matches everything")


def entries(text: str) -> list[tuple[str, str]]:
    """(normalised name, the entry's text) for each requirement in requirements text.

    An entry is its first line plus its continuation lines (hashes, `# via`
    comments); comments, options and editable paths (`-e ./skyrl-gym`: the
    project's own) are not entries.
    """
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line[:1].isspace() and found:
            found[-1][1].append(line)
            continue
        match = _NAME.match(line.strip())
        found.append((normalise(match.group(1)), [line]) if match else ("", [line]))
    return [(name, "\n".join(lines)) for name, lines in found if name]


def later_packages(text: str, upto: str) -> list[str]:
    """Packages of the lock in a group after `upto` (or the project's): what a layer must not install yet."""
    index = GROUP_NAMES.index(upto)
    names = {name for name, _ in entries(text) if GROUP_NAMES.index(group_of(name)) > index}
    return sorted(names | PROJECT_PACKAGES)


def select(text: str, group: str) -> str:
    """The entries of one group, as requirements text (hashes kept for --require-hashes)."""
    return "".join(entry + "\n" for name, entry in entries(text) if group_of(name) == group)


def _sizes_by_group(export_text: str, lock: dict, environment: dict, tags: set) -> dict:
    """Wheel bytes per group for the packages of an export that apply in `environment`."""
    from packaging.markers import Marker
    from packaging.utils import parse_wheel_filename

    packages = {}
    for package in lock["package"]:
        packages.setdefault(normalise(package["name"]), []).append(package)
    totals = {group: {"bytes": 0, "packages": 0, "unsized": []} for group in GROUP_NAMES}
    for name, entry in entries(export_text):
        first = entry.splitlines()[0]
        marker = first.split(";", 1)[1].strip() if ";" in first else ""
        if marker and not Marker(marker).evaluate(environment):
            continue
        version = re.search(r"==\s*([^\s;\\]+)", first)
        candidates = [p for p in packages.get(name, ()) if version is None or p["version"] == version.group(1)]
        if version is None:  # `name @ url`: the lock entry with that URL
            url = first.split("@", 1)[1].split(";", 1)[0].strip()
            candidates = [p for p in candidates if p.get("source", {}).get("url") == url] or candidates
        wheel = next((w for p in candidates for w in p.get("wheels", ())
                      if tags & set(parse_wheel_filename(w["url"].rsplit("/", 1)[-1].replace("%2B", "+"))[3])), None)
        group = totals[group_of(name)]
        group["packages"] += 1
        if wheel is None or "size" not in wheel:
            # A URL-sourced wheel (flash-attn, flashinfer): uv.lock records no size for it.
            group["unsized"].append(name)
        else:
            group["bytes"] += wheel["size"]
    return totals


def expected_gpu_layers(export_text: str, lock_text: str, python: str = "3.12") -> dict:
    """The GPU image's Python layers as the lock's compressed wheel bytes per group, for linux x86_64 CPython.

    export_text: `uv export --frozen --no-hashes --no-emit-project --extra X` of the lock (uv decides
    which packages an extra installs); lock_text: the uv.lock, whose wheel entries carry `size`. The
    wheel is the one uv would pick: a tag the interpreter supports (packaging.tags, manylinux x86_64).
    """
    import tomllib

    from packaging import tags

    major, minor = (int(part) for part in python.split(".")[:2])
    platforms = [f"manylinux_2_{glibc}_x86_64" for glibc in range(35, 4, -1)] + \
        ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    supported = set(tags.cpython_tags((major, minor), platforms=platforms)) | \
        set(tags.compatible_tags((major, minor), f"cp{major}{minor}", platforms=platforms))
    environment = {"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux",
                   "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.0", "extra": ""}
    return _sizes_by_group(export_text, tomllib.loads(lock_text), environment, supported)


def main(argv: list[str] | None = None) -> int:
    """In the build: `layers.py no-install --upto G < export` / `layers.py select --group G < lock`."""
    parser = argparse.ArgumentParser(prog="layers.py", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    no_install = commands.add_parser("no-install", help="uv sync arguments that hold back every later group")
    no_install.add_argument("--upto", required=True, choices=GROUP_NAMES)
    chosen = commands.add_parser("select", help="the requirements entries of one group")
    chosen.add_argument("--group", required=True, choices=GROUP_NAMES)
    args = parser.parse_args(argv)
    text = sys.stdin.read()
    if args.command == "no-install":
        print(" ".join(f"--no-install-package {name}" for name in later_packages(text, args.upto)))
    else:
        sys.stdout.write(select(text, args.group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
