"""Pins are inputs: check what a lock will install against pins.toml, before installing it.

Two locks decide what an image holds, and neither is ours to edit by hand:

- the rehearsal variant's ``docker/rehearsal/requirements.lock`` (hashed, made
  from the pins by ``invoke lock-rehearsal``): ``invoke build`` checks it on
  the host before BuildKit starts;
- SkyRL's own ``uv.lock`` at the pinned commit, for the GPU variants: the
  ``skyrl-lock-check`` stage of docker/Dockerfile runs ``uv export --frozen``
  on it and pipes the result into this file run as a script, before the
  ``uv sync`` that downloads gigabytes.

Either way a disagreement is one line naming the pin, e.g. ``pin [ray] version
= "2.49.0" disagrees with SkyRL's uv.lock at 1ed499c: it locks ray 2.48.0``.

Standard library only and Python 3.10 compatible, and it imports nothing from
this package: inside the build it runs as a lone script with the base image's
``python3`` (Ubuntu 22.04: 3.10).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from urllib.parse import unquote

# `name==version` or `name @ url`, then optional markers (`; ...`) or a line continuation.
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==\s*([^\s;\\]+)|@\s*(\S+))")
# A wheel's file name carries its version: {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl
_WHEEL = re.compile(r"^[^-]+-([^-]+)-.+\.whl$")


def normalise(name: str) -> str:
    """PEP 503 normalisation, so 'Flash_Attn' and 'flash-attn' compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """'2.7.1+cu128' -> '2.7.1': the local label names the build, the pin names the release."""
    return version.split("+", 1)[0]


def locked_versions(text: str) -> dict[str, set[str]]:
    """Package -> versions from requirements text (`uv export`, `uv pip compile`).

    A set, because an export may list one package twice under different
    markers (SkyRL's lock: torchvision for aarch64 and for the rest).
    """
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = _REQUIREMENT.match(line.strip())
        if not match:
            continue  # comments, hashes, `-e ./path`, index options
        name, version, url = match.groups()
        if url is not None:
            wheel = _WHEEL.match(unquote(url.rsplit("/", 1)[-1]))
            if wheel is None:
                continue  # a source URL says no version
            version = wheel.group(1)
        found.setdefault(normalise(name), set()).add(version)
    return found


def cuda_of(version: str) -> str | None:
    """'2.7.1+cu128' -> '12.8' (PyTorch's local label names the CUDA it was built for)."""
    match = re.search(r"\+cu(\d+)(\d)$", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def disagreements(expect: dict[str, tuple[str, str]], locked: dict[str, set[str]], source: str) -> list[str]:
    """One line per pin that the lock does not honour.

    expect: package -> (version, the pin it comes from). `torch_cuda` is
    compared with the CUDA in torch's local version label.
    """
    problems = []
    for package, (version, pin) in sorted(expect.items()):
        if package == "torch_cuda":
            cudas = sorted({cuda_of(v) or f"none ({v})" for v in locked.get("torch", ())})
            if version not in cudas:
                problems.append(f'pin {pin} = "{version}" disagrees with {source}: its torch is built for CUDA '
                                f"{', '.join(cudas) or 'nothing (no torch)'}")
            continue
        versions = sorted(locked.get(normalise(package), ()))
        if not versions:
            problems.append(f'pin {pin} = "{version}" disagrees with {source}: it has no {package}')
        elif version not in {public_version(v) for v in versions}:
            problems.append(f'pin {pin} = "{version}" disagrees with {source}: it locks {package} {", ".join(versions)}')
    return problems


def expectations(variant) -> dict[str, tuple[str, str]]:
    """A pins.Variant's expectations with the pin each comes from (what this module compares)."""
    return {package: (version, variant.pin_keys[package]) for package, version in variant.expect.items()}


def main(argv: list[str] | None = None) -> int:
    """`python3 lock_check.py --expect JSON --source TEXT < requirements`: exit 1 naming each pin that disagrees."""
    parser = argparse.ArgumentParser(prog="lock_check.py", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--expect", required=True, help='JSON: {"package": ["version", "pin"], ...} (from pins.toml)')
    parser.add_argument("--source", required=True, help="what the requirements on stdin are, for the message")
    args = parser.parse_args(argv)
    expect = {package: tuple(pair) for package, pair in json.loads(args.expect).items()}
    problems = disagreements(expect, locked_versions(sys.stdin.read()), args.source)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print("hint: change that pin in skyrl_stack/image/pins.toml to what the lock holds, or pin a SkyRL commit "
              "whose lock has your version", file=sys.stderr)
        return 1
    print(f"lock check: {len(expect)} pins agree with {args.source}: "
          + ", ".join(f"{p}=={v}" for p, (v, _) in sorted(expect.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
