"""`invoke push`: digest first, verified, then the human tags.

Order matters. The image is first pushed under a tag derived from its own
digest; the registry is asked what digest it now holds under that tag, and
only when it equals the local one are the human tags (descriptive, pins hash,
`<variant>-latest`, in that order, latest last) moved. A registry that is down,
refuses the login, or reports another digest stops the push before any human
tag moves. Transient errors (the registry gave no answer, or 408/429/5xx) are
retried with exponential backoff; authentication errors (401/403) are not
(classify_registry_error says how each is recognised). A failed push removes
every local tag it made for the push (removed_on_failure).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from datetime import datetime, timezone

from skyrl_stack import engine
from skyrl_stack.errors import StackError, first_line
from skyrl_stack.image import bake
from skyrl_stack.image.pins import Pins
from skyrl_stack.image.records import BuildRecord, load_build_record
from skyrl_stack.image.refs import REGISTRIES, is_ecr, registry_host, validate_repository, validate_tag
from skyrl_stack.reporter import step

USER_ENV = "SKYRL_STACK_REGISTRY_USER"
PASSWORD_ENV = "SKYRL_STACK_REGISTRY_PASSWORD"

# Which registry failures are worth a retry is decided from the structure of
# what the engine reports, not from English words. What the engine gives:
# - inspect_distribution: an APIError whose status_code is the registry's
#   answer mapped by the daemon (404 manifest unknown, 401 unauthorized, 500
#   when it got no answer at all).
# - push: only a text message in the stream's errorDetail (no code; checked on
#   docker 26.1 with the containerd store), in the formats Go and containerd
#   produce, which is what is parsed here:
#   * a registry answer: containerd's "unexpected status from PUT request to
#     URL: 500 Internal Server Error" (remotes/errors.ErrUnexpectedStatus), the
#     graph-driver store's "received unexpected HTTP status: 500 ...", or a
#     distribution error code "unauthorized: ..." (registry/api/errcode,
#     Error.Error() = lower-cased code + ": " + message);
#   * no answer: Go's url.Error, `Put "URL": <cause>` (net/url Error.Error()),
#     which containerd wraps as "failed to do request: ..." — retried whatever
#     the socket cause's text is (reset, refused, EOF, timeout), except TLS and
#     certificate failures (Go's crypto/tls "tls: " and crypto/x509 "x509: "),
#     which no retry can fix.
_HTTP_STATUS = re.compile(r"(?:unexpected status from [A-Z]+ request to \S+|unexpected HTTP status): (\d{3})\b")
_REGISTRY_CODE = re.compile(r"\b(unauthorized|denied|toomanyrequests|unavailable)(?=: )")
_NO_ANSWER = re.compile(r'\b(?:Get|Head|Put|Post|Patch|Delete) "[^"]+": ')
_TLS = re.compile(r"\b(?:tls|x509): ")
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})


def classify_registry_error(message: str, status: int | None = None) -> str:
    """'auth', 'transient' or 'permanent' for a registry failure the engine reported.

    `status` is the HTTP status where the engine gives one as a field; otherwise it
    is read from the message's structure (see above)."""
    if status is None:
        found = _HTTP_STATUS.search(message)
        status = int(found.group(1)) if found else None
    code = _REGISTRY_CODE.search(message)
    if status in AUTH_STATUSES or (code and code.group(1) in ("unauthorized", "denied")):
        return "auth"
    if status in RETRIED_STATUSES or (code and code.group(1) in ("toomanyrequests", "unavailable")):
        return "transient"
    if status is None and _NO_ANSWER.search(message) and not _TLS.search(message):
        return "transient"
    return "permanent"


class TransientPushError(Exception):
    pass


def content_tag(variant: str, digest: str) -> str:
    """The tag the digest is pushed under first: names the content, never moves."""
    return validate_tag(f"{variant}-{digest.split(':', 1)[1][:16]}")


def cpu_checked_tag(variant: str, digest: str) -> str:
    """The tag a GPU image gets when only a CPU smoke run vouches for it: says so in its name."""
    return validate_tag(f"{content_tag(variant, digest)}-cpu-checked")


def human_tags(record: BuildRecord, repository: str, immutable: bool = False) -> list[str]:
    """Descriptive tag, pins-hash tag, then `<variant>-latest` (always last)."""
    return human_tags_for(Pins(record.pins), record.variant, repository, immutable)


def human_tags_for(pins: Pins, variant_name: str, repository: str, immutable: bool = False) -> list[str]:
    """The human tags of a variant built from `pins`.

    No `-latest` where tags are immutable (ECR as infra/ sets it up): it could
    never move there.
    """
    variant = pins.variant(variant_name)
    moving = [] if immutable else [f"{repository}:{variant_name}-latest"]
    return bake.tags(pins, variant, repository) + moving


def targets_ecr(repository: str, registry: str) -> bool:
    """An ECR push or promotion: --registry ecr, or a repository in ECR (an ECR login; tags immutable,
    as infra/ sets the repository up)."""
    return registry == "ecr" or is_ecr(repository)


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
    if targets_ecr(repository, registry):
        from skyrl_stack.infra.ecr import docker_auth_config

        return docker_auth_config(repository)
    return None


def push_variants(variants: list[str], *, repository: str | None = None, registry: str = "generic",
                  skip_smoke_gate: bool = False) -> list[BuildRecord]:
    """Push several variants; with --registry ecr the repository comes from `invoke infra.up`."""
    if registry not in REGISTRIES:
        raise StackError(f"unknown registry kind {registry!r}", hint=f"use one of: {', '.join(REGISTRIES)}")
    if registry == "ecr" and not repository:
        from skyrl_stack.infra.aws_stack import ecr_repository_uri

        repository = ecr_repository_uri()
    return [push_variant(name, repository=repository, registry=registry, skip_smoke_gate=skip_smoke_gate)
            for name in variants]


def smoke_and_push(variants: list[str]) -> list[BuildRecord]:
    """`invoke build --push`: run the smoke suite on each built variant, then push them.

    The gate applies as for `invoke push`: each run is recorded against its
    digest, and push_variants moves the human tags only where it vouches for
    them. A failing run stops here, before anything is pushed."""
    from skyrl_stack.smoke.runner import run_smoke

    for name in variants:
        run_smoke(variant=name)
    return push_variants(variants)


def push_variant(
    variant: str,
    *,
    repository: str | None = None,
    registry: str = "generic",
    skip_smoke_gate: bool = False,
    immutable: bool | None = None,
    attempts: int = 4,
    backoff_seconds: float = 2.0,
) -> BuildRecord:
    """Push one variant's image. `immutable` (default: ECR) checks every tag first:
    in a registry whose tags never move, a tag already holding another digest
    would fail half-way, so the push is refused before anything is sent.

    The smoke gate decides the tags: a full pass moves the human tags; a CPU-only
    run of a GPU image sends the digest with a `-cpu-checked` tag only (the GPU
    job's `invoke promote` moves the human tags later); no run or a failed one
    sends nothing."""
    record = load_build_record(variant)
    repository = validate_repository(repository or record.repository)
    if immutable is None:
        immutable = targets_ecr(repository, registry)
    first = f"{repository}:{content_tag(variant, record.digest)}"

    from skyrl_stack.smoke.gate import decide

    gate = decide(record.digest, skip_smoke_gate=skip_smoke_gate, action=f"push human tags of {variant}")
    if gate.human_tags:
        tags_to_move = human_tags(record, repository, immutable)
    else:
        tags_to_move = [f"{repository}:{cpu_checked_tag(variant, record.digest)}"]
    auth = auth_config(repository, registry)
    client = engine.client()
    image = _local_image(client, record)
    if immutable:
        refuse_taken_immutable_tags(client, [first] + tags_to_move, record.digest, auth)

    step(f"pushing {record.digest} as {first}")
    with removed_on_failure(client) as made:
        sent = _push_with_retry(client, image, first, auth, attempts, backoff_seconds, record.layers, made)
        remote = remote_digest(client, first, auth)
        if remote != record.digest:
            raise StackError(
                f"registry reports {remote} for {first}, but the local image is {record.digest}",
                hint="no human tag was moved; check the registry for a proxy or mutation, then push again",
            )
        step(f"registry holds {remote}: moving {len(tags_to_move)} tag(s)")
        for ref in tags_to_move:
            _push_with_retry(client, image, ref, auth, attempts, backoff_seconds, record.layers, made)
            check_tag_moved(client, ref, record.digest, auth, after="the push")
    # Every tag is verified: the push is complete. A Ctrl-C from here on must not
    # turn it into a failure (exit 130) with the record left unwritten.
    with interrupt_deferred() as interrupted:
        record.pushed = {
            "ref": f"{repository}@{record.digest}",
            "tags": [first] + tags_to_move,
            "bytes_sent": sent,
            "smoke_gate_skipped": gate.smoke_gate_skipped,
            "human_tags": gate.human_tags,
            # GPU tiers that did not pass on a GPU: without skip_smoke_gate they kept the
            # human tags back; with it, they are what the push went without.
            "missing_tiers": gate.missing_tiers,
            "pushed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        record.save()
        step(f"pushed {record.pushed['ref']} ({sent / 1e6:.1f} MB sent)")
        if not gate.human_tags:
            step(f"human tags NOT moved: tiers {', '.join(gate.missing_tiers)} did not pass on a GPU. Run "
                 f"`invoke smoke --image {record.pushed['ref']}` on a GPU machine, then "
                 f"`invoke promote --variant {variant} --image {record.pushed['ref']}`")
    if interrupted:
        step(f"interrupted after the push completed: {record.pushed['ref']} is pushed and recorded")
    return record


def _local_image(client, record: BuildRecord):
    from docker.errors import ImageNotFound

    try:
        return client.images.get(record.digest)
    except ImageNotFound:
        raise StackError(f"image {record.digest} of {record.variant} is not in the local engine",
                         hint=f"rebuild it: invoke build --variant {record.variant}") from None


@contextlib.contextmanager
def removed_on_failure(client):
    """Yields a list for the local tags a push makes (`docker push` needs one per ref); if the push fails
    anywhere (a refused tag, a read-back that disagrees, Ctrl-C), every one of them is removed again, so a
    failed push leaves the engine's tags as they were. Tags that were there before are never listed."""
    made: list[str] = []
    try:
        yield made
    except BaseException:
        from docker.errors import APIError

        for ref in reversed(made):
            with contextlib.suppress(APIError):  # already gone: nothing of ours is left
                client.api.remove_image(ref, noprune=True)
        raise


def _push_with_retry(client, image, ref: str, auth: dict | None, attempts: int, backoff: float,
                     layers: dict[str, int], made: list[str]) -> int:
    """Push ref, retrying transient failures; a local tag it creates for that is added to `made`."""
    repo, tag = ref.rsplit(":", 1)
    image.reload()
    if ref not in image.tags:
        image.tag(repo, tag)
        made.append(ref)
    for attempt in range(1, attempts + 1):
        try:
            return _push_once(client, repo, tag, auth, layers)
        except TransientPushError as exc:
            if attempt == attempts:
                raise StackError(f"registry {registry_host(repo)} unreachable: {exc}",
                                 hint="check the registry address and that it is up; nothing was tagged there") from None
            delay = backoff * 2 ** (attempt - 1)
            step(f"transient error ({exc}); retry {attempt}/{attempts - 1} in {delay:.0f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def _push_once(client, repo: str, tag: str, auth: dict | None, layers: dict[str, int]) -> int:
    """Push one tag; a line per layer actually sent, one summary line; returns bytes sent.

    Sizes come from the build record's manifest (`layers`); the engine's
    progress events omit them for small layers."""
    from docker.errors import APIError
    from requests.exceptions import ConnectionError as RequestsConnectionError

    layer_sizes = {digest.split(":", 1)[1][:12]: size for digest, size in layers.items()}
    sent: set[str] = set()
    present: set[str] = set()
    try:
        stream = client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth)
        for event in stream:
            if "error" in event or "errorDetail" in event:
                _raise_push_error(repo, str(event.get("error") or event.get("errorDetail", {}).get("message")))
            layer, status = event.get("id"), event.get("status", "")
            total = (event.get("progressDetail") or {}).get("total")
            if layer and total:
                layer_sizes.setdefault(layer, total)
            if layer and status == "Pushed" and layer not in sent:
                sent.add(layer)
                step(f"  layer {layer} sent ({_size(layer_sizes.get(layer, 0))})")
            elif layer and status in ("Layer already exists", "Mounted from"):
                present.add(layer)
    except APIError as exc:
        _raise_push_error(repo, str(exc.explanation or exc), exc.status_code)
    except RequestsConnectionError as exc:  # the engine's socket dropped mid-stream: no answer, retried
        raise TransientPushError(first_line(exc)) from None
    total_sent = sum(layer_sizes.get(layer, 0) for layer in sent)
    step(f"  {tag}: {len(sent)} layers sent ({_size(total_sent)}), {len(present - sent)} already in the registry")
    return total_sent


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _raise_push_error(repo: str, message: str, status: int | None = None):
    kind = classify_registry_error(message, status)
    if kind == "auth":
        raise StackError(
            f"registry {registry_host(repo)} refused the login: {first_line(message)}",
            hint=f"set {USER_ENV}/{PASSWORD_ENV}, or `docker login {registry_host(repo)}`; nothing was tagged",
        )
    if kind == "transient":
        raise TransientPushError(first_line(message))
    raise StackError(f"push to {repo} failed: {first_line(message)}",
                     hint="no human tag was moved; fix the cause and push again")


def refuse_taken_immutable_tags(client, refs: list[str], digest: str, auth: dict | None) -> None:
    """For immutable registries: refuse, before anything is sent, if any tag holds another digest."""
    for ref in refs:
        held = remote_digest(client, ref, auth, missing_ok=True)
        if held is not None and held != digest:
            raise StackError(
                f"tag {ref} already holds {held} in a registry with immutable tags",
                hint="tags never move there: change the pins (new tags) or push to a mutable registry; nothing was pushed",
            )


def check_tag_moved(client, ref: str, digest: str, auth: dict | None, after: str) -> None:
    """The registry's answer for ref, read back after moving it, must be digest."""
    if remote_digest(client, ref, auth) != digest:
        raise StackError(f"tag {ref} does not point at {digest} after {after}",
                         hint="the registry may have immutable tags holding an older image; bump the pins or use a new tag")
    step(f"tagged {ref}")


def remote_digest(client, ref: str, auth: dict | None, missing_ok: bool = False) -> str | None:
    """The digest the registry holds under ref (None if absent and missing_ok)."""
    from docker.errors import APIError

    try:
        data = client.api.inspect_distribution(ref, auth_config=auth)
    except APIError as exc:
        text = str(exc.explanation or exc)
        if missing_ok and exc.status_code == 404:  # the daemon maps "manifest unknown" to 404
            return None
        if classify_registry_error(text, exc.status_code if exc.status_code in AUTH_STATUSES else None) == "auth":
            _raise_push_error(ref.rsplit(":", 1)[0], text, exc.status_code)
        raise StackError(f"cannot read {ref} from the registry: {first_line(text)}",
                         hint="no human tag was moved") from None
    return (data.get("Descriptor") or {}).get("digest")


@contextlib.contextmanager
def interrupt_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, for work that is done and only being recorded:
    yields a list that holds the signal if one came (the caller says so, and does not fail)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield []
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)
