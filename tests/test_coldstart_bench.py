"""The cold start benchmark's parts (skyrl_stack/dev/coldstart.py, capped_proxy.py): the cap over real TCP,
the README rows, and an empty engine that leaves the user's engine as found."""
from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from skyrl_stack.dev import bench, coldstart
from skyrl_stack.dev.capped_proxy import CappedProxy, TokenBucket


@pytest.fixture
def sender():
    """A loopback server that sends each client 3 MB of numbered bytes, then closes."""
    payload = bytes(i % 251 for i in range(3_000_000))
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.recv(16)
                client.sendall(payload)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1], payload
    finally:
        server.close()


def _fetch(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_the_cap_passes_every_byte_and_schedules_them_at_the_rate_for_all_connections_together(sender):
    port, payload = sender
    with CappedProxy(port, mb_per_s=20) as proxy:
        start = proxy.bucket._next
        results = []
        threads = [threading.Thread(target=lambda: results.append(_fetch(proxy.port))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results == [payload, payload]
    assert proxy.bucket.sent == 2 * len(payload)
    # The link's schedule, not a wall clock: two streams share one 20 MB/s, so 6 MB end >= 0.3 s after the first byte.
    assert proxy.bucket._next - start >= 2 * len(payload) / 20e6


def test_a_bucket_without_backlog_does_not_wait():
    bucket = TokenBucket(1e6)
    bucket._next = time.monotonic() - 10  # idle for 10 s: no burst credit is kept either
    bucket.take(500_000)
    assert bucket._next >= time.monotonic() + 0.4 and bucket.sent == 500_000


def test_the_readme_rows_and_the_ratio_line():
    results = {"image": "r@sha256:x", "base_image": "debian", "runs": [
        {"mb_per_s": 20, "image": {"total_s": 40.0, "fetch_s": 30.0, "fetched_bytes": 377_000_000},
         "setup": {"total_s": 20.0, "fetch_s": 8.0, "fetched_bytes": 94_000_000}, "ratio": 2.0},
        {"mb_per_s": 50, "image": {"total_s": 30.5, "fetch_s": 20.0, "fetched_bytes": 377_000_000},
         "setup": {"total_s": 25.0, "fetch_s": 10.0, "fetched_bytes": 94_000_000}, "ratio": 1.22}]}
    text = coldstart.markdown(results)
    assert "| at 20 MB/s, to Ray joined | 40.0 s (pull 30.0 s of 377 MB) | 20.0 s (install 8.0 s, 94 MB fetched) | 2.00 | - |" in text
    gpu = coldstart.markdown(results, {v: {"totals": {"image": {"compressed": 8e9}, "setup": {"compressed": 4e9}}}
                                       for v in ("vllm", "sglang")})
    assert "| vllm (byte table), download alone at 50 MB/s | ~160 s | ~80 s | ~2.00 | |" in gpu
    assert text.rstrip().endswith("Last line: `cold start at 50 MB/s: image 30.5 s, setup 25.0 s, ratio 1.22`.")


def test_only_bytes_or_coldstart_leaves_the_performance_table_alone(monkeypatch):
    called = []
    monkeypatch.setattr(bench, "_script", lambda name: pytest.fail(f"ran the {name} benchmark"))
    monkeypatch.setattr(bench, "cold_start_block", lambda parts, readme: called.append(parts))
    bench.run(["bytes"])
    assert called == [["bytes"]]


def test_the_bytes_part_writes_the_cold_start_block_and_the_launch_figures(tmp_path):
    from skyrl_stack.launch.cold_start import image_bytes

    readme = tmp_path / "README.md"
    readme.write_text(f"{bench.README_BEGIN}\nkept\n{bench.README_END}\n{bench.COLDSTART_BEGIN}\nold\n{bench.COLDSTART_END}\n")
    (tmp_path / "skyrl_stack" / "launch").mkdir(parents=True)
    bench.cold_start_block(["bytes"], root=tmp_path)
    text = readme.read_text()
    assert "\nkept\n" in text and "\nold\n" not in text and "| image: base nvidia/cuda:12.8.1-devel-ubuntu22.04 |" in text
    import json

    assert json.loads((tmp_path / "skyrl_stack" / "launch" / "image_bytes.json").read_text()) == image_bytes()


@pytest.mark.container
def test_the_empty_engine_leaves_the_hosts_links_and_the_users_engine_as_found(tmp_path, docker_engine):
    """A second dockerd with `--bridge none` deletes the host's docker0 at start (moby removeDefaultBridgeInterface),
    the user's engine's default network; the bench's engine gets a bridge of its own and removes it after."""
    def links():
        return set(subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.split("\n"))

    def names(lines):
        return {line.split(": ")[1].split("@")[0] for line in lines if ": " in line}

    before = names(links())
    engines_before = subprocess.run(["docker", "info", "--format", "{{.ID}} {{.Images}}"], capture_output=True,
                                    text=True, check=True).stdout
    with coldstart.empty_engine(tmp_path / "engine") as host:
        during = names(links())
        own = subprocess.run(["docker", "-H", host, "info", "--format", "{{.ID}} {{.Images}}"], capture_output=True,
                             text=True, check=True).stdout
    after = names(links())
    assert "docker0" in before and "docker0" in during and before - during <= {n for n in before if n.startswith("veth")}
    assert own.split()[1] == "0" and own.split()[0] != engines_before.split()[0]  # empty, and not the user's engine
    assert not {n for n in after if n.startswith("skyrlcs")} and not (tmp_path / "engine").exists()
    assert str(tmp_path) not in Path("/proc/mounts").read_text()  # nothing of it left mounted
    # After it stopped too: the user's docker0 is still there, and its socket/exec-root folder (netns mounts) is gone.
    sockets = Path(host.removeprefix("unix://")).parent
    assert "docker0" in after
    assert not sockets.exists() and str(sockets) not in Path("/proc/mounts").read_text()


def test_readme_quotes_the_bytes_each_flow_fetched():
    """The README's prose quotes the cold start block's fetched bytes (bytes do not vary from run to run)."""
    from tests.support.paths import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split(bench.COLDSTART_BEGIN, 1)[1].split(bench.COLDSTART_END, 1)[0]
    image_mb, setup_mb = (int(x) for x in re.search(r"pull [\d.]+ s of (\d+) MB\) \| [\d.]+ s \(install [\d.]+ s, (\d+) MB",
                                                    block).groups())
    prose = " ".join(readme.split(bench.COLDSTART_END, 1)[1].split())
    assert f"its image flow fetches {image_mb} MB" in prose and f"against the setup flow's {setup_mb} MB" in prose


def test_a_dockerd_that_hangs_on_shutdown_is_killed_and_everything_is_still_cleaned(tmp_path, monkeypatch):
    """The empty engine's teardown goes on past a dockerd that ignores SIGTERM: killed, then unmounted and removed
    (no dockerd, bridge or folder left, no traceback). Only dockerd, docker and ip are stood in for (they need root)."""
    from contextlib import contextmanager

    class HangingDockerd:
        def __init__(self, *args, **kwargs):
            self.signals = []

        def terminate(self):
            self.signals.append("TERM")

        def kill(self):
            self.signals.append("KILL")

        def wait(self, timeout=None):
            if self.signals[-1] == "TERM":
                raise subprocess.TimeoutExpired("dockerd", timeout)
            return -9

    started, bridges, unmounted = [], [], []

    def popen(*args, **kwargs):
        started.append(HangingDockerd())
        return started[-1]

    @contextmanager
    def own_bridge():
        bridges.append("up")
        yield "skyrlcstest"
        bridges.append("down")

    monkeypatch.setattr(coldstart.subprocess, "Popen", popen)
    monkeypatch.setattr(coldstart.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(coldstart, "_wait", lambda *a, **k: None)
    monkeypatch.setattr(coldstart, "own_bridge", own_bridge)
    monkeypatch.setattr(coldstart, "_unmount_under", lambda *roots: unmounted.extend(roots))
    with coldstart.empty_engine(tmp_path / "engine") as host:
        sockets = Path(host.removeprefix("unix://")).parent
    assert started[0].signals == ["TERM", "KILL"]
    assert unmounted == [tmp_path / "engine", sockets] and bridges == ["up", "down"]
    assert not (tmp_path / "engine").exists() and not sockets.exists()


@pytest.mark.parametrize("missing", coldstart.HOST_TOOLS)
def test_a_machine_without_the_benchs_tools_is_one_line_before_anything_starts(monkeypatch, missing):
    from skyrl_stack.errors import StackError

    monkeypatch.setattr(coldstart.shutil, "which", lambda tool: None if tool == missing else f"/usr/bin/{tool}")
    monkeypatch.setattr(coldstart, "registry", lambda root: pytest.fail("the bench started its registry"))
    with pytest.raises(StackError, match=rf"^cold start bench: {re.escape(missing)} not on PATH$"):
        coldstart.run()


def test_the_bench_as_another_user_than_root_is_one_line(monkeypatch):
    from skyrl_stack.errors import StackError

    monkeypatch.setattr(coldstart.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(coldstart.os, "geteuid", lambda: 1000)
    with pytest.raises(StackError, match=r"^cold start bench: needs root"):
        coldstart.run()


def test_a_pull_the_empty_engine_refuses_is_one_line(monkeypatch, tmp_path):
    """A failing step of a flow (here the empty engine's pull) is one error: line naming the command and docker's
    own first error line, not a CalledProcessError traceback. Stood in for: the proxy, the engine and docker."""
    from contextlib import contextmanager

    from skyrl_stack.dev import capped_proxy
    from skyrl_stack.errors import StackError

    class Proxy:
        port, bucket = 1, None

        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    @contextmanager
    def engine(root):
        yield "unix:///tmp/skcs-test/docker.sock"

    refused = "Error response from daemon: manifest unknown\nmore detail\n"
    monkeypatch.setattr(capped_proxy, "CappedProxy", Proxy)
    monkeypatch.setattr(coldstart, "empty_engine", engine)
    monkeypatch.setattr(coldstart.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 1, "", refused))
    with pytest.raises(StackError, match=r"^cold start bench: docker -H unix:///tmp/skcs-test/docker.sock pull -q "
                                         r"127\.0\.0\.1:1/img exited 1: Error response from daemon: manifest unknown$"):
        coldstart.image_flow("img", 5000, 20, tmp_path)
