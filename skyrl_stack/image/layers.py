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
group (``sync-args`` below), the rehearsal target `uv pip install
--require-hashes --no-deps` of one group's entries of its hashed lock
(``select`` below); a final exact sync then proves the layers add up to the
lock.

Prebuilt wheels (``prebuilt`` below): a package that SkyRL's lock gives a
variant only as a source distribution, where the same lock records a prebuilt
wheel of the same release for another extra, is held back from every sync of
that variant (and may never be built) and installed, in its group's layer,
from that wheel by URL and sha256 (`uv pip install --require-hashes
--no-deps`). SkyRL's uv.lock at 1ed499c: the sglang extra gets
flashinfer-python 0.2.6.post1 from PyPI, an sdist only (sglang 0.4.8.post1's
srt extra pins `flashinfer-python==0.2.6.post1`), whose isolated build env
would install whatever torch is newest that day (`uv sync --frozen` ignores
build constraints); the vllm extra's entry is the prebuilt
flashinfer_python-0.2.6.post1+cu128torch2.7 wheel from PyTorch's cu128 index,
the one SkyRL's pyproject.toml [tool.uv.sources] names for sglang too.

The build runs this file as a lone script with whichever python3 comes first
(the base image's 3.10 in the lock check), so the build side is standard library
only and Python 3.10, like lock_check.py (tests/image/test_pins.py runs vermin). ``expected_gpu_layers`` (host side) estimates the GPU images'
layer table from the wheel sizes in SkyRL's uv.lock.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

try:  # a lone script inside the build; a package module on the host
    from lock_check import locked_versions, normalise, public_version
except ImportError:  # pragma: no cover - the package import path
    from skyrl_stack.image.lock_check import locked_versions, normalise, public_version

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
# The project and its workspace members: installed by the last `uv sync` (install-layer's last step, PROJECT).
PROJECT_PACKAGES = {"skyrl-train", "skyrl-gym"}
PROJECT = "project"
# Never compiled in the build: each comes as a wheel (the lock's URL wheels, PyTorch's index, PyPI), and a
# sync that would build one from source fails instead (prebuilt packages are added to these).
NEVER_BUILT = ("flash-attn", "torch", "vllm", "sglang")

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


def sync_arguments(locked: str, step: str, prebuilt: str = "") -> list[str]:
    """The `uv sync` arguments (all but `--extra`) of one install-layer step of the GPU targets.

    locked: the checked export of the variant's lock; step: a group, or PROJECT for the last sync;
    prebuilt: the hashed entries of the prebuilt wheels (``prebuilt`` below), each held back from
    every sync and never built. A layer's sync only adds (--inexact); the last one is exact, so
    it removes anything the lock does not hold, unless a prebuilt wheel is held back: uv removes a
    `--no-install-package` package that is installed in an exact sync, and without the hold-back it
    would replace the wheel (a URL install) with the lock's registry sdist (uv 0.8.22's planner;
    tests/image/test_layers.py shows both).
    """
    held_prebuilt = sorted({name for name, _ in entries(prebuilt)})
    if step == PROJECT:
        args = ["--frozen", "--no-dev"] + (["--inexact"] if held_prebuilt else [])
        held = held_prebuilt
    else:
        args = ["--frozen", "--no-dev", "--inexact", "--no-install-project"]
        held = sorted(set(later_packages(locked, step)) | set(held_prebuilt))
    args += [arg for name in held for arg in ("--no-install-package", name)]
    args += [arg for name in sorted(set(NEVER_BUILT) | set(held_prebuilt)) for arg in ("--no-build-package", name)]
    return args


def prebuilt_entries(exports: dict[str, str], locked: str, expect: dict[str, list[str]]) -> str:
    """The hashed requirements entries of the prebuilt wheels a variant installs instead of its lock's sdists.

    expect: package -> [the extra whose export holds the wheel, the pin that says so];
    exports: extra -> `uv export --frozen --no-emit-project --extra EXTRA` (with hashes) of the same lock;
    locked: the variant's own checked export. Raises ValueError, naming the pin, unless the entry is a
    wheel URL with a sha256 from the lock, of the release the variant's own lock holds (local label aside).
    """
    own = locked_versions(locked)
    found = []
    for package, (extra, pin) in sorted(expect.items()):
        name, said = normalise(package), f'pin {pin} = "{extra}"'
        entry = next((text for entry_name, text in entries(exports[extra]) if entry_name == name), None)
        if entry is None:
            raise ValueError(f"{said}: SkyRL's lock gives extra {extra} no {package}")
        requirement = entry.splitlines()[0].rstrip(" \\")
        url = re.search(r"@\s*(\S+)", requirement)
        if url is None or not url.group(1).startswith("https://") or not url.group(1).endswith(".whl"):
            raise ValueError(f"{said}: extra {extra} locks `{requirement}`, not a wheel by URL")
        if not re.search(r"--hash=sha256:[0-9a-f]{64}", entry):
            raise ValueError(f"{said}: SkyRL's lock records no sha256 for {package}'s wheel")
        wheel = {public_version(v) for v in locked_versions(requirement).get(name, ())}
        wanted = {public_version(v) for v in own.get(name, ())}
        if not wanted or wheel != wanted:
            raise ValueError(f"{said}: extra {extra}'s wheel is {package} {', '.join(sorted(wheel))}, "
                             f"this variant's lock holds {', '.join(sorted(wanted)) or 'none'}")
        # The requirement and its hashes; the export's `# via` lines name the other extra's dependents.
        found.append("\n".join(line for line in entry.splitlines() if not line.strip().startswith("#")))
    return "".join(entry + "\n" for entry in found)


def select(text: str, group: str) -> str:
    """The entries of one group, as requirements text (hashes kept for --require-hashes)."""
    return "".join(entry + "\n" for name, entry in entries(text) if group_of(name) == group)


def _chosen_wheels(export_text: str, lock: dict, environment: dict, tags: set) -> list[tuple[str, dict | None]]:
    """(package, the wheel uv would pick or None) for the packages of an export that apply in `environment`."""
    from packaging.markers import Marker
    from packaging.utils import parse_wheel_filename

    packages = {}
    for package in lock["package"]:
        packages.setdefault(normalise(package["name"]), []).append(package)
    chosen = []
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
        if wheel is None and version is None:  # a URL wheel: the lock entry's wheel has the URL, and no size
            wheel = {"url": first.split("@", 1)[1].split(";", 1)[0].strip()}
        chosen.append((name, wheel))
    return chosen


def _sizes_by_group(chosen: list[tuple[str, dict | None]]) -> dict:
    """Wheel bytes per group for the chosen wheels (``_chosen_wheels``)."""
    totals = {group: {"bytes": 0, "packages": 0, "unsized": []} for group in GROUP_NAMES}
    for name, wheel in chosen:
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
    which packages an extra installs); lock_text: the uv.lock, whose wheel entries carry `size`.
    """
    return _sizes_by_group(locked_wheels(export_text, lock_text, python))


def locked_wheels(export_text: str, lock_text: str, python: str = "3.12") -> list[tuple[str, dict | None]]:
    """(package, wheel) for each package an export installs on linux x86_64 CPython: the wheel uv would
    pick (a tag the interpreter supports: packaging.tags, manylinux x86_64), as the lock records it (url,
    and size where the lock has one); None where the lock has no wheel for it (a source distribution)."""
    import tomllib  # novermin: host side only (the layer table estimate), Python 3.11+

    from packaging import tags

    major, minor = (int(part) for part in python.split(".")[:2])
    platforms = [f"manylinux_2_{glibc}_x86_64" for glibc in range(35, 4, -1)] + \
        ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    supported = set(tags.cpython_tags((major, minor), platforms=platforms)) | \
        set(tags.compatible_tags((major, minor), f"cp{major}{minor}", platforms=platforms))
    environment = {"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux",
                   "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.0", "extra": ""}
    return _chosen_wheels(export_text, tomllib.loads(lock_text), environment, supported)


def _export_with_hashes(extra: str) -> str:
    """`uv export` of the SkyRL lock in the working directory, with the hashes the lock records."""
    import subprocess

    return subprocess.run(["uv", "export", "--frozen", "--no-emit-project", "--extra", extra],
                          capture_output=True, text=True, check=True).stdout


def main(argv: list[str] | None = None) -> int:
    """In the build, with the checked export on stdin: `layers.py sync-args --step G [--prebuilt FILE]`,
    `layers.py prebuilt --expect JSON` (in SkyRL's project directory); `layers.py select --group G < lock`."""
    parser = argparse.ArgumentParser(prog="layers.py", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync-args", help="the uv sync arguments (all but --extra) of one install-layer step")
    sync.add_argument("--step", required=True, choices=GROUP_NAMES + [PROJECT])
    sync.add_argument("--prebuilt", help="the prebuilt wheels' entries (a file written by `prebuilt`)")
    prebuilt = commands.add_parser("prebuilt", help="the hashed entries of the prebuilt wheels, from SkyRL's lock")
    prebuilt.add_argument("--expect", required=True, help='JSON: {"package": ["extra", "pin"], ...} (from pins.toml)')
    chosen = commands.add_parser("select", help="the requirements entries of one group")
    chosen.add_argument("--group", required=True, choices=GROUP_NAMES)
    args = parser.parse_args(argv)
    text = sys.stdin.read()
    if args.command == "sync-args":
        wheels = open(args.prebuilt).read() if args.prebuilt else ""
        print(" ".join(sync_arguments(text, args.step, wheels)))
    elif args.command == "prebuilt":
        expect = json.loads(args.expect)
        try:
            sys.stdout.write(prebuilt_entries({extra: _export_with_hashes(extra) for extra, _ in expect.values()},
                                              text, expect))
        except ValueError as problem:
            print(f"error: {problem}", file=sys.stderr)
            print("hint: change that pin in skyrl_stack/image/pins.toml, or pin a SkyRL commit whose lock has a prebuilt "
                  "wheel of that release", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(select(text, args.group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
