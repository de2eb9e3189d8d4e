"""Bounds with reasons: nodes, GPUs per node, disk, memory, accelerator names, local capacity.

Real parts: SkyPilot's accelerator catalog format and its catalog path (the
catalog rows below are transcribed from skypilot-org/skypilot-catalog
catalogs/v8/common/accelerators.csv, since this machine cannot download it),
the real Docker engine's reported memory for the local bound.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.launch import local_cluster, local_runs
from skyrl_stack.launch.accelerators import catalog_path, check_accelerator
from skyrl_stack.launch.options import build_spec
from tests.conftest import REPO_ROOT
from tests.launch.test_render import fake_record

# Rows of SkyPilot's accelerator catalog (skypilot-org/skypilot-catalog@001ca549, catalogs/v8/common/accelerators.csv).
CATALOG_ROWS = '''AcceleratorName,Clouds
A100-80GB,"['AWS', 'Azure', 'GCP', 'Lambda', 'OCI', 'Paperspace', 'PrimeIntellect', 'RunPod', 'scp']"
H100,"['AWS', 'Azure', 'DO', 'GCP', 'Hyperbolic', 'Lambda', 'OCI', 'Paperspace', 'PrimeIntellect', 'RunPod', 'Seeweb', 'Vast', 'nebius']"
L40S,"['AWS', 'Cudo', 'OCI', 'PrimeIntellect', 'RunPod', 'Seeweb', 'Vast', 'nebius']"
tpu-v4,['GCP']
'''


@pytest.fixture
def vllm_record(state_dir):
    return fake_record("vllm")


@pytest.mark.parametrize("kwargs, message", [
    ({"nodes": 65}, "bad --nodes 65: more than 64"),
    ({"nodes": 5000}, "more than 64"),
    ({"gpus": "H100:17"}, "no instance type has more than 16"),
    ({"gpus": "H100:100"}, "100 GPUs per node"),
    ({"disk_size": 100_000}, "more than 65536 GB"),
    ({"disk_size": "lots"}, "a whole number of GB"),
    ({"disk_size": 50}, "plan needs at least 182 GB per node"),
    ({"memory": "100TB"}, "more than 32768 GB"),
    ({"memory": "40000+"}, "more than 32768 GB"),
    ({"memory": "0"}, "needs some memory"),
    ({"memory": "lots"}, "bad --memory 'lots'"),
    ({"memory": "64x"}, "bad --memory '64x'"),  # 'x' is SkyPilot-internal (jobs controller), not for users
])
def test_out_of_bounds_values_are_refused_with_the_reason(vllm_record, kwargs, message):
    with pytest.raises(StackError, match=r"^bad --") as err:
        build_spec("vllm", **kwargs)
    assert message in err.value.message and "\n" not in err.value.message
    assert err.value.hint


@pytest.mark.parametrize("kwargs", [
    # 1024 GPUs: no plan is derived for that many (test_training_plan), so the batch sizes are given.
    {"nodes": 64, "gpus": "H100:16", "sets": ["trainer.train_batch_size=4096", "trainer.policy_mini_batch_size=1024",
                                              "trainer.micro_train_batch_size_per_gpu=5"]},
    {"disk_size": 65536}, {"memory": "32768"}, {"memory": "512GB+"},
    {"memory": "1TB"}, {"memory": "0.5TB+"}, {"memory": "64Gi"},
])
def test_values_at_the_bounds_are_accepted(vllm_record, kwargs):
    spec = build_spec("vllm", **kwargs)
    assert spec.nodes == kwargs.get("nodes", 1)


def _catalog(tmp_path):
    path = tmp_path / "accelerators.csv"
    path.write_text(CATALOG_ROWS)
    return str(path)


def test_accelerator_names_follow_skypilots_catalog(tmp_path):
    path = _catalog(tmp_path)
    assert check_accelerator("L40S", "aws", path) is None
    assert check_accelerator("l40s", None, path) is None  # case-insensitive, as canonicalize_accelerator_name
    assert check_accelerator("tpu-v5p", "gcp", path) is None  # TPU names are SkyPilot's own
    with pytest.raises(StackError, match=r"unknown accelerator 'H1OO'") as err:
        check_accelerator("H1OO", "aws", path)
    assert "did you mean H100" in err.value.hint
    with pytest.raises(StackError, match="accelerator L40S is not offered on gcp"):
        check_accelerator("L40S", "gcp", path)
    # On Kubernetes a name outside the catalog may be a custom GPU label: a warning, not an error.
    assert "custom Kubernetes GPU label" in check_accelerator("MyGPU", "kubernetes", path)


def test_without_the_catalog_the_name_gets_a_warning_not_silence(tmp_path):
    warning = check_accelerator("L40S", "aws", str(tmp_path / "absent.csv"))
    assert warning.startswith("warning: accelerator 'L40S' not checked") and "catalog" in warning


def test_render_checks_the_accelerator_in_skypilots_own_catalog_path(state_dir, tmp_path):
    """End to end through `invoke render`: with SkyPilot's catalog in its place (HOME/.sky/catalogs/v8), an
    unknown name is one error line; without it, the render goes on with a warning line."""
    fake_record("vllm")
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "SKYRL_STACK_WORKSPACE": str(state_dir.parent),
           "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}

    def render(*args):
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "render",
                               "--variant", "vllm", "--cloud", "aws", "--out", str(tmp_path / "t.yaml"), *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)

    result = render("--gpus", "L40S:4")
    assert result.returncode == 0, result.stderr
    assert "warning: accelerator 'L40S' not checked" in result.stderr
    (tmp_path / "t.yaml").unlink()  # written by the render above
    catalog = home / ".sky" / "catalogs" / "v8" / "common" / "accelerators.csv"
    catalog.parent.mkdir(parents=True)
    catalog.write_text(CATALOG_ROWS)
    result = render("--gpus", "H1OO:4")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: unknown accelerator 'H1OO': not in SkyPilot's accelerator catalog",
        "hint: did you mean H100? `sky show-gpus` lists the names SkyPilot knows",
    ]
    assert not (tmp_path / "t.yaml").exists()


def test_catalog_path_is_skypilots():
    assert catalog_path().endswith(os.path.join(".sky", "catalogs", "v8", "common", "accelerators.csv"))


@pytest.mark.container
def test_a_local_launch_refuses_more_nodes_than_the_engine_can_host(docker_engine):
    """The bound comes from the real engine's memory; nothing is created when it refuses."""
    from skyrl_stack.engine import client

    docker = client()
    capacity = local_cluster.max_local_nodes(docker)
    assert capacity == max(1, int(docker.info()["MemTotal"]) // local_cluster.NODE_MEMORY_BYTES)
    before = docker.containers.list(all=True, filters={"label": local_runs.LABEL})
    job = local_cluster.LocalRun(image="skyrl-stack/not-needed:none", nodes=capacity + 1, gpus_per_node=0, run="true")
    with pytest.raises(StackError, match=rf"--nodes {capacity + 1} is more than this Docker engine can host"):
        local_cluster.run(job)
    assert docker.containers.list(all=True, filters={"label": local_runs.LABEL}) == before

