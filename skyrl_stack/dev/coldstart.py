"""`invoke bench --part coldstart`: a node's cold start, the image against `setup:`, at the same bandwidth.

Both flows start on a node that has only its OS and a Docker engine, and end when Ray says all (one)
nodes joined; each fetches through the same bandwidth cap (capped_proxy.py, loopback only):

- image flow: an empty engine (a second dockerd with its own data root and socket, started and
  stopped here; the user's engine is not touched) pulls the rehearsal image from a registry process
  of this run through the cap, starts it, and `skyrl-ray-up` forms Ray in it;
- setup flow: a container of the plain base OS the rehearsal builds on (what the VM already has)
  does what the seed's `setup:` does: a venv, uv, then the same hashed lock, all from a local index of
  the same wheels (downloaded once from PyPI, checked against the lock's hashes) served through the cap
  (`--no-deps`: the lock is complete, and a plain file index serves no PEP 658 metadata, so resolving
  would download each wheel twice, which PyPI would not make it do);
  then the same `skyrl-ray-up` (mounted from the checkout) forms Ray.

At each bandwidth it prints `cold start at N MB/s: image A s, setup B s, ratio R` (the last line counts).
The rehearsal image is about 0.4 GB, so caps of 20 and 50 MB/s finish in a few minutes. What it shows
for the GPU images follows from the byte table (node_bytes.py): the same arithmetic on their bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

BANDWIDTHS_MB_S = (20, 50)
# Runs of each flow per bandwidth, the fastest reported: on a shared machine every disturbance only adds
# time, so the fastest run is the nearest to the flow's own cost (all runs are kept in the JSON).
REPEATS = 2
JOINED = re.compile(r"skyrl-ray-up: all 1 nodes joined")
# The flows' Ray: one node, the pinned port; `--network none` for the image flow (nothing to reach),
# the host's network for the setup flow (its index is on loopback).
NODE_ENV = {"SKYPILOT_NODE_RANK": "0", "SKYPILOT_NUM_NODES": "1", "SKYPILOT_NODE_IPS": "127.0.0.1",
            "SKYPILOT_NUM_GPUS_PER_NODE": "0", "SKYRL_RAY_JOIN_TIMEOUT": "120"}
TIMEOUT_S = 600


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    from skyrl_stack.errors import StackError

    raise StackError(f"cold start bench: {what} did not come up in {timeout:g} s", hint="see its log under the bench's temp dir")


@contextmanager
def registry(root: Path):
    """Debian's docker-registry as a plain process on a free loopback port, no auth (this run's only)."""
    root.mkdir(parents=True)
    port = _free_port()
    config = root / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "w") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/v2/"), "the registry")
            yield port
        finally:
            process.terminate()
            process.wait(timeout=20)


def _checked(command: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a step of the bench; a failure is one `error:` line naming the command and its own first error line
    (not a CalledProcessError traceback)."""
    from skyrl_stack.errors import StackError, first_line

    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StackError(f"cold start bench: {' '.join(command)} took over {timeout:g} s",
                         hint="the machine or the cap is slower than the bench allows; nothing of it is left") from None
    if result.returncode != 0:
        raise StackError(f"cold start bench: {' '.join(command)} exited {result.returncode}: "
                         f"{first_line(result.stderr or result.stdout)}",
                         hint="what the bench started so far is stopped and removed")
    return result


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def own_bridge():
    """A bridge interface of the bench's own (a free 10.254.N.1/30), removed after.

    The second dockerd needs a bridge to manage: with `--bridge none` dockerd deletes the host's
    `docker0` at start (moby daemon/daemon_unix.go, removeDefaultBridgeInterface), which is the user's
    engine's default network. Given a bridge of its own (`--bridge NAME`), it leaves docker0 alone."""
    import secrets

    routes = _checked(["ip", "-4", "route"]).stdout
    third = next(n for n in range(200, 255) if f"10.254.{n}." not in routes)
    name = f"skyrlcs{secrets.token_hex(3)}"
    _checked(["ip", "link", "add", name, "type", "bridge"])
    try:
        _checked(["ip", "addr", "add", f"10.254.{third}.1/30", "dev", name])
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@contextmanager
def empty_engine(root: Path):
    """A second dockerd: its own data root, exec root, socket, managed containerd and bridge; no
    iptables rules (its containers run with --network none), so it touches nothing of the user's engine.

    Its sockets live in a short folder of /tmp (a unix socket path has at most 107 bytes, and containerd's
    sits under the exec root); what dockerd leaves mounted under its roots is unmounted before removal."""
    root.mkdir(parents=True)
    (root / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json: an engine of its own
    sockets = Path(tempfile.mkdtemp(prefix="skcs-", dir="/tmp"))
    host = f"unix://{sockets / 'docker.sock'}"
    with own_bridge() as bridge, open(root / "dockerd.log", "w") as log:
        process = subprocess.Popen(["dockerd", "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
                                    "--exec-root", str(sockets / "exec"), "--pidfile", str(sockets / "docker.pid"),
                                    "-H", host, "--bridge", bridge, "--iptables=false",
                                    "--ip6tables=false", "--ip-masq=false"], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: subprocess.run(["docker", "-H", host, "info"], capture_output=True).returncode == 0,
                  "the empty engine", timeout=120)
            yield host
        finally:
            subprocess.run(["docker", "-H", host, "rm", "-f", *subprocess.run(
                ["docker", "-H", host, "ps", "-aq"], capture_output=True, text=True).stdout.split()], capture_output=True)
            _stop(process)
            _unmount_under(root, sockets)
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(sockets, ignore_errors=True)


def _stop(process: subprocess.Popen, grace_s: float = 60) -> None:
    """Stop the bench's dockerd: SIGTERM, then SIGKILL after grace_s. A dockerd that hangs on shutdown must not
    end the cleanup there (its mounts, folders and bridge would be left, with a traceback)."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _unmount_under(*roots: Path) -> None:
    """Lazily unmount what is still mounted under these folders (dockerd bind-mounts its data root onto itself)."""
    prefixes = tuple(str(root.resolve()) for root in roots)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _until_joined(command: list[str], marks: dict | None = None) -> float:
    """Run a container command; seconds until its output says Ray joined (and the lines' times in marks)."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    joined, output = None, []
    for line in process.stdout:
        output.append(line)
        if marks is not None and line.startswith("phase "):
            marks[line.split()[1]] = time.monotonic() - start
        if joined is None and JOINED.search(line):
            joined = time.monotonic() - start
    code = process.wait(timeout=TIMEOUT_S)
    if code != 0 or joined is None:
        from skyrl_stack.errors import StackError

        raise StackError(f"cold start bench: {' '.join(command[:6])} ... exited {code} before Ray joined",
                         hint="".join(output[-15:]).strip()[-1500:])
    return joined


def image_flow(image: str, registry_port: int, mb_per_s: float, work: Path) -> dict:
    """Pull through the cap into an empty engine, start, Ray joins: seconds, with the pull's share."""
    from skyrl_stack.dev.capped_proxy import CappedProxy

    with CappedProxy(registry_port, mb_per_s) as proxy, empty_engine(work / f"engine-{mb_per_s:g}") as host:
        ref = f"127.0.0.1:{proxy.port}/{image}"
        start = time.monotonic()
        _checked(["docker", "-H", host, "pull", "-q", ref], timeout=TIMEOUT_S)
        pulled = time.monotonic() - start
        env = [arg for name, value in NODE_ENV.items() for arg in ("-e", f"{name}={value}")]
        joined = _until_joined(["docker", "-H", host, "run", "--rm", "--network", "none", "--shm-size", "512m", *env, ref,
                                "skyrl-ray-up", "--port", str(_ray_port())])
        return {"total_s": round(pulled + joined, 2), "fetch_s": round(pulled, 2), "fetched_bytes": proxy.bucket.sent}


def setup_flow(base_image: str, index: Path, lock: Path, uv_version: str, mb_per_s: float) -> dict:
    """A container of the base OS: venv, uv and the lock from the capped index, then Ray joins."""
    from skyrl_stack.dev.capped_proxy import CappedProxy
    from skyrl_stack.project import project_root

    root = project_root()
    with _file_server(index) as index_port, CappedProxy(index_port, mb_per_s) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/"
        script = ("set -e; python3 -m venv /opt/skyrl/venv; "
                  f"/opt/skyrl/venv/bin/pip install -q --no-index --find-links {url} uv=={uv_version}; "
                  f"/opt/skyrl/venv/bin/uv pip install -q --python /opt/skyrl/venv/bin/python --no-index "
                  f"--find-links {url} --require-hashes --no-deps -r /tmp/requirements.lock; echo phase installed; "
                  f"exec /opt/skyrl/venv/bin/python /opt/skyrl-stack/bin/skyrl-ray-up --port {_ray_port()}")
        env = [arg for name, value in {**NODE_ENV, "PYTHONPATH": "/opt/skyrl-stack/lib"}.items() for arg in ("-e", f"{name}={value}")]
        marks: dict = {}
        joined = _until_joined(["docker", "run", "--rm", "--network", "host", "--shm-size", "512m", *env,
                                "-v", f"{lock}:/tmp/requirements.lock:ro",
                                "-v", f"{root / 'docker' / 'scripts' / 'bin'}:/opt/skyrl-stack/bin:ro",
                                "-v", f"{root / 'skyrl_stack'}:/opt/skyrl-stack/lib/skyrl_stack:ro",
                                base_image, "/bin/bash", "-c", script], marks)
        return {"total_s": round(joined, 2), "fetch_s": round(marks.get("installed", 0.0), 2),
                "fetched_bytes": proxy.bucket.sent}


def _ray_port() -> int:
    from skyrl_stack.image.pins import load_pins

    return load_pins().ray_port


@contextmanager
def _file_server(directory: Path):
    """A flat wheel index (pip and uv read its directory listing as --find-links) on a loopback port."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def wheel_index(cache: Path) -> Path:
    """The rehearsal lock's wheels and the pinned uv's, as the lock and pins name them (URLs recorded in
    tests/data/skyrl-1ed499c/wheel-sizes.json), downloaded once and checked against the lock's hashes."""
    from skyrl_stack.dev.wheel_sizes import _context
    from skyrl_stack.project import project_root

    root = project_root()
    measured = json.loads((root / "tests" / "data" / "skyrl-1ed499c" / "wheel-sizes.json").read_text())
    lock = (root / "docker" / "rehearsal" / "requirements.lock").read_text()
    from skyrl_stack.dev.wheel_sizes import load_uv_sha

    hashes = set(re.findall(r"sha256:([0-9a-f]{64})", lock)) | {load_uv_sha(root)}
    cache.mkdir(parents=True, exist_ok=True)
    for url in [*measured["rehearsal"], measured["uv"]]:
        path = cache / url.rsplit("/", 1)[1]
        if not path.exists():
            with urllib.request.urlopen(url, context=_context(), timeout=300) as response:
                data = response.read()
            if hashlib.sha256(data).hexdigest() not in hashes:
                from skyrl_stack.errors import StackError

                raise StackError(f"{url}: its sha256 is not in the rehearsal lock or the uv pin",
                                 hint="regenerate tests/data/skyrl-1ed499c/wheel-sizes.json (python -m skyrl_stack.dev.wheel_sizes)")
            path.write_bytes(data)
    return cache


# What the bench runs besides the docker CLI: a second engine (dockerd, as root: it makes a bridge with `ip`),
# and this run's registry (Debian's docker-registry, as scripts/setup-test-machine.sh installs it).
HOST_TOOLS = ("docker", "dockerd", "ip", "docker-registry")


def require_host() -> None:
    """One line, before anything starts, where this machine cannot run the bench (not a CalledProcessError or
    FileNotFoundError traceback from the first `ip link add` or dockerd)."""
    from skyrl_stack.errors import StackError

    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise StackError(f"cold start bench: {', '.join(missing)} not on PATH",
                         hint="it runs a second dockerd and a registry process here: scripts/setup-test-machine.sh "
                              "installs them")
    if os.geteuid() != 0:
        raise StackError("cold start bench: needs root (its empty engine is a second dockerd with a bridge of its own)",
                         hint="run it as root, e.g. sudo -E .venv/bin/invoke bench --part coldstart")


def run(bandwidths: tuple[float, ...] = BANDWIDTHS_MB_S) -> dict:
    """Both flows at each bandwidth; prints the ratio line per bandwidth; returns the figures."""
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.records import load_build_record
    from skyrl_stack.project import project_root, workspace

    require_host()
    pins = load_pins()
    record = load_build_record("rehearsal")
    if subprocess.run(["docker", "image", "inspect", record.ref], capture_output=True).returncode != 0:
        from skyrl_stack.errors import StackError

        raise StackError(f"the rehearsal build record's image {record.ref} is not in the engine",
                         hint="build it again: invoke build --variant rehearsal")
    base = pins.variant("rehearsal").base_image
    lock = project_root() / "docker" / "rehearsal" / "requirements.lock"
    index = wheel_index(workspace() / ".skyrl-stack" / "bench-wheels")
    results = {"image": record.ref, "base_image": base, "runs": []}
    with tempfile.TemporaryDirectory(prefix="skyrl-coldstart-") as tmp, registry(Path(tmp) / "registry") as port:
        work = Path(tmp)
        name = "coldstart/rehearsal:bench"
        local = f"127.0.0.1:{port}/{name}"
        _checked(["docker", "tag", record.ref, local])
        try:  # the image in this run's registry; the tag made for the push is removed at once
            _checked(["docker", "push", "-q", local])
        finally:
            subprocess.run(["docker", "image", "rm", local], capture_output=True)
        for mb_per_s in bandwidths:
            images, setups = [], []
            for _ in range(REPEATS):  # alternated, so a busy spell of the machine hits both flows alike
                images.append(image_flow(name, port, mb_per_s, work))
                setups.append(setup_flow(base, index, lock, pins.uv, mb_per_s))
            image, setup = (dict(min(runs, key=lambda r: r["total_s"]), runs_s=[r["total_s"] for r in runs])
                            for runs in (images, setups))
            ratio = image["total_s"] / setup["total_s"]
            # The machine's 1-minute load after both flows: unpacking is CPU work, so a busy machine slows the
            # image flow most (the figures are this machine's, at that load).
            results["runs"].append({"mb_per_s": mb_per_s, "image": image, "setup": setup, "ratio": round(ratio, 2),
                                    "load": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()})
            print(f"cold start at {mb_per_s:g} MB/s: image {image['total_s']:.1f} s, setup {setup['total_s']:.1f} s, "
                  f"ratio {ratio:.2f}", flush=True)
    return results


def markdown(results: dict, node_bytes: dict | None = None) -> str:
    """README rows: each bandwidth's two flows, what each fetched, and the ratio line; with node_bytes (the
    byte table's figures, node_bytes.accounting), the same arithmetic for the GPU images' downloads."""
    lines = ["| cold start, one node, same cap (rehearsal) | image flow | setup flow | image / setup | 1-min load |",
             "|---|---|---|---|---|"]
    for run_ in results["runs"]:
        image, setup = run_["image"], run_["setup"]
        lines.append(f"| at {run_['mb_per_s']:g} MB/s, to Ray joined | {image['total_s']:.1f} s (pull {image['fetch_s']:.1f} s "
                     f"of {image['fetched_bytes'] / 1e6:.0f} MB) | {setup['total_s']:.1f} s (install {setup['fetch_s']:.1f} s, "
                     f"{setup['fetched_bytes'] / 1e6:.0f} MB fetched) | {run_['ratio']:.2f} | "
                     + (f"{run_['load']:g} on {run_['cpus']} CPUs |" if "load" in run_ else "- |"))
    for variant in ("vllm", "sglang") if node_bytes else ():
        totals = node_bytes[variant]["totals"]
        for run_ in results["runs"]:
            mb = run_["mb_per_s"] * 1e6
            image, setup = totals["image"]["compressed"] / mb, totals["setup"]["compressed"] / mb
            lines.append(f"| {variant} (byte table), download alone at {run_['mb_per_s']:g} MB/s | ~{image:.0f} s | "
                         f"~{setup:.0f} s | ~{image / setup:.2f} | |")
    last = results["runs"][-1]
    lines += ["", f"Measured by `invoke bench --part coldstart` ({results['image']} against `{results['base_image']}` "
                  f"installing the same lock; the fastest of {REPEATS} runs of each, alternated). Last line: `cold start at {last['mb_per_s']:g} MB/s: image "
                  f"{last['image']['total_s']:.1f} s, setup {last['setup']['total_s']:.1f} s, ratio {last['ratio']:.2f}`."]
    return "\n".join(lines) + "\n"


def main() -> int:
    print(json.dumps(run(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
