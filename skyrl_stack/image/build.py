"""`invoke build`: run docker buildx bake, load the result, write a build record."""
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
from skyrl_stack.image import bake, rehearsal_lock
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.records import BuildRecord, load_build_record, state_dir, write_json_atomic
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
    CA path fails in a second with nothing built or tagged.
    """
    pins = load_pins()
    if not variants:
        raise StackError("no variant given", hint=f"choose from: {', '.join(pins.variant_names)}")
    chosen = [pins.variant(name) for name in dict.fromkeys(variants)]
    validate_repository(repository)
    if not ca_bundle:
        ca_bundle = host_ca_bundle()
    if ca_bundle and not Path(ca_bundle).is_file():
        raise StackError(f"CA bundle not found: {ca_bundle}", hint="pass the path of a PEM file, or leave --ca-bundle empty")
    if git_token_env and not os.environ.get(git_token_env):
        raise StackError(f"environment variable {git_token_env} (the git token) is empty or unset",
                         hint="export it, or drop --git-token-env for a public SkyRL repository")
    if cache_ref:
        validate_repository(cache_ref)
    bake.validate_compression(compression)
    for variant in chosen:
        if variant.lock:  # pins are inputs: a lock that disagrees with them fails here, not after the build
            rehearsal_lock.check(variant)
    engine.require_buildx()

    work = state_dir() / "build"
    work.mkdir(parents=True, exist_ok=True)
    with build_lock(work):
        return _build_locked(pins, chosen, repository, work, base_image=base_image, no_cache=no_cache,
                             ca_bundle=ca_bundle, progress=progress, cache_ref=cache_ref, git_token_env=git_token_env,
                             compression=compression)


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
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
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
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_locked(pins, chosen, repository, work, *, base_image, no_cache, ca_bundle, progress, cache_ref,
                  git_token_env, compression) -> list[BuildRecord]:
    definition = bake.bake_definition(
        pins, chosen, repository,
        base_image=base_image,
        ca_bundle=str(Path(ca_bundle).resolve()) if ca_bundle else None,
        export=True,
        compression=compression,
        cache_ref=cache_ref,
        git_token_env=git_token_env,
    )
    fingerprints = {v.name: input_fingerprint(definition["target"][v.name]) for v in chosen}
    if not no_cache:
        unchanged = [_unchanged_build(v.name, repository, fingerprints[v.name]) for v in chosen]
        if all(unchanged):
            for record in unchanged:
                step(f"{record.variant}: up to date, {record.digest} (inputs unchanged since {record.built_at}; "
                     "--no-cache rebuilds)")
            return unchanged
    bake_file = work / "bake.json"
    write_json_atomic(bake_file, definition)
    metadata_file = work / "metadata.json"
    metadata_file.unlink(missing_ok=True)

    names = ", ".join(v.name for v in chosen)
    step(f"building {names} (pins {pins.digest()}, SOURCE_DATE_EPOCH={pins.source_date_epoch})")
    command = ["docker", "buildx", "bake", "--file", str(bake_file), "--metadata-file", str(metadata_file),
               "--progress", progress]
    if no_cache:
        command.append("--no-cache")
    command += [v.name for v in chosen]
    started = time.monotonic()
    # SOURCE_DATE_EPOCH also in the environment: buildx propagates it to the
    # exporter, which clamps file and config timestamps to it.
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(pins.source_date_epoch))
    digests: dict[str, str] = {}
    returncode, cert_failure = _run_showing_output(command, env)
    if returncode != 0:
        raise StackError(
            f"docker buildx bake failed for {names} (exit {returncode})"
            + (": a build step could not verify a TLS certificate" if cert_failure else ""),
            hint=("behind a TLS-intercepting proxy pass its CA bundle: --ca-bundle /path/to/ca.pem "
                  "(or set SSL_CERT_FILE); nothing was tagged or pushed" if cert_failure else
                  "the build output above names the failing step; nothing was tagged or pushed"),
        )
    metadata = json.loads(metadata_file.read_text())
    # Verify every variant before recording any of them.
    for variant in chosen:
        digests[variant.name] = metadata[variant.name]["containerimage.digest"]
        _check_stored(digests[variant.name])
    seconds = round(time.monotonic() - started, 1)

    client = engine.client()
    records = []
    for variant in chosen:
        target, digest = definition["target"][variant.name], digests[variant.name]
        image = client.images.get(digest)
        for ref in target["tags"]:
            repo, tag = ref.rsplit(":", 1)
            image.tag(repo, tag)
        record = BuildRecord(
            variant=variant.name,
            repository=repository,
            digest=digest,
            tags=target["tags"],
            pins_digest=pins.digest(),
            pins=pins.raw,
            source_date_epoch=pins.source_date_epoch,
            base_image=target["args"]["BASE_IMAGE"],
            built_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            build_seconds=seconds,
            fingerprint=fingerprints[variant.name],
        )
        path = record.save()
        step(f"{variant.name}: {record.tags[0]} = {digest} (record: {path})")
        records.append(record)
    return records


# Everything the Dockerfile can read lives here (COPY and bind mounts).
CONTEXT_PATHS = ("docker", "skyrl_stack", ".dockerignore")


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


def input_fingerprint(target: dict) -> str:
    """A hash of everything that decides a target's image: its bake target (args,
    labels, tags) and the files the Dockerfile can read. The build is
    reproducible, so equal fingerprints mean an equal image and the build can be
    skipped. (Conservative: any change under skyrl_stack/ counts.)"""
    digest = hashlib.sha256(json.dumps(target, sort_keys=True).encode())
    base = target["args"]["BASE_IMAGE"]
    if "@sha256:" not in base:  # a local tag can be made again with other content
        probe = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", base],
                               capture_output=True, text=True, check=False)
        digest.update(probe.stdout.strip().encode())
    for path in _context_files():
        digest.update(f"{path.relative_to(project_root())}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _context_files() -> list[Path]:
    found = []
    for name in CONTEXT_PATHS:
        top = project_root() / name
        candidates = [top] if top.is_file() else top.rglob("*")
        found += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(found)


def _unchanged_build(variant: str, repository: str, fingerprint: str) -> BuildRecord | None:
    """The last build of variant, if its inputs are exactly these and its image is still in the engine."""
    try:
        record = load_build_record(variant)
    except StackError:
        return None
    if record.fingerprint != fingerprint or record.repository != repository:
        return None
    present = subprocess.run(["docker", "image", "inspect", record.digest], capture_output=True, check=False)
    return record if present.returncode == 0 else None


def _check_stored(digest: str) -> None:
    """The engine's image id must be the manifest digest BuildKit reported (what a registry will report)."""
    check = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", digest], capture_output=True, text=True, check=False)
    if check.returncode != 0 or check.stdout.strip() != digest:
        raise StackError(
            f"the engine does not hold the built image as {digest}",
            hint='enable the containerd image store: {"features": {"containerd-snapshotter": true}} in /etc/docker/daemon.json',
        )
