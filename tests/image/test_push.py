"""`invoke push` against a real registry process (htpasswd auth) and the real engine."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image.push import PASSWORD_ENV, USER_ENV, classify_registry_error, content_tag, push_variant
from skyrl_stack.image.records import load_build_record
from tests.support.faults import MANIFEST, Fault, FaultProxy
from tests.conftest import TEST_REPOSITORY
from tests.support.registry import free_port

REPO_NAME = "team/skyrl-stack"
OTHER_IMAGE = f"{TEST_REPOSITORY}-other:1"  # a second image, in the tests' own repository
container = pytest.mark.container


@pytest.fixture
def built(rehearsal_image, state_dir):
    """A private copy of the rehearsal build record (push writes into it)."""
    shutil.copytree(rehearsal_image.state_dir / "builds", state_dir / "builds")
    return load_build_record("rehearsal")


@pytest.fixture
def login(monkeypatch, registry):
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, registry.password)


@container
def test_push_digest_first_then_tags_and_the_digest_pulls_back_intact(built, registry, login):
    """Gate overridden on purpose: the smoke gate has its own tests; this one is about the transfer."""
    repo = f"{registry.host}/{REPO_NAME}"
    record = push_variant("rehearsal", repository=repo, skip_smoke_gate=True, backoff_seconds=0.1)

    first = content_tag("rehearsal", built.digest)
    assert registry.manifest_digest(REPO_NAME, first) == built.digest
    expected = {first, "rehearsal-ray2.48.0-py3.11-cpu", f"rehearsal-pins-{built.pins_digest}", "rehearsal-latest"}
    assert set(registry.tags(REPO_NAME)) == expected
    for tag in expected:
        assert registry.manifest_digest(REPO_NAME, tag) == built.digest
    assert load_build_record("rehearsal").pushed["ref"] == f"{repo}@{built.digest}"
    assert record.pushed["bytes_sent"] > 50_000_000  # the whole image went over the wire once

    # Pull it back by digest from the registry itself, every byte checked (the engine's copy stays: removing it
    # by digest would also remove the user's own tags of the same image).
    assert registry.pull_by_digest(REPO_NAME, built.digest) > 50_000_000


@container
def test_gate_refuses_push_without_a_smoke_run_and_nothing_reaches_the_registry(built, registry, login):
    with pytest.raises(StackError, match="refused: no smoke run"):
        push_variant("rehearsal", repository=f"{registry.host}/{REPO_NAME}")
    assert registry.tags(REPO_NAME) == []


@container
def test_wrong_password_moves_no_tag(built, registry, monkeypatch):
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(StackError, match="refused the login") as err:
        push_variant("rehearsal", repository=f"{registry.host}/{REPO_NAME}", skip_smoke_gate=True, backoff_seconds=0.01)
    assert "wrong" not in err.value.render()  # never echo a secret
    assert registry.tags(REPO_NAME) == []
    assert load_build_record("rehearsal").pushed == {}


@container
@pytest.mark.reliability("fault", "registry not listening (connection refused)",
                         "retried, then `error: registry ... unreachable`; no local tag left behind")
def test_registry_down_is_retried_then_reported(built, monkeypatch, capsys):
    monkeypatch.setenv(USER_ENV, "u")
    monkeypatch.setenv(PASSWORD_ENV, "p")
    repo = f"127.0.0.1:{free_port()}/{REPO_NAME}"
    with pytest.raises(StackError, match="unreachable"):
        push_variant("rehearsal", repository=repo, skip_smoke_gate=True, attempts=2, backoff_seconds=0.01)
    assert load_build_record("rehearsal").pushed == {}
    assert "retry 1/1" in capsys.readouterr().err
    assert _local_tags(built.digest, repo) == []  # the tag made for the push is gone again


def _local_tags(digest: str, repo: str) -> list[str]:
    tags = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RepoTags}}", digest],
                          capture_output=True, text=True, check=True).stdout
    return [t for t in json.loads(tags) if t.startswith(repo + ":")]


# Messages exactly as docker 26.1 (containerd store) reported them for faults injected with
# tests/support/faults.py, plus the graph-driver store's format; the URLs are shortened.
@pytest.mark.parametrize("message, status, kind", [
    ('failed commit on ref "layer-sha256:b52f": failed to do request: Put "http://127.0.0.1:42065/v2/t/x/blobs/'
     'uploads/0242?digest=sha256%3Ab52f": read tcp 127.0.0.1:59856->127.0.0.1:42065: read: connection reset by peer',
     None, "transient"),
    ('failed to do request: Head "https://127.0.0.1:57217/v2/t/x/blobs/sha256:f1ba": dial tcp 127.0.0.1:57217: '
     'connect: connection refused', None, "transient"),
    ('failed to do request: Put "http://r/v2/t/x/blobs/uploads/1": some socket text no list could know', None,
     "transient"),
    ('failed commit on ref "layer-sha256:b52f": unexpected status from PUT request to http://127.0.0.1:37451/v2/t/'
     'x/blobs/uploads/4c7b?digest=sha256%3Ab52f: 500 Internal Server Error', None, "transient"),
    ("unexpected status from PUT request to http://r/v2/t/x/blobs/uploads/1: 503 Service Unavailable", None,
     "transient"),
    ("received unexpected HTTP status: 502 Bad Gateway", None, "transient"),
    ("toomanyrequests: You have reached your pull rate limit", None, "transient"),
    ('failed commit on ref "config-sha256:f1ba": unexpected status from PUT request to http://127.0.0.1:37855/v2/t/x/'
     'blobs/uploads/1cb7?digest=sha256%3Af1ba: 401 Unauthorized', None, "auth"),
    ("unexpected status from HEAD request to http://r/v2/t/x/blobs/sha256:f1ba: 403 Forbidden", None, "auth"),
    ("unauthorized: authentication required", 401, "auth"),
    ("denied: requested access to the resource is denied", None, "auth"),
    ('failed to do request: Head "https://r/v2/": tls: failed to verify certificate: x509: certificate signed by '
     'unknown authority', None, "permanent"),
    ("unexpected status from PUT request to http://r/v2/t/x/manifests/a: 400 Bad Request", None, "permanent"),
    ("manifest unknown: manifest unknown", 404, "permanent"),
    # A word list would have retried this one (it contains "timeout"); nothing in it is a transport failure.
    ("invalid tag: skyrl-timeout-test is not allowed by the registry policy", None, "permanent"),
])
def test_registry_errors_are_classified_by_status_and_structure(message, status, kind):
    assert classify_registry_error(message, status) == kind


@container
@pytest.mark.reliability("fault", "registry resets the connection on the first blob upload, then recovers",
                         "retried; the push completes and the digest the registry reports is verified")
def test_reset_connection_on_a_blob_upload_is_retried_and_the_digest_verified(built, registry, login, capsys):
    with FaultProxy(registry.host, Fault("reset", count=1)) as proxy:
        repo = f"{proxy.host}/{REPO_NAME}"
        record = push_variant("rehearsal", repository=repo, skip_smoke_gate=True, backoff_seconds=0.05)
    assert len(proxy.faults_injected) == 1 and proxy.faults_injected[0].startswith("reset ")
    assert "retry 1/3" in capsys.readouterr().err
    assert record.pushed["ref"] == f"{repo}@{built.digest}"
    assert registry.manifest_digest(REPO_NAME, content_tag("rehearsal", built.digest)) == built.digest
    assert registry.manifest_digest(REPO_NAME, "rehearsal-latest") == built.digest


@container
@pytest.mark.reliability("fault", "registry answers 500 to the first blob upload, then recovers",
                         "retried; the push completes, digest verified")
def test_500_on_a_blob_upload_is_retried(built, registry, login, capsys):
    with FaultProxy(registry.host, Fault(500, count=1)) as proxy:
        record = push_variant("rehearsal", repository=f"{proxy.host}/{REPO_NAME}", skip_smoke_gate=True,
                              backoff_seconds=0.05)
    assert len(proxy.faults_injected) == 1
    assert "retry 1/3" in capsys.readouterr().err
    assert registry.manifest_digest(REPO_NAME, content_tag("rehearsal", built.digest)) == record.digest


@container
@pytest.mark.reliability("fault", "registry answers 401 to a blob upload (once, then would accept)",
                         "not retried: `error: registry ... refused the login`; no tag moved, no local tag left")
def test_401_on_a_blob_upload_is_not_retried(built, registry, login, capsys):
    """One 401, then the proxy passes everything: a retry would have succeeded, so the error proves none ran."""
    with FaultProxy(registry.host, Fault(401, count=1)) as proxy:
        repo = f"{proxy.host}/{REPO_NAME}"
        with pytest.raises(StackError, match="refused the login: failed commit on ref"):
            push_variant("rehearsal", repository=repo, skip_smoke_gate=True, backoff_seconds=0.05)
    assert len(proxy.faults_injected) == 1
    assert "retry" not in capsys.readouterr().err
    assert registry.tags(REPO_NAME) == [] and load_build_record("rehearsal").pushed == {}
    assert _local_tags(built.digest, repo) == []


@container
@pytest.mark.reliability("fault", "registry resets every blob upload",
                         "retried with backoff (4 attempts by default), then `error: registry ... unreachable`; no tag moved or left behind")
def test_a_registry_that_keeps_resetting_is_given_up_on(built, registry, login):
    with FaultProxy(registry.host, Fault("reset", count=1000)) as proxy:
        repo = f"{proxy.host}/{REPO_NAME}"
        with pytest.raises(StackError, match="unreachable: failed commit on ref .*failed to do request"):
            push_variant("rehearsal", repository=repo, skip_smoke_gate=True, attempts=2, backoff_seconds=0.05)
    assert registry.tags(REPO_NAME) == [] and _local_tags(built.digest, repo) == []


@container
def test_half_given_credentials_are_refused_before_any_network(built, monkeypatch):
    monkeypatch.setenv(USER_ENV, "u")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(StackError, match=f"{PASSWORD_ENV} is not set"):
        push_variant("rehearsal", repository="127.0.0.1:1/x", skip_smoke_gate=True)


@container
def test_immutable_registry_refuses_before_sending_when_a_tag_holds_another_digest(built, registry, login):
    """ECR-style immutable tags (the local registry cannot enforce them, so the check is what is tested):
    a second image for the same pins must not move any tag, nor leave half of them moved."""
    repo = f"{registry.host}/{REPO_NAME}"
    push_variant("rehearsal", repository=repo, skip_smoke_gate=True, immutable=True, backoff_seconds=0.1)
    before = {tag: registry.manifest_digest(REPO_NAME, tag) for tag in registry.tags(REPO_NAME)}
    assert "rehearsal-latest" not in before  # a tag that must move has no place in an immutable repository

    container = subprocess.run(["docker", "create", built.digest, "true"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        other = subprocess.run(["docker", "commit", container, OTHER_IMAGE], capture_output=True,
                               text=True, check=True).stdout.strip()
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)
    try:
        record = load_build_record("rehearsal")
        record.digest, record.pushed = other, {}
        record.save()
        with pytest.raises(StackError, match="already holds .* immutable tags"):
            push_variant("rehearsal", repository=repo, skip_smoke_gate=True, immutable=True, backoff_seconds=0.1)
        assert {tag: registry.manifest_digest(REPO_NAME, tag) for tag in registry.tags(REPO_NAME)} == before
    finally:
        subprocess.run(["docker", "image", "rm", OTHER_IMAGE], capture_output=True)


@pytest.mark.reliability("fault", "Ctrl-C (SIGINT) once every tag of a push is verified",
                         "push recorded and reported done, exit 0 (not 130)")
@container
def test_ctrl_c_after_the_push_completed_reports_success(built, registry, login, monkeypatch, capsys):
    """Issue 10: a Ctrl-C that lands once the push is done (here: a real SIGINT to this process, sent
    the moment the record is written; the one seam, since a key press cannot be timed) must not turn a
    completed push into exit 130: push returns its record and says the push succeeded."""
    import os
    import signal

    from skyrl_stack.image.records import BuildRecord

    save = BuildRecord.save

    def save_then_ctrl_c(self, *args, **kwargs):
        result = save(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(BuildRecord, "save", save_then_ctrl_c)
    repo = f"{registry.host}/{REPO_NAME}"
    record = push_variant("rehearsal", repository=repo, skip_smoke_gate=True, backoff_seconds=0.1)
    assert record.pushed["ref"] == f"{repo}@{built.digest}"
    assert registry.manifest_digest(REPO_NAME, "rehearsal-latest") == built.digest
    assert "interrupted after the push completed" in capsys.readouterr().err


@container
@pytest.mark.reliability("fault", "the registry's read-back of the pushed digest names another digest",
                         "`error: registry reports ...`; no human tag moved, no local tag left behind")
def test_a_read_back_that_disagrees_moves_no_tag_and_leaves_no_local_tag(built, registry, login, other_manifest):
    """The registry answers the read-back of the pushed tag with another manifest it holds (a real one, so the
    engine can follow it: `other_manifest`)."""
    first = content_tag("rehearsal", built.digest)
    readback = Fault("digest", count=1000, methods=("HEAD", "GET"), path=re.compile(rf"^/v2/.+/manifests/{first}$"),
                     digest=other_manifest)
    with FaultProxy(registry.host, readback) as proxy:
        repo = f"{proxy.host}/{REPO_NAME}"
        with pytest.raises(StackError, match=rf"registry reports {other_manifest} for {re.escape(repo)}:{first}"):
            push_variant("rehearsal", repository=repo, skip_smoke_gate=True, backoff_seconds=0.05)
    assert proxy.faults_injected  # the read-back went through the fault
    assert registry.tags(REPO_NAME) == sorted([first, "other"])  # only the digest's own tag reached the registry
    assert _local_tags(built.digest, repo) == []
    assert load_build_record("rehearsal").pushed == {}


@pytest.fixture
def other_manifest(registry, tmp_path) -> str:
    """A one-file image made here and pushed to `registry` under REPO_NAME:other; its manifest digest there.
    Its local tag goes with the registry fixture (every tag of the registry's host)."""
    from skyrl_stack import engine

    (tmp_path / "other").write_text("another image\n")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "other.tar"), "other"], check=True)
    ref = f"{registry.host}/{REPO_NAME}:other"
    subprocess.run(["docker", "import", str(tmp_path / "other.tar"), ref], check=True, capture_output=True)
    auth = {"username": registry.user, "password": registry.password, "serveraddress": registry.host}
    for event in engine.client().api.push(f"{registry.host}/{REPO_NAME}", tag="other", stream=True, decode=True,
                                          auth_config=auth):
        assert "error" not in event, event
    return registry.manifest_digest(REPO_NAME, "other")


@container
@pytest.mark.reliability("fault", "the last human tag's manifest push keeps failing (500) after the others moved",
                         "`error: registry ... unreachable`; every local tag the push made is removed")
def test_a_push_that_fails_half_way_removes_every_local_tag_it_made(built, registry, login):
    latest = Fault(500, count=1000, methods=("PUT",), path=re.compile(MANIFEST.pattern + "rehearsal-latest$"))
    with FaultProxy(registry.host, latest) as proxy:
        repo = f"{proxy.host}/{REPO_NAME}"
        with pytest.raises(StackError, match="unreachable"):
            push_variant("rehearsal", repository=repo, skip_smoke_gate=True, attempts=2, backoff_seconds=0.05)
    moved = set(registry.tags(REPO_NAME))
    assert content_tag("rehearsal", built.digest) in moved and "rehearsal-latest" not in moved  # it did fail half-way
    assert _local_tags(built.digest, repo) == []
