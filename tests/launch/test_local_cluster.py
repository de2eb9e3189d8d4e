"""The local multi-node rehearsal: the rendered `run:` forms one Ray cluster across containers.

Real engine, real rehearsal image (built by the `rehearsal_image` fixture),
real Ray. The compose file (tests/compose/local-cluster.yml, run through
pytest-docker) starts nodes the way SkyPilot starts its container; the
`invoke launch --cloud local` test runs the product's own docker SDK path.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pytest_docker.plugin import get_docker_services

from skyrl_stack.image.pins import load_pins
from skyrl_stack.launch import local_cluster, local_runs, skypilot_container
from skyrl_stack.launch.launcher import for_local
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.task_yaml import task_config

from tests.support.paths import REPO_ROOT, TESTS
COMPOSE_FILE = TESTS / "compose" / "local-cluster.yml"


def test_node_env_is_skypilots():
    job = local_cluster.LocalRun(image="x", nodes=2, gpus_per_node=4, run="true", envs={"LOGGER": "console"})
    env = local_cluster.node_env(job, 1, ["10.0.0.2", "10.0.0.3"], "sky-t_c_1")
    assert env["SKYPILOT_NODE_IPS"] == "10.0.0.2\n10.0.0.3" and env["SKYPILOT_NODE_RANK"] == "1"
    assert env["SKYPILOT_NUM_NODES"] == "2" and env["SKYPILOT_NUM_GPUS_PER_NODE"] == "4" and env["LOGGER"] == "console"


@pytest.fixture(scope="module")
def rehearsal_task(rehearsal_image):
    """The rehearsal task as rendered for 2 local nodes with 2 (logical) GPUs each."""
    old = os.environ.get("SKYRL_STACK_WORKSPACE")
    os.environ["SKYRL_STACK_WORKSPACE"] = str(rehearsal_image.state_dir.parent)
    try:
        spec = for_local(build_spec("rehearsal", cloud="local", nodes=2, gpus="L40S:2"))
    finally:
        os.environ.pop("SKYRL_STACK_WORKSPACE") if old is None else os.environ.__setitem__("SKYRL_STACK_WORKSPACE", old)
    return spec, task_config(spec)


# The TCP ports a container's processes listen on (its own network namespace) and who listens, from /proc.
LISTENING = """
import json, os
ports = {}
for path in ("/proc/net/tcp", "/proc/net/tcp6"):
    for f in (line.split() for line in open(path).read().splitlines()[1:]):
        # LISTEN, except Docker's embedded DNS on 127.0.0.11 (dockerd's, on user-defined networks)
        if f[3] == "0A" and not f[1].startswith("0B00007F:"):
            ports[f"socket:[{f[9]}]"] = int(f[1].rsplit(":", 1)[1], 16)
owners = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link in ports:
                owners[ports[link]] = open(f"/proc/{pid}/cmdline").read().replace("\\0", " ")[:200]
    except OSError:
        pass
print(json.dumps({port: owners.get(port, "?") for port in ports.values()}))
"""


def spec_flags() -> dict:
    """SkyPilot's run line for the rendered task (its --ipc=host), from the one contract."""
    return skypilot_container.run_kwargs(run_options=["--ipc=host"], network="cluster")


def compose_flags(kwargs: dict) -> dict:
    """docker SDK arguments as a compose service; an argument it cannot say fails the test."""
    names = {"entrypoint": "entrypoint", "tty": "tty", "stdin_open": "stdin_open", "environment": "environment",
             "cap_add": "cap_add", "security_opt": "security_opt", "ipc_mode": "ipc", "shm_size": "shm_size"}
    service = {names[key]: value for key, value in kwargs.items() if key in names}
    service["devices"] = [device.rsplit(":", 1)[0] for device in kwargs.get("devices", [])]
    assert set(kwargs) - set(names) <= {"devices", "network_mode"}, kwargs
    return service


@pytest.fixture(scope="module")
def compose(rehearsal_image, tmp_path_factory):
    """pytest-docker services from tests/compose, with a unique project name and a free subnet."""
    net = _free_subnet()
    os.environ["SKYRL_TEST_IMAGE"] = rehearsal_image.ref
    os.environ["SKYRL_TEST_NET"] = net
    project = f"skyrl-local-test-{os.getpid()}-{secrets.token_hex(3)}"
    flags = tmp_path_factory.mktemp("compose") / "skypilot-flags.yml"
    flags.write_text(yaml.safe_dump({"services": {name: compose_flags(spec_flags()) for name in ("a0", "a1", "b0", "b1", "c0", "c1")}}))
    try:
        with get_docker_services("docker compose", [str(COMPOSE_FILE), str(flags)], project, ["up --wait"],
                                 ["down -v -t 1"]) as services:
            yield SimpleNamespace(services=services, net=net, project=project)
    finally:
        os.environ.pop("SKYRL_TEST_IMAGE", None)
        os.environ.pop("SKYRL_TEST_NET", None)


def _free_subnet() -> str:
    """The first 10.2xx.y.0/24 that no network on the engine uses (a random pick could collide
    with another run's network and fail `compose up` with "Pool overlaps")."""
    import ipaddress

    from skyrl_stack.engine import client

    taken = [ipaddress.ip_network(config["Subnet"], strict=False)
             for network in client().networks.list(greedy=True)
             for config in ((network.attrs.get("IPAM") or {}).get("Config") or []) if "Subnet" in config]
    for second in range(200, 251):
        for third in range(256):
            candidate = ipaddress.ip_network(f"10.{second}.{third}.0/24")
            if not any(candidate.overlaps(net) for net in taken if net.version == 4):
                return f"10.{second}.{third}"
    raise RuntimeError("no free 10.200-250.x.0/24 subnet on the engine")


def _container(project, service):
    from skyrl_stack.engine import client

    (container,) = client().containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]})
    return container


def _run(project, service, script, env, results):
    code, output = _container(project, service).exec_run(["/bin/bash", "-c", script], environment=env)
    results[service] = (code, output.decode(errors="replace"))


@pytest.mark.container
def test_two_nodes_form_one_ray_cluster_and_run_the_job(compose, rehearsal_task):
    spec, config = rehearsal_task
    results = {}
    threads = [threading.Thread(target=_run, args=(compose.project, s, config["run"], config["envs"], results))
               for s in ("a0", "a1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    head_code, head_out = results["a0"]
    worker_code, worker_out = results["a1"]
    assert head_code == 0, head_out
    assert "all 2 nodes joined" in head_out and "rehearsal job: OK on 2 nodes" in head_out
    assert worker_code == 0, worker_out  # rank 1 joins and exits cleanly
    assert f"joined {compose.net}.10:{load_pins().ray_port}" in worker_out

    # Every TCP port our Ray listens on, on either node, is one pinned in pins.toml [ray] and [ray.ports]:
    # skyrl-ray-up left nothing to Ray's defaults (which SkyPilot's own Ray holds).
    pins = load_pins()
    pinned = {pins.ray_port, *pins.ray_ports.values(), *range(pins.ray_ports["min_worker"], pins.ray_ports["max_worker"] + 1)}
    for service in ("a0", "a1"):
        code, out = _container(compose.project, service).exec_run(["/opt/skyrl/venv/bin/python", "-c", LISTENING])
        listening = {int(port): owner for port, owner in json.loads(out.decode()).items()}
        assert listening and set(listening) <= pinned, (service, {p: o for p, o in listening.items() if p not in pinned})

    probe = ("import json, ray; ray.init(address='127.0.0.1:%d', logging_level='ERROR');"
             "print(json.dumps([[n['NodeManagerAddress'], n['Resources']] for n in ray.nodes() if n['Alive']]))"
             % load_pins().ray_port)
    code, out = _container(compose.project, "a0").exec_run(["/opt/skyrl/venv/bin/python", "-c", probe])
    assert code == 0, out
    nodes = dict(json.loads(out.decode().strip().splitlines()[-1]))
    assert sorted(nodes) == [f"{compose.net}.10", f"{compose.net}.11"]
    for resources in nodes.values():
        assert resources["GPU"] == spec.gpus_per_node == 2  # what SKYPILOT_NUM_GPUS_PER_NODE promised
        assert resources["CPU"] >= 1


    # `sky exec` / a second `sky launch` runs `run:` again on the formed cluster:
    # the worker finds itself in place instead of starting a second raylet.
    _run(compose.project, "a1", config["run"], config["envs"], results)
    code, out_again = results["a1"]
    assert code == 0, out_again
    assert f"rank 1: already in the Ray cluster at {compose.net}.10:{load_pins().ray_port}" in out_again
    assert "joining" not in out_again  # no second join (which would wait for the join timeout)
    code, out = _container(compose.project, "a0").exec_run(["/opt/skyrl/venv/bin/python", "-c", probe])
    assert code == 0, out
    # a list, not a dict: a second raylet would show as a second entry for the same IP
    addresses = sorted(address for address, _ in json.loads(out.decode().strip().splitlines()[-1]))
    assert addresses == [f"{compose.net}.10", f"{compose.net}.11"]


# On the head, after skyrl-ray-up: the SKYRL_PROBE each node's Ray workers see, by node IP.
PER_NODE_ENV = """
import json, os, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address="127.0.0.1:%d", logging_level="ERROR", log_to_driver=False)
probe = ray.remote(num_cpus=0)(lambda: os.environ.get("SKYRL_PROBE"))
nodes = [n for n in ray.nodes() if n["Alive"]]
print("probe:", json.dumps({n["NodeManagerAddress"]: ray.get(probe.options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()) for n in nodes}))
"""


def _job(project, port, task_id, value):
    """One SkyPilot job on cluster c: `run:` on both nodes at once, the head probing its Ray's workers."""
    script = (f"set -e\nskyrl-ray-up --port {port}\n"
              f'if [ "$SKYPILOT_NODE_RANK" = "0" ]; then\n  /opt/skyrl/venv/bin/python -c \'{PER_NODE_ENV % port}\'\n'
              f"  skyrl-ray-up --port {port} --release\nfi\n")
    results = {}
    env = {"SKYPILOT_TASK_ID": task_id, "SKYRL_PROBE": value, "SKYRL_RAY_JOIN_TIMEOUT": "90"}
    # daemon: a worker whose head failed holds until the compose project is taken down (as SkyPilot's job
    # would cancel it); the test reports the head's output instead of waiting.
    threads = [threading.Thread(target=_run, args=(project, s, script, env, results), daemon=True)
               for s in ("c0", "c1")]
    for thread in threads:
        thread.start()
    threads[0].join(240)
    assert results.get("c0", (None, "no answer"))[0] == 0, results.get("c0")
    threads[1].join(60)
    (head_code, head_out), (worker_code, worker_out) = results["c0"], results["c1"]
    assert head_code == 0 and worker_code == 0, head_out + worker_out
    probe = next(line for line in head_out.splitlines() if line.startswith("probe: "))
    return json.loads(probe.removeprefix("probe: ")), head_out, worker_out


@pytest.mark.reliability("fault", "a second job on the cluster (`sky exec`) with a new env value",
                         "our Ray is restarted for it: every node's Ray workers see the new value; SkyPilot's Ray untouched")
@pytest.mark.container
def test_a_second_job_on_the_cluster_gets_its_own_ray_environment(compose):
    """`sky exec` after `sky launch`: the second job's env (a new HF_TOKEN, an --env) reaches the Ray workers
    on every node, not the first job's; the same job's `run:` again keeps its Ray."""
    port = load_pins().ray_port
    nodes = [f"{compose.net}.30", f"{compose.net}.31"]
    # A stand-in for SkyPilot's own Ray on the head node (its port and temp dir, sky/skylet/constants.py):
    # restarting ours must leave it running.
    skypilot_ray = ["/opt/skyrl/venv/bin/ray", "start", "--head", "--port=6380", "--temp-dir=/tmp/ray_skypilot",
                    "--include-dashboard=false", "--disable-usage-stats", "--num-cpus=0"]
    code, out = _container(compose.project, "c0").exec_run(skypilot_ray)
    assert code == 0, out.decode()
    first, _, _ = _job(compose.project, port, "sky-test_cluster-c_1", "first")
    assert first == dict.fromkeys(nodes, "first")
    second, head_out, worker_out = _job(compose.project, port, "sky-test_cluster-c_2", "second")
    assert second == dict.fromkeys(nodes, "second")
    assert "was started by job sky-test_cluster-c_1: restarting it" in head_out
    assert "rank 1: this node's raylet" in worker_out and f"joined {nodes[0]}:{port}" in worker_out
    code, out = _container(compose.project, "c0").exec_run(["/opt/skyrl/venv/bin/ray", "status",
                                                            "--address=127.0.0.1:6380"])
    assert code == 0, out.decode()  # SkyPilot's Ray was not touched
    again, head_out, worker_out = _job(compose.project, port, "sky-test_cluster-c_2", "second")
    assert again == dict.fromkeys(nodes, "second")
    assert "already running on port" in head_out and "rank 1: already in the Ray cluster" in worker_out


@pytest.mark.container
def test_head_times_out_clearly_when_the_worker_is_gone(compose, rehearsal_task):
    _, config = rehearsal_task
    subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "-p", compose.project, "kill", "b1"],
                   check=True, capture_output=True)
    results = {}
    _run(compose.project, "b0", config["run"], {**config["envs"], "SKYRL_RAY_JOIN_TIMEOUT": "8"}, results)
    code, out = results["b0"]
    assert code != 0
    assert (f"timed out after 8s waiting for Ray nodes: 1 of 2 joined (missing: {compose.net}.21)") in out
    assert "rehearsal job" not in out


@pytest.mark.container
def test_workers_stay_in_the_ray_cluster_when_skypilot_kills_their_job_tree(rehearsal_task):
    """Under SkyPilot's skylet rule (the local cluster runs every node's job under it), a worker whose
    `run:` ended right after `ray start` lost its raylet with the job, and so left the cluster. The
    rendered task keeps every node in it: through the job, and after (for the next `sky exec`)."""
    spec, config = rehearsal_task
    port = load_pins().ray_port
    after = ("sleep 3; /opt/skyrl/venv/bin/python -c 'import ray; ray.init(address=\"127.0.0.1:%d\", "
             "logging_level=\"ERROR\"); print(\"alive after the job:\", sum(n[\"Alive\"] for n in ray.nodes()))'" % port)
    run = config["run"] + f'if [ "$SKYPILOT_NODE_RANK" = "0" ]; then\n  {after}\nfi\n'
    job = local_cluster.LocalRun(image=spec.image, nodes=2, gpus_per_node=spec.gpus_per_node,
                                 run=run, envs={k: str(v) for k, v in config["envs"].items()},
                                 run_options=config["config"]["docker"]["run_options"], name="skyrl-skylet-test")
    out = io.StringIO()
    code = local_cluster.run(job, stream=out)
    lines = out.getvalue().splitlines()
    assert code == 0, out.getvalue()
    assert "(node0) rehearsal job: OK on 2 nodes" in lines, out.getvalue()
    assert "(node0) alive after the job: 2" in lines, out.getvalue()
    assert "(node1) skyrl-ray-up: rank 1: the head's job is done; leaving Ray running on this node" in lines


@pytest.mark.container
def test_a_failing_node_cancels_the_others(rehearsal_image):
    """SkyPilot's job (get_or_fail): the first failure cancels the nodes still running (137)."""
    run = 'if [ "$SKYPILOT_NODE_RANK" = "1" ]; then exit 3; fi\nsleep 600\n'
    job = local_cluster.LocalRun(image=rehearsal_image.ref, nodes=3, gpus_per_node=0, run=run, name="skyrl-cancel-test")
    out = io.StringIO()
    assert local_cluster.run(job, stream=out) == 3
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "exited with code" in line] == [
        "(node0) [local cluster] exited with code 137", "(node1) [local cluster] exited with code 3",
        "(node2) [local cluster] exited with code 137"]


@pytest.mark.container
@pytest.mark.parametrize("nodes", [2, 3])
def test_invoke_launch_local_end_to_end(rehearsal_image, tmp_path, nodes):
    name = f"skyrl-e2e-{secrets.token_hex(2)}"
    env = {**os.environ, "SKYRL_STACK_WORKSPACE": str(rehearsal_image.state_dir.parent),
           "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "launch", "--cloud", "local",
         "--variant", "rehearsal", "--nodes", str(nodes), "--cluster", name],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # The happy path reads as one: no Ray thread's traceback after the job (issue 10: the rehearsal
    # job's driver exited while its print_logs thread ran: "can't register atexit after shutdown").
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"(node0) skyrl-ray-up: all {nodes} nodes joined the Ray cluster at" in "\n".join(lines)
    assert f"(node0) rehearsal job: OK on {nodes} nodes" in lines
    assert [f"(node{rank}) [local cluster] exited with code 0" in lines for rank in range(nodes)] == [True] * nodes
    # Rendered under the workspace (skyrl_stack/project.py), not the directory invoke ran in.
    workspace = rehearsal_image.state_dir.parent
    assert not (tmp_path / "skypilot").exists()
    rendered = yaml.safe_load((workspace / "skypilot" / f"rehearsal-local-{nodes}n.yaml").read_text())
    assert rendered["resources"]["image_id"] == f"docker:{rehearsal_image.ref}"
    # its containers and network are gone (other runs on the engine are not this test's business)
    from skyrl_stack.engine import client

    assert not [run.name for run in local_runs.local_clusters(client()) if run.name.startswith(f"{name}-")]


@pytest.mark.container
def test_image_scripts_refuse_clearly_without_skyrl(rehearsal_image):
    """skyrl-gsm8k-data skips present data; it and skyrl-train refuse an image without SkyRL."""
    from skyrl_stack.engine import client

    # 2>&1 inside the shell: one stream keeps the order (Docker's separate stdout/stderr do not).
    script = (
        "exec 2>&1; "
        "skyrl-train trainer.epochs=1; echo rc=$?; "
        "skyrl-gsm8k-data /tmp/d; echo rc=$?; "
        "mkdir -p /tmp/d && echo x >/tmp/d/train.parquet && echo x >/tmp/d/validation.parquet; "
        "skyrl-gsm8k-data /tmp/d; echo rc=$?"
    )
    out = client().containers.run(rehearsal_image.ref, ["-c", script], entrypoint="/bin/bash", remove=True,
                                  stderr=True).decode()
    assert "skyrl-train: error: this image has no SkyRL" in out
    assert "skyrl-gsm8k-data: error: /opt/skyrl/src/skyrl-train/examples/gsm8k/gsm8k_dataset.py not found" in out
    assert "GSM8K already in /tmp/d; skipping" in out
    assert out.count("rc=1") == 2 and out.strip().endswith("rc=0")


# A local run in its own process, as `invoke launch --cloud local` would be: each node waits for /tmp/go.
LAUNCHER = """
import sys
from skyrl_stack.launch import local_cluster
run = 'echo waiting; while [ ! -e /tmp/go ]; do sleep 0.2; done; echo released'
sys.exit(local_cluster.run(local_cluster.LocalRun(image=sys.argv[1], nodes=int(sys.argv[2]), gpus_per_node=0,
                                                  run=run, name=sys.argv[3])))
"""


def _start_launcher(image: str, nodes: int, name: str) -> tuple[subprocess.Popen, str]:
    """Start a local run in the background; returns the process and the run's name once every node waits."""
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, image, str(nodes), name], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    cluster, waiting = None, 0
    for line in proc.stdout:
        if line.startswith(f"==> local cluster {name}-"):
            cluster = line.split()[3].rstrip(":")
        waiting += line.rstrip() == "waiting" or line.rstrip().endswith(") waiting")
        if waiting == nodes:
            return proc, cluster
    raise AssertionError(f"launcher {name} ended before its nodes waited (exit {proc.wait()})")


def _invoke_down(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "down", *args],
                          env={**os.environ, "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"},
                          capture_output=True, text=True, timeout=120)


def _objects(name: str) -> tuple[list, list]:
    from skyrl_stack.engine import client

    docker = client()
    return (docker.containers.list(all=True, filters={"label": f"{local_runs.LABEL}={name}"}),
            docker.networks.list(filters={"label": f"{local_runs.LABEL}={name}"}))


@pytest.mark.reliability("fault", "local run whose launcher was SIGKILLed, beside a live local run",
                         "next launch names it; `invoke down --cluster local --stale` removes it only; the live run exits 0")
@pytest.mark.container
def test_down_leaves_a_live_run_alone_and_removes_a_stale_one_only_when_asked(rehearsal_image, capsys):
    """Issue 10: `invoke down --cluster local` beside a live local run leaves it running to a clean exit;
    a run whose launcher was SIGKILLed is reported by the next launch and removed only by --stale."""
    tag = secrets.token_hex(2)
    live, live_name = _start_launcher(rehearsal_image.ref, 2, f"skyrl-live-{tag}")
    killed, stale_name = _start_launcher(rehearsal_image.ref, 1, f"skyrl-killed-{tag}")
    try:
        killed.kill()  # SIGKILL: its cleanup never runs, its containers stay
        killed.wait()
        assert _objects(stale_name)[0], "the killed run's containers should still be there"

        listed = _invoke_down("--cluster", "local")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines() if line.strip()}
        assert rows[live_name] == local_runs.RUNNING and rows[stale_name] == local_runs.STALE
        assert "nothing removed" in listed.stderr
        assert _objects(stale_name)[0] and len(_objects(live_name)[0]) == 2

        # The next launch names the leftover and how to remove it, and removes nothing itself.
        capsys.readouterr()
        job = local_cluster.LocalRun(image=rehearsal_image.ref, nodes=1, gpus_per_node=0, run="true",
                                     name=f"skyrl-next-{tag}")
        assert local_cluster.run(job, stream=io.StringIO()) == 0
        report = capsys.readouterr().err
        assert "leftover local cluster(s) whose launcher is gone" in report and stale_name in report
        assert "invoke down --cluster local --stale" in report and live_name not in report
        assert _objects(stale_name)[0]

        removed = _invoke_down("--cluster", "local", "--stale")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert stale_name in removed.stderr and live_name not in removed.stderr
        assert _objects(stale_name) == ([], [])

        # The live run was never touched: released now, it finishes cleanly.
        for container in _objects(live_name)[0]:
            assert container.exec_run(["touch", "/tmp/go"]).exit_code == 0
        out, _ = live.communicate(timeout=120)
        assert live.returncode == 0, out
        assert "(node0) released" in out and "(node1) released" in out and "node lost" not in out
        assert _objects(live_name) == ([], [])
    finally:
        for proc in (live, killed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for name in (live_name, stale_name):
            local_runs.down(name=name)


@pytest.mark.container
def test_down_by_name_removes_that_local_run(rehearsal_image):
    """`invoke down --cluster NAME` removes the named local run (its launcher then sees its nodes lost)."""
    proc, name = _start_launcher(rehearsal_image.ref, 1, f"skyrl-named-{secrets.token_hex(2)}")
    try:
        result = _invoke_down("--cluster", name)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"local cluster {name} removed" in result.stderr
        assert _objects(name) == ([], [])
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 137, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        local_runs.down(name=name)


def test_stale_applies_to_local_only():
    from skyrl_stack.errors import StackError
    from skyrl_stack.launch.clusters import down

    with pytest.raises(StackError, match="--stale applies to --cluster local, not skyrl-x"):
        down("skyrl-x", stale=True)


def test_launcher_state_from_labels():
    """Alive launcher: running; a dead pid or a reused pid (other start time): stale; another host: unknown."""
    alive = local_runs.owner_labels("c")
    assert local_runs.launcher_state(alive) == local_runs.RUNNING
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert local_runs.launcher_state({**alive, local_runs.LAUNCHER_PID_LABEL: str(dead.pid)}) == local_runs.STALE
    assert local_runs.launcher_state({**alive, local_runs.LAUNCHER_START_LABEL: "1"}) == local_runs.STALE
    assert local_runs.launcher_state({**alive, local_runs.LAUNCHER_HOST_LABEL: "elsewhere"}) == local_runs.UNKNOWN
    assert local_runs.launcher_state({local_runs.LABEL: "c"}) == local_runs.UNKNOWN


def test_remove_tolerates_a_removal_in_progress_and_names_other_engine_errors():
    """The engine answers 409 when the run's own launcher is removing the same container at that moment:
    that is done, not an error. Any other engine error is one line naming the run, not a traceback.
    (Stand-in containers: the race cannot be produced on demand with the real engine.)"""
    from docker.errors import APIError

    from skyrl_stack.errors import StackError
    from skyrl_stack.launch.local_runs import LocalCluster, remove

    class Answer:
        def __init__(self, status):
            self.status_code, self.reason, self.url = status, "", ""

    class Container:
        def __init__(self, status):
            self.status = status

        def remove(self, force):
            raise APIError("engine says no", response=Answer(self.status), explanation="engine says no")

    remove(LocalCluster("skyrl-local-x-abc123", {}, containers=[Container(409)], networks=[]))
    with pytest.raises(StackError, match=r"^cannot remove local cluster skyrl-local-x-abc123: .*engine says no"):
        remove(LocalCluster("skyrl-local-x-abc123", {}, containers=[Container(500)], networks=[]))
