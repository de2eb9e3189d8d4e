"""`invoke push`: digest first, verified, then the human tags.

Order matters. The image is first pushed under a tag derived from its own
digest; the registry is asked what digest it now holds under that tag, and
only when it equals the local one are the human tags (descriptive, pins hash,
`<variant>-latest`, in that order, latest last) moved. A registry that is down,
refuses the login, or reports another digest stops the push before any human
tag moves. Transient errors (connection refused/reset, timeouts, 5xx) are
retried with exponential backoff; authentication errors are not.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from skyrl_stack import bake, engine
from skyrl_stack.cli import step
from skyrl_stack.errors import StackError
from skyrl_stack.pins import Pins
from skyrl_stack.records import BuildRecord, load_build_record

USER_ENV = "SKYRL_STACK_REGISTRY_USER"
PASSWORD_ENV = "SKYRL_STACK_REGISTRY_PASSWORD"

_TRANSIENT = ("connection refused", "connection reset", "timeout", "timed out", "eof", "temporarily unavailable",
              "502", "503", "504", "500 internal server error", "too many requests", "no such host")
_AUTH = ("unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden")


class TransientPushError(Exception):
    pass


def registry_host(repository: str) -> str:
    first = repository.split("/", 1)[0]
    return first if ("." in first or ":" in first or first == "localhost") and "/" in repository else "docker.io"


def content_tag(variant: str, digest: str) -> str:
    """The tag the digest is pushed under first: names the content, never moves."""
    return bake.validate_tag(f"{variant}-{digest.split(':', 1)[1][:16]}")


def human_tags(record: BuildRecord, repository: str) -> list[str]:
    """Descriptive tag, pins-hash tag, then `<variant>-latest` (always last)."""
    pins = Pins(record.pins)
    variant = pins.variant(record.variant)
    return bake.tags(pins, variant, repository) + [f"{repository}:{record.variant}-latest"]


def auth_config(repository: str, registry: str = "generic") -> dict | None:
    """Credentials for the push, from the environment, ECR, or (None) the docker config.

    Order: SKYRL_STACK_REGISTRY_USER/PASSWORD if set (both or neither); for ECR a
    fresh token from boto3; otherwise None, which lets the docker SDK use the
    user's ~/.docker/config.json (docker login, credential helpers).
    """
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if bool(user) != bool(password):
        missing = PASSWORD_ENV if user else USER_ENV
        raise StackError(f"{missing} is not set but {USER_ENV if user else PASSWORD_ENV} is",
                         hint="set both (or neither, to use `docker login` credentials)")
    if user:
        return {"username": user, "password": password, "serveraddress": registry_host(repository)}
    if registry == "ecr" or ".dkr.ecr." in repository:
        from skyrl_stack.ecr import docker_auth_config

        return docker_auth_config(repository)
    return None


REGISTRY_KINDS = ("generic", "ecr")


def push_variants(variants: list[str], *, repository: str | None = None, registry: str = "generic",
                  override_gate: bool = False) -> list[BuildRecord]:
    """Push several variants; with --registry ecr the repository comes from `invoke infra.up`."""
    if registry not in REGISTRY_KINDS:
        raise StackError(f"unknown registry kind {registry!r}", hint=f"use one of: {', '.join(REGISTRY_KINDS)}")
    if registry == "ecr" and not repository:
        from skyrl_stack.ecr import ecr_repository_uri

        repository = ecr_repository_uri()
    return [push_variant(name, repository=repository, registry=registry, override_gate=override_gate)
            for name in variants]


def push_variant(
    variant: str,
    *,
    repository: str | None = None,
    registry: str = "generic",
    override_gate: bool = False,
    attempts: int = 4,
    backoff_seconds: float = 2.0,
) -> BuildRecord:
    record = load_build_record(variant)
    repository = bake.validate_repository(repository or record.repository)
    tags_to_move = human_tags(record, repository)
    first = f"{repository}:{content_tag(variant, record.digest)}"

    from skyrl_stack.smoke_gate import require_passed

    require_passed(record.digest, override=override_gate, action=f"push human tags of {variant}")
    auth = auth_config(repository, registry)
    client = engine.client()
    image = _local_image(client, record)

    step(f"pushing {record.digest} as {first}")
    sent = _push_with_retry(client, image, first, auth, attempts, backoff_seconds)
    remote = _remote_digest(client, first, auth)
    if remote != record.digest:
        raise StackError(
            f"registry reports {remote} for {first}, but the local image is {record.digest}",
            hint="no human tag was moved; check the registry for a proxy or mutation, then push again",
        )
    step(f"registry holds {remote}: moving {len(tags_to_move)} tags")
    for ref in tags_to_move:
        _push_with_retry(client, image, ref, auth, attempts, backoff_seconds)
        if _remote_digest(client, ref, auth) != record.digest:
            raise StackError(f"tag {ref} does not point at {record.digest} after the push",
                             hint="the registry may have immutable tags holding an older image; bump the pins or use a new tag")
        step(f"tagged {ref}")
    record.pushed = {
        "ref": f"{repository}@{record.digest}",
        "tags": [first] + tags_to_move,
        "bytes_sent": sent,
        "gate_overridden": bool(override_gate),
        "pushed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    record.save()
    step(f"pushed {record.pushed['ref']} ({sent / 1e6:.1f} MB sent)")
    return record


def _local_image(client, record: BuildRecord):
    from docker.errors import ImageNotFound

    try:
        return client.images.get(record.digest)
    except ImageNotFound:
        raise StackError(f"image {record.digest} of {record.variant} is not in the local engine",
                         hint=f"rebuild it: invoke build --variant {record.variant}") from None


def _push_with_retry(client, image, ref: str, auth: dict | None, attempts: int, backoff: float) -> int:
    repo, tag = ref.rsplit(":", 1)
    image.tag(repo, tag)
    for attempt in range(1, attempts + 1):
        try:
            return _push_once(client, repo, tag, auth)
        except TransientPushError as exc:
            if attempt == attempts:
                raise StackError(f"registry {registry_host(repo)} unreachable: {exc}",
                                 hint="check the registry address and that it is up; nothing was tagged there") from None
            delay = backoff * 2 ** (attempt - 1)
            step(f"transient error ({exc}); retry {attempt}/{attempts - 1} in {delay:.0f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def _push_once(client, repo: str, tag: str, auth: dict | None) -> int:
    """Push one tag, printing per-layer progress; returns the bytes of layers actually sent."""
    from docker.errors import APIError
    from requests.exceptions import ConnectionError as RequestsConnectionError

    layer_sizes: dict[str, int] = {}
    sent_layers: set[str] = set()
    last_status: dict[str, str] = {}
    try:
        stream = client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth)
        for event in stream:
            if "error" in event or "errorDetail" in event:
                _raise_push_error(repo, str(event.get("error") or event.get("errorDetail", {}).get("message")))
            layer, status = event.get("id"), event.get("status", "")
            total = (event.get("progressDetail") or {}).get("total")
            if layer and total:
                layer_sizes[layer] = total
            if layer and status != last_status.get(layer) and status in ("Pushed", "Layer already exists", "Mounted from"):
                if status == "Pushed":
                    sent_layers.add(layer)
                size = layer_sizes.get(layer)
                step(f"  {layer}: {status}" + (f" ({size / 1e6:.1f} MB)" if size and status == "Pushed" else ""))
            if layer:
                last_status[layer] = status
    except APIError as exc:
        _raise_push_error(repo, str(exc.explanation or exc))
    except RequestsConnectionError as exc:
        raise TransientPushError(str(exc)) from None
    return sum(layer_sizes.get(layer, 0) for layer in sent_layers)


def _raise_push_error(repo: str, message: str):
    lowered = message.lower()
    if any(word in lowered for word in _AUTH):
        raise StackError(
            f"registry {registry_host(repo)} refused the login: {message.strip().splitlines()[0]}",
            hint=f"set {USER_ENV}/{PASSWORD_ENV}, or `docker login {registry_host(repo)}`; nothing was tagged",
        )
    if any(word in lowered for word in _TRANSIENT):
        raise TransientPushError(message.strip().splitlines()[0])
    raise StackError(f"push to {repo} failed: {message.strip().splitlines()[0]}",
                     hint="no human tag was moved; fix the cause and push again")


def _remote_digest(client, ref: str, auth: dict | None) -> str | None:
    from docker.errors import APIError

    try:
        data = client.api.inspect_distribution(ref, auth_config=auth)
    except APIError as exc:
        raise StackError(f"cannot read {ref} back from the registry: {exc.explanation or exc}",
                         hint="no human tag was moved") from None
    return (data.get("Descriptor") or {}).get("digest")
