"""Build failures a user meets: a second build in the same checkout, a TLS-intercepting proxy."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image import build
from tests.conftest import REPO_ROOT, TEST_BASE_IMAGE


@pytest.mark.reliability("bad input", "a second `invoke build` while one runs in the same checkout",
                         "waits, naming the running build's pid; never shares its bake file or archives")
def test_a_second_build_in_the_checkout_waits_for_the_first(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from skyrl_stack.image.build import build_lock
            with build_lock(Path({str(tmp_path)!r})):
                print("held", flush=True)
                sys.stdin.read()  # hold until the test closes stdin
        """)], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StackError, match=rf"another build is running in this checkout \(pid {holder.pid}\)"):
            with build.build_lock(tmp_path, wait_seconds=0.5):
                pass
        assert f"waiting for the build already running in this checkout (pid {holder.pid})" in capsys.readouterr().err
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with build.build_lock(tmp_path, wait_seconds=0):  # released when its holder ends
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()}"


@pytest.mark.parametrize("name", build.CA_BUNDLE_ENVS)
def test_the_hosts_named_ca_bundle_is_the_default_build_secret(name, tmp_path, monkeypatch, capsys):
    for other in build.CA_BUNDLE_ENVS:
        monkeypatch.delenv(other, raising=False)
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv(name, str(ca))
    assert build.host_ca_bundle() == str(ca)
    assert capsys.readouterr().err.strip() == (f"==> passing the CA bundle {name}={ca} to the build as a secret "
                                               "(--ca-bundle overrides)")


def test_no_named_bundle_means_no_secret(monkeypatch, tmp_path, capsys):
    for name in build.CA_BUNDLE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))  # a stale setting is not a bundle
    assert build.host_ca_bundle() is None and capsys.readouterr().err == ""


@pytest.mark.container
@pytest.mark.reliability("fault", "a build step behind a TLS-intercepting proxy, no CA bundle given",
                         "`error: ... could not verify a TLS certificate`, hint names --ca-bundle")
def test_a_certificate_failure_in_a_build_step_gets_the_ca_bundle_hint(docker_engine, tmp_path, capsys):
    """A real buildx build whose step talks HTTPS to a server with a certificate no bundle in the image
    trusts, as behind a TLS-intercepting proxy without --ca-bundle. The server runs inside the step, on
    its own loopback, with a certificate made here: no network or host proxy needed."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    (tmp_path / "step.py").write_text(textwrap.dedent("""
        import http.server, ssl, threading, urllib.request
        server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain("/src/cert.pem", "/src/key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        urllib.request.urlopen(f"https://localhost:{server.server_port}/")
    """))
    (tmp_path / "Dockerfile").write_text(f"FROM {TEST_BASE_IMAGE}\nCOPY . /src\nRUN python3 /src/step.py\n")
    code, cert_failure = build._run_showing_output(
        ["docker", "buildx", "build", "--progress", "plain", "--no-cache", "--output", "type=cacheonly",
         str(tmp_path)], env=dict(os.environ))
    output = capsys.readouterr().err
    assert code != 0 and cert_failure, output[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in output  # the build's own output still reaches the user


def test_a_failing_step_without_certificate_trouble_gets_no_ca_hint(capsys):
    code, cert_failure = build._run_showing_output(["sh", "-c", "echo 'ERROR: process did not complete'; exit 3"],
                                                   env={})
    assert (code, cert_failure) == (3, False)


@pytest.mark.container
def test_the_builds_engine_lookups_read_the_real_store(docker_engine):
    """What the build asks the engine (through the SDK, engine.py): a base's id for the fingerprint,
    whether a recorded image is still there, and that the store holds the image as BuildKit's digest."""
    from skyrl_stack import engine

    client = engine.client()
    base = client.images.get(TEST_BASE_IMAGE)
    assert build._base_image_id(client, TEST_BASE_IMAGE) == base.id  # a tag: what it names now counts
    assert build._base_image_id(client, f"example.invalid/base@{base.id}") == ""  # pinned by digest: not looked up
    assert build._base_image_id(client, "example.invalid/absent:never") == ""
    assert build._stored_image(client, base.id).id == base.id
    with pytest.raises(StackError, match=r"the engine does not hold the built image as sha256:0{64}") as err:
        build._stored_image(client, "sha256:" + "0" * 64, "default")
    # This engine uses the containerd store (setup-test-machine.sh): the hint must not send the user there.
    assert "containerd-snapshotter" not in err.value.hint and "the builder default exported" in err.value.hint
