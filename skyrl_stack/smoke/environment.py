"""Environment tier: Python, pinned packages, manifest drift, SkyPilot's container needs."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

from skyrl_stack.image.lock_check import public_version
from skyrl_stack.smoke.suite import Check, Fail, Skip

# What SkyPilot installs when missing: at container start on VMs
# (sky/provision/docker_utils.py), at pod start on Kubernetes (the pod script's
# PACKAGES and FUSE block, sky/templates/kubernetes-ray.yml.j2, which tests it
# by these executables) and before an rclone bucket mount
# (sky/data/mounting_utils.py FUSE3_INSTALL_CMD: fusermount3); each is (what we
# report, executables that prove it is there).
SKYPILOT_PREREQUISITES = (
    ("rsync", ("rsync",)),
    ("curl", ("curl",)),
    ("wget", ("wget",)),
    ("patch", ("patch",)),
    ("sshd", ("sshd",)),
    ("pip3", ("pip3",)),
    ("fuse", ("fusermount",)),
    ("fuse3", ("fusermount3",)),
    ("netcat", ("nc",)),
    ("gcc", ("gcc",)),
    ("pciutils", ("lspci",)),
)
# sshd lives in sbin, which a non-root PATH may lack.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
# Keys of a variant's `expect` that are facts, not distributions.
NON_PACKAGE_KEYS = {"torch_cuda"}
HOOK_VAR = "RAY_RUNTIME_ENV_HOOK"


def image_only(ctx) -> None:
    if ctx.host:
        raise Skip("checks the image, not this host (--host)")


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python(ctx) -> str:
    variant = ctx.require_variant()
    actual = platform.python_version()
    wanted = variant.python
    if actual != wanted and not actual.startswith(wanted + "."):
        raise Fail(f"python {actual}, pins say {wanted}")
    if ctx.manifest and ctx.manifest.get("python") != actual:
        raise Fail(f"python {actual}, manifest says {ctx.manifest.get('python')}")
    return f"python {actual} ({sys.executable})"


def check_manifest(ctx) -> str:
    if ctx.manifest is None:
        if ctx.host:
            raise Skip(f"no manifest on this host ({ctx.manifest_error})")
        raise Fail(f"no manifest: {ctx.manifest_error}")
    manifest = ctx.manifest
    # The variant and pins digest to hold the manifest against come from outside
    # the image (`invoke smoke` passes --variant and --expect-pins-digest from the
    # host's build record and pins.toml); judged only by the image's own files,
    # a container run would compare the manifest with itself.
    if ctx.variant is not None and manifest.get("variant") != ctx.variant.name:
        raise Fail(f"manifest is for variant {manifest.get('variant')!r}, checking {ctx.variant.name!r}")
    if ctx.expected_pins_digest and manifest.get("pins_digest") != ctx.expected_pins_digest:
        raise Fail(f"manifest pins {manifest.get('pins_digest')} differ from the {ctx.expected_pins_digest} "
                   "the host expects (its build record and pins.toml)")
    if ctx.pins is not None and manifest.get("pins_digest") != ctx.pins.digest():
        raise Fail(f"manifest pins {manifest.get('pins_digest')} differ from the image's pins.toml {ctx.pins.digest()}")
    against = "as the host expects" if ctx.expected_pins_digest else "unchecked by the host"
    return (f"variant {manifest.get('variant')}, pins {manifest.get('pins_digest')} ({against}), "
            f"{len(manifest.get('packages', {}))} packages")


def check_pinned_packages(ctx) -> str:
    variant = ctx.require_variant()
    wanted = {k: v for k, v in sorted(variant.expect.items()) if k not in NON_PACKAGE_KEYS}
    if not wanted:
        raise Skip("not in this variant (no pinned packages)")
    problems = []
    for name, version in wanted.items():
        actual = installed_version(name)
        if actual is None:
            problems.append(f"{name} not installed (pinned {version})")
        elif public_version(actual) != version:
            problems.append(f"{name} {actual} installed, pinned {version}")
    if problems:
        raise Fail("drift from pins: " + "; ".join(problems))
    return ", ".join(f"{k}=={v}" for k, v in wanted.items())


def package_drift(recorded: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Differences between the manifest's packages and the environment's, changed first."""
    changed = [f"{n} {recorded[n]} -> {installed[n]}" for n in recorded if n in installed and installed[n] != recorded[n]]
    missing = [f"{n} {recorded[n]} missing" for n in recorded if n not in installed]
    extra = [f"{n} {installed[n]} not in manifest" for n in installed if n not in recorded]
    return changed + missing + extra


def check_manifest_packages(ctx) -> str:
    from skyrl_stack.image.manifest import installed_packages

    recorded = ctx.manifest.get("packages", {})
    drift = package_drift(recorded, installed_packages())
    if drift:
        shown = "; ".join(drift[:5]) + (f"; +{len(drift) - 5} more" if len(drift) > 5 else "")
        raise Fail(f"drift from manifest ({len(drift)}): {shown}")
    return f"{len(recorded)} packages as recorded"


def find_executable(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_BIN_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def missing_prerequisites(find=find_executable) -> list[str]:
    return [what for what, executables in SKYPILOT_PREREQUISITES if not any(find(e) for e in executables)]


def check_skypilot_prereqs(ctx) -> str:
    image_only(ctx)
    missing = missing_prerequisites()
    if missing:
        raise Fail(f"missing SkyPilot container prerequisites: {', '.join(missing)} (SkyPilot would apt-install them at every start)")
    return " ".join(what for what, _ in SKYPILOT_PREREQUISITES)


def check_root_or_sudo(ctx) -> str:
    image_only(ctx)
    if os.geteuid() == 0:
        return "running as root"
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=30, check=False).returncode == 0:
        return f"uid {os.geteuid()} with passwordless sudo"
    raise Fail(f"uid {os.geteuid()} is not root and has no passwordless sudo (SkyPilot needs one of them)")


def check_runtime_env_hook(ctx) -> str:
    image_only(ctx)
    value = os.environ.get(HOOK_VAR)
    if value:
        raise Fail(f"{HOOK_VAR}={value} is set; it breaks SkyPilot's own Ray (skypilot#7180)")
    return f"{HOOK_VAR} not set"


def check_login_shell(ctx) -> str:
    """SkyPilot runs setup/run through `bash -l`, whose /etc/profile resets PATH."""
    image_only(ctx)
    out = subprocess.run(["bash", "-lc", "command -v python"], capture_output=True, text=True, timeout=60, check=False)
    found = out.stdout.strip()
    wanted = os.path.join(sys.prefix, "bin", "python")
    if found != wanted:
        raise Fail(f"a login shell finds python at {found or 'nowhere'}, not the image's {wanted}")
    return f"bash -l finds {found}"


CHECKS = [
    Check("environment.python", check_python),
    Check("environment.manifest", check_manifest),
    Check("environment.pinned-packages", check_pinned_packages),
    Check("environment.manifest-packages", check_manifest_packages, requires=("environment.manifest",)),
    Check("environment.skypilot-prereqs", check_skypilot_prereqs),
    Check("environment.root-or-sudo", check_root_or_sudo),
    Check("environment.ray-runtime-env-hook", check_runtime_env_hook),
    Check("environment.login-shell", check_login_shell),
]
