"""`invoke build`: docker buildx bake into the engine's image store, then tag and record each image.

The steps of :func:`build_variants`: check every input before anything runs,
skip variants whose inputs are unchanged, run `docker buildx bake` (the one
shell-out: docker-py cannot drive BuildKit, see engine.py), check that the
engine holds each image under the digest BuildKit reported, then tag it and
write its build record. Looking up and tagging images goes through the SDK.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack import engine
from skyrl_stack.errors import StackError
from skyrl_stack.image import bake, rehearsal_lock, skyrl_patches
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.records import BuildRecord, load_build_record, state_dir, workspace_write, write_json_atomic
from skyrl_stack.image.refs import validate_repository
from skyrl_stack.project import project_root
from skyrl_stack.reporter import step


def build_variants(
    variants: list[str],
    repository: str,
    *,
    base_image: str | None = None,
    no_cache: bool = False,
    ca_bundle: str | None = None,
    progress: str = "auto",
    cache_ref: str | None = None,
    git_token_env: str | None = None,
    compression: str = bake.DEFAULT_COMPRESSION,
) -> list[BuildRecord]:
    """Build each variant into the engine's image store, and record ref and digest.

    All input is checked before anything runs, so a bad variant, repository or
    CA path fails in a second with nothing built or tagged. Variants whose
    inputs are unchanged since their last build (and whose image is still in
    the engine) are not built again unless no_cache.
    """
    pins = load_pins()
    chosen = _check_inputs(pins, variants, repository, cache_ref=cache_ref, git_token_env=git_token_env,
                           compression=compression)
    ca_bundle = _ca_bundle(ca_bundle)
    builder = engine.require_buildx()  # the engine's own builder, named to buildx explicitly

    work = state_dir() / "build"
    with workspace_write(work):
        work.mkdir(parents=True, exist_ok=True)
    with build_lock(work):
        definition = bake.bake_definition(
            pins, chosen, repository,
            base_image=base_image,
            ca_bundle=str(Path(ca_bundle).resolve()) if ca_bundle else None,
            export=True,
            compression=compression,
            cache_ref=cache_ref,
            git_token_env=git_token_env,
        )
        targets = {v.name: definition["target"][v.name] for v in chosen}
        client = engine.client()
        fingerprints = {name: input_fingerprint(target, _base_image_id(client, target["args"]["BASE_IMAGE"]))
                        for name, target in targets.items()}
        unchanged = None if no_cache else _up_to_date(client, repository, fingerprints)
        if unchanged:
            return unchanged
        started = time.monotonic()
        digests = _run_bake(pins, definition, list(targets), work, progress=progress, no_cache=no_cache,
                            builder=builder)
        images = {name: _stored_image(client, digest, builder) for name, digest in digests.items()}  # all, before any record
        seconds = round(time.monotonic() - started, 1)
        return [_tag_and_record(images[name], pins, name, repository, targets[name], digests[name],
                                seconds=seconds, fingerprint=fingerprints[name]) for name in targets]


def _check_inputs(pins, variants: list[str], repository: str, *, cache_ref: str | None, git_token_env: str | None,
                  compression: str) -> list:
    """The chosen variants, once every option and the pins they build from are checked."""
    if not variants:
        raise StackError("no variant given", hint=f"choose from: {', '.join(pins.variant_names)}")
    chosen = [pins.variant(name) for name in dict.fromkeys(variants)]
    validate_repository(repository)
    if git_token_env and not os.environ.get(git_token_env):
        raise StackError(f"environment variable {git_token_env} (the git token) is empty or unset",
                         hint="export it, or drop --git-token-env for a public SkyRL repository")
    if cache_ref:
        validate_repository(cache_ref)
    bake.validate_compression(compression)
    for variant in chosen:
        if variant.lock:  # pins are inputs: a lock that disagrees with them fails here, not after the build
            rehearsal_lock.check(variant)
    if any(variant.has_skyrl for variant in chosen):  # so are the patches of SkyRL's checkout
        skyrl_patches.check_files(pins)
    return chosen


def _ca_bundle(given: str | None) -> str | None:
    """--ca-bundle, else the one this host names; a path that is not a file is refused."""
    ca_bundle = given or host_ca_bundle()
    if ca_bundle and not Path(ca_bundle).is_file():
        raise StackError(f"CA bundle not found: {ca_bundle}", hint="pass the path of a PEM file, or leave --ca-bundle empty")
    return ca_bundle


# Where a host names its CA bundle, in the order the tools read them (OpenSSL, requests, pip).
CA_BUNDLE_ENVS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
# What pip/requests (OpenSSL) and uv (rustls) print when a certificate is not trusted; the build
# step's output is the only place the cause appears (buildx reports just the exit code).
_CERT_FAILURE = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "invalid peer certificate",
                 "self-signed certificate in certificate chain", "unable to get local issuer certificate")


def host_ca_bundle() -> str | None:
    """The CA bundle this host already names (behind a TLS-intercepting proxy), said in one line."""
    for name in CA_BUNDLE_ENVS:
        value = os.environ.get(name)
        if value and Path(value).is_file():
            step(f"passing the CA bundle {name}={value} to the build as a secret (--ca-bundle overrides)")
            return value
    return None


@contextlib.contextmanager
def build_lock(work: Path, wait_seconds: float | None = None):
    """One build at a time per checkout: builds share the bake file, metadata and archives
    under `work`. A second build waits (saying for whom) rather than overwrite them; with
    `wait_seconds` it gives up after that long. The lock is the kernel's (flock), so a
    killed build never leaves it held."""
    import fcntl

    path = work / ".lock"
    # Unbuffered: a write the disk refuses fails where it is made, and nothing is left to flush at close.
    with workspace_write(path):
        handle = open(path, "a+b", buffering=0)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().decode(errors="replace").strip() or "another process"
            step(f"waiting for the build already running in this checkout ({holder}) to finish")
            deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise StackError(f"another build is running in this checkout ({holder})",
                                         hint=f"wait for it to finish (it holds {path}); nothing was built") from None
                    time.sleep(0.5)
        with workspace_write(path):  # on a full disk the pid is refused (ENOSPC): one line
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}".encode())
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_bake(pins, definition: dict, names: list[str], work: Path, *, progress: str, no_cache: bool,
              builder: str) -> dict[str, str]:
    """docker buildx bake the targets into the engine's store (with `builder`, the engine's own: see
    engine.engine_builder); {variant: manifest digest} from its metadata."""
    bake_file, metadata_file = work / "bake.json", work / "metadata.json"
    write_json_atomic(bake_file, definition)
    with workspace_write(metadata_file):
        metadata_file.unlink(missing_ok=True)
    listed = ", ".join(names)
    step(f"building {listed} (pins {pins.digest()}, SOURCE_DATE_EPOCH={pins.source_date_epoch})")
    command = ["docker", "buildx", "bake", "--builder", builder, "--file", str(bake_file),
               "--metadata-file", str(metadata_file), "--progress", progress]
    if no_cache:
        command.append("--no-cache")
    command += names
    # SOURCE_DATE_EPOCH also in the environment: buildx propagates it to the
    # exporter, which clamps file and config timestamps to it.
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(pins.source_date_epoch))
    returncode, cert_failure = _run_showing_output(command, env)
    if returncode != 0:
        raise StackError(
            f"docker buildx bake failed for {listed} (exit {returncode})"
            + (": a build step could not verify a TLS certificate" if cert_failure else ""),
            hint=("behind a TLS-intercepting proxy pass its CA bundle: --ca-bundle /path/to/ca.pem "
                  "(or set SSL_CERT_FILE); nothing was tagged or pushed" if cert_failure else
                  "the build output above names the failing step; nothing was tagged or pushed"),
        )
    metadata = json.loads(metadata_file.read_text())
    return {name: metadata[name]["containerimage.digest"] for name in names}


def _tag_and_record(image, pins, variant: str, repository: str, target: dict, digest: str, *, seconds: float,
                    fingerprint: str) -> BuildRecord:
    """Give the built image its tags (through the SDK) and write its build record."""
    for ref in target["tags"]:
        repo, tag = ref.rsplit(":", 1)
        image.tag(repo, tag)
    record = BuildRecord(
        variant=variant,
        repository=repository,
        digest=digest,
        tags=target["tags"],
        pins_digest=pins.digest(),
        pins=pins.raw,
        source_date_epoch=pins.source_date_epoch,
        base_image=target["args"]["BASE_IMAGE"],
        built_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        build_seconds=seconds,
        fingerprint=fingerprint,
    )
    path = record.save()
    step(f"{variant}: {record.tags[0]} = {digest} (record: {path})")
    return record


def _run_showing_output(command: list[str], env: dict) -> tuple[int, bool]:
    """Run the build, its output passed through to stderr as it comes; returns the exit code
    and whether a step failed on certificate verification."""
    cert_failure = False
    with subprocess.Popen(command, cwd=project_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as process:
        for line in process.stdout:
            sys.stderr.write(line)
            cert_failure = cert_failure or any(marker in line for marker in _CERT_FAILURE)
    return process.returncode, cert_failure


def input_fingerprint(target: dict, base_image_id: str = "") -> str:
    """A hash of everything that decides a target's image: its bake target (args,
    labels, tags), the engine's id of a base image given by tag (`base_image_id`:
    a local tag can be made again with other content) and the files the
    Dockerfile can read. The build is reproducible, so equal fingerprints mean
    an equal image and the build can be skipped. (Conservative: any change
    under skyrl_stack/ counts.)"""
    digest = hashlib.sha256(json.dumps(target, sort_keys=True).encode())
    digest.update(base_image_id.encode())
    for path in _context_files():
        digest.update(f"{path.relative_to(project_root())}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _context_files() -> list[Path]:
    found = []
    for name in bake.BUILD_INPUTS:
        top = project_root() / name
        candidates = [top] if top.is_file() else top.rglob("*")
        found += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(found)


def _local_image(client, name: str):
    """The engine's image by tag or digest, or None when it holds none."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(name)
    except ImageNotFound:
        return None


def _base_image_id(client, base: str) -> str:
    """What a base given by tag is in the engine now (empty for one pinned by digest, or absent)."""
    if "@sha256:" in base:
        return ""
    image = _local_image(client, base)
    return image.id if image is not None else ""


def _up_to_date(client, repository: str, fingerprints: dict[str, str]) -> list[BuildRecord] | None:
    """The last build records, when every variant's inputs are unchanged and its image is still in the engine."""
    unchanged = [_unchanged_build(client, name, repository, fingerprint) for name, fingerprint in fingerprints.items()]
    if not all(unchanged):
        return None
    for record in unchanged:
        _restore_tags(client, record)
        step(f"{record.variant}: up to date, {record.digest} (inputs unchanged since {record.built_at}; "
             "--no-cache rebuilds)")
    return unchanged


def _restore_tags(client, record: BuildRecord) -> None:
    """Give the recorded image back the record's tags that are gone (removed by hand, or moved by another
    build): an up-to-date build leaves the engine as a build would."""
    image = client.images.get(record.digest)
    for ref in record.tags:
        if ref not in image.tags:
            repo, tag = ref.rsplit(":", 1)
            image.tag(repo, tag)
            step(f"{record.variant}: tagged {ref} again")


def _unchanged_build(client, variant: str, repository: str, fingerprint: str) -> BuildRecord | None:
    """The last build of variant, if its inputs are exactly these and its image is still in the engine."""
    try:
        record = load_build_record(variant)
    except StackError:
        return None
    if record.fingerprint != fingerprint or record.repository != repository:
        return None
    return record if _local_image(client, record.digest) is not None else None


def _stored_image(client, digest: str, builder: str = ""):
    """The built image; the engine's image id must be the manifest digest BuildKit reported (what a registry will report)."""
    image = _local_image(client, digest)
    if image is None or image.id != digest:
        raise StackError(f"the engine does not hold the built image as {digest}", hint=_missing_image_hint(client, builder))
    return image


CONTAINERD_STORE = "io.containerd.snapshotter"  # `docker info` DriverStatus of the containerd image store


def _missing_image_hint(client, builder: str) -> str:
    """Why a built image is not in the engine under its digest: the graph-driver store (its image id is the config's
    digest, not the manifest's), or, where the store is already containerd's, the builder exported it elsewhere."""
    status = json.dumps(client.info().get("DriverStatus") or [])
    if CONTAINERD_STORE not in status:
        return ('enable the containerd image store: {"features": {"containerd-snapshotter": true}} in '
                "/etc/docker/daemon.json")
    return (f"the engine already uses the containerd image store; the builder {builder or '(unknown)'} exported the "
            "image elsewhere: check `docker buildx ls` and that it is the engine's own (driver docker)")
