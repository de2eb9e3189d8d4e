"""The build definition: every build argument, label and tag, derived from the pins.

Produces a `docker buildx bake` definition (JSON). It is pure data from
`pins.toml`, so golden tests pin it and `docker buildx bake --print` checks the
production targets statically on machines that cannot build them.
"""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image import skyrl_patches
from skyrl_stack.image.lock_check import expectations
from skyrl_stack.image.pins import Pins, Variant
from skyrl_stack.image.refs import validate_repository, validate_tag
from skyrl_stack.project import project_root

DOCKERFILE = "docker/Dockerfile"
LABEL_PREFIX = "io.skyrl-stack"

# Layer compression. zstd is the default: every target SkyPilot launches on
# pulls it (Docker Engine >= 23 and containerd >= 1.5 on the nodes; ECR, GHCR,
# GAR and Docker Hub store OCI zstd layers), and it unpacks ~4x faster than
# gzip (README, Build). gzip is for older engines or registries that refuse
# zstd. The image is pushed as built, so the choice is made at build time.
COMPRESSIONS = ("zstd", "gzip")
DEFAULT_COMPRESSION = "zstd"


def validate_compression(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise StackError(f"unknown layer compression {compression!r}",
                         hint=f"use one of: {', '.join(COMPRESSIONS)} (zstd needs Docker >= 23 or containerd >= 1.5)")
    return compression


def image_output(compression: str) -> str:
    """Export straight into the engine's (containerd) image store, unpacked.

    No archive, no `docker load`, no rewrite-timestamp: unchanged layers keep
    their blobs and only new layers are compressed (timestamps are made
    deterministic where each layer is produced, see the Dockerfile's SHELL).
    force-compression: base layers too get the chosen compression (BuildKit
    keeps the converted blob, so this is paid once per base layer)."""
    return (f"type=image,compression={validate_compression(compression)},force-compression=true,"
            "oci-mediatypes=true")

def descriptive_tag(pins: Pins, variant: Variant) -> str:
    """A tag that says what is inside, e.g. vllm-skyrl1ed499c-ray2.48.0-py3.12-cu12.8."""
    parts = [variant.name]
    if variant.has_skyrl:
        parts.append(f"skyrl{pins.skyrl_commit[:7]}")
    parts += [f"ray{pins.ray}", f"py{variant.python_minor}", f"cu{pins.cuda}" if variant.gpu else "cpu"]
    return validate_tag("-".join(parts))


def pins_tag(pins: Pins, variant: Variant) -> str:
    """A tag that names the exact pins (content-addressed by the pins' hash)."""
    return validate_tag(f"{variant.name}-pins-{pins.digest()}")


def tags(pins: Pins, variant: Variant, repository: str) -> list[str]:
    validate_repository(repository)
    return [f"{repository}:{descriptive_tag(pins, variant)}", f"{repository}:{pins_tag(pins, variant)}"]


# Everything the build reads besides the pins (which live in skyrl_stack/image/): the
# Dockerfile's context, i.e. all it COPYs or bind-mounts (skyrl_stack/ is mounted whole to
# install the package). The input fingerprint (build.py) hashes these files and the
# revision label names the last commit that changed them, from this one list.
BUILD_INPUTS = ("docker", "skyrl_stack", ".dockerignore")


def git_revision() -> str:
    """The last commit that changed what the build reads (BUILD_INPUTS), for the OCI revision
    label; '-dirty' when those files have uncommitted edits (or new files).

    Not HEAD: a commit that touches nothing the build reads (README, tests, infra/)
    then keeps the label, so the image's digest, its build record (the build is
    skipped as up to date) and its smoke record stay valid."""
    git = ["git", "-C", str(project_root())]
    try:
        rev = subprocess.run([*git, "log", "-1", "--format=%H", "--", *BUILD_INPUTS],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", *BUILD_INPUTS],
                               capture_output=True, text=True, check=True).stdout.strip()
        # Relative to the checkout unless git answers an absolute path (no --path-format: git < 2.31 lacks it).
        shallow = project_root() / subprocess.run([*git, "rev-parse", "--git-path", "shallow"],
                                                  capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not rev:  # a checkout whose history never touched the inputs
        return "unknown"
    if rev in _shallow_boundary(shallow):
        # A shallow clone's oldest commit (actions/checkout's default depth 1: HEAD) shows every file as
        # added, so it is "the last change" whether or not it changed an input: the true commit is not in
        # the clone. Not HEAD, which would give every commit a new digest (a fetch-depth 0 clone knows).
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def _shallow_boundary(path: Path) -> set[str]:
    """The commits a shallow clone is cut at (git's `shallow` file; none in a full clone)."""
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def build_args(pins: Pins, variant: Variant, base_image: str | None = None) -> dict[str, str]:
    args = {
        "BASE_IMAGE": base_image or variant.base_image,
        "APT_SNAPSHOT": variant.apt_snapshot,
        "VARIANT": variant.name,
        "PYTHON_VERSION": variant.python,
        "UV_VERSION": pins.uv,
        "UV_SHA256": pins.uv_sha256,
        "SOURCE_DATE_EPOCH": str(pins.source_date_epoch),
    }
    if variant.gpu:
        # The pinned Dockerfile frontend: BuildKit's built-in one forwards the build to it (build.go, func
        # Build: BUILDKIT_SYNTAX before any `# syntax=` line). Not for the rehearsal, which must build offline.
        args["BUILDKIT_SYNTAX"] = pins.dockerfile_frontend
    if variant.has_skyrl:
        args.update(
            VENV_STAGE="venv-skyrl",
            SKYRL_REPO=pins.skyrl_repo,
            SKYRL_COMMIT=pins.skyrl_commit,
            SKYRL_SUBDIR=pins.skyrl_subdir,
            SKYRL_EXTRA=variant.skyrl_extra,
            # What skyrl-lock-check compares with SkyRL's uv.lock, each with the pin it comes from.
            SKYRL_LOCK_EXPECT=json.dumps(expectations(variant), sort_keys=True),
            # What skyrl-lock-check takes from the lock as prebuilt wheels (layers.py prebuilt), with their pins.
            SKYRL_PREBUILT=json.dumps({package: [extra, f"[variants.{variant.name}.prebuilt] {package}"]
                                       for package, extra in variant.prebuilt.items()}, sort_keys=True),
            # What skyrl-source applies to the checkout, each file with its pinned sha256 ([skyrl.patches]).
            SKYRL_PATCHES=skyrl_patches.build_arg(pins),
        )
    else:
        args.update(VENV_STAGE="venv-rehearsal", REHEARSAL_LOCK=variant.lock)
    return args


def labels(pins: Pins, variant: Variant, base_image: str | None = None, revision: str | None = None) -> dict[str, str]:
    """OCI labels plus every pin, so `docker inspect` tells what an image holds."""
    base = base_image or variant.base_image
    created = datetime.fromtimestamp(pins.source_date_epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {
        "org.opencontainers.image.title": f"skyrl-stack {variant.name}",
        "org.opencontainers.image.description": variant.description,
        "org.opencontainers.image.version": descriptive_tag(pins, variant),
        "org.opencontainers.image.revision": revision if revision is not None else git_revision(),
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": base,
        f"{LABEL_PREFIX}.variant": variant.name,
        f"{LABEL_PREFIX}.pins-digest": pins.digest(),
        f"{LABEL_PREFIX}.python.version": variant.python,
        f"{LABEL_PREFIX}.uv.version": pins.uv,
        f"{LABEL_PREFIX}.ray.version": pins.ray,
        f"{LABEL_PREFIX}.skypilot.tested": pins.skypilot_tested,
    }
    if "@sha256:" in base:
        result["org.opencontainers.image.base.digest"] = base.split("@", 1)[1]
    if variant.apt_snapshot:
        result[f"{LABEL_PREFIX}.apt.snapshot"] = variant.apt_snapshot
    if variant.gpu:
        result[f"{LABEL_PREFIX}.cuda.version"] = pins.cuda
        result[f"{LABEL_PREFIX}.dockerfile.frontend"] = pins.dockerfile_frontend
    if variant.has_skyrl:
        result[f"{LABEL_PREFIX}.skyrl.repo"] = pins.skyrl_repo
        result[f"{LABEL_PREFIX}.skyrl.ref"] = pins.skyrl_ref
        result[f"{LABEL_PREFIX}.skyrl.commit"] = pins.skyrl_commit
        result[f"{LABEL_PREFIX}.skyrl.extra"] = variant.skyrl_extra
        if pins.skyrl_patches:
            result[f"{LABEL_PREFIX}.skyrl.patches"] = skyrl_patches.label(pins)
    for package, version in sorted(variant.expect.items()):
        result[f"{LABEL_PREFIX}.expect.{package}"] = version
    return result


def bake_definition(
    pins: Pins,
    variants: list[Variant],
    repository: str,
    *,
    base_image: str | None = None,
    ca_bundle: str | None = None,
    export: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    revision: str | None = None,
    cache_ref: str | None = None,
    git_token_env: str | None = None,
) -> dict:
    """The `docker buildx bake` JSON for these variants; with `export`, each
    target is stored in the engine under its tags (image_output)."""
    targets = {}
    revision = revision if revision is not None else git_revision()  # once for all targets (two git calls)
    for variant in variants:
        target = {
            "context": ".",
            "dockerfile": DOCKERFILE,
            "target": variant.target,
            "platforms": [pins.platform],
            "args": build_args(pins, variant, base_image),
            "labels": labels(pins, variant, base_image, revision),
            "tags": tags(pins, variant, repository),
            # Provenance attestations embed build times: off for local,
            # reproducible builds (the CI pipeline attaches its own).
            "attest": ["type=provenance,disabled=true", "type=sbom,disabled=true"],
        }
        if cache_ref:
            # A registry build cache (CI runners start empty), one tag per
            # variant so parallel builds do not overwrite each other's; the
            # engine's own builder (the one the build uses) exports it only
            # with the containerd image store, which the build requires anyway.
            ref = f"{cache_ref}:{variant.name}"
            target["cache-from"] = [f"type=registry,ref={ref}"]
            target["cache-to"] = [f"type=registry,ref={ref},mode=max"]
        secrets = []
        if ca_bundle:
            secrets.append(f"id=ca,src={ca_bundle}")
        if git_token_env:  # only the variable's name: BuildKit reads the value at build time
            secrets.append(f"id=git_token,env={git_token_env}")
        if secrets:
            target["secret"] = secrets
        if export:
            target["output"] = [image_output(compression)]
        targets[variant.name] = target
    return {"group": {"default": {"targets": [v.name for v in variants]}}, "target": targets}
