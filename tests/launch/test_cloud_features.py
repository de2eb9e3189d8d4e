"""Render asks SkyPilot's own per-cloud feature check (offline) about what the YAML requests.

Nothing is faked: the verdicts come from SkyPilot 0.14.1's
`Cloud.check_features_are_supported` (sky/clouds/cloud.py) and each cloud's
`_unsupported_features_for_resources` (sky/clouds/nebius.py, oci.py, runpod.py, ...).
Build records are fakes with a made-up digest (no GPU image is built here).
"""
from __future__ import annotations

import pytest
import yaml

from skyrl_stack.errors import StackError
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.render import render
from tests.launch.test_render import no_skypilot_api_server, records, skypilot_task  # noqa: F401


def skypilot_verdict(text: str) -> None:
    """SkyPilot's check on the rendered file, called here directly (independent of render's own check).

    The feature set is the one SkyPilot's optimizer asks of a cloud: the
    resources' features (sky/resources.py Resources.get_required_cloud_features)
    and the task's (sky/task.py Task.get_required_cloud_features: multi-node,
    storage mounting), as sky/execution.py _execute and
    sky/clouds/cloud.py Cloud.get_feasible_launchable_resources combine them.
    """
    task = skypilot_task(text)
    (resources,) = task.resources
    features = resources.get_required_cloud_features() | task.get_required_cloud_features()
    resources.cloud.check_features_are_supported(resources, features)


def test_nebius_two_nodes_of_l40s_renders_what_nebius_accepts(records, tmp_path):
    """Issue 8's done-when: `invoke render --cloud nebius --nodes 2` with L40S:4.

    Nebius takes `network_tier: best` only for H100:8/H200:8/B200:8/B300:8
    (sky/clouds/nebius.py Nebius._unsupported_features_for_resources); the
    old fixed table rendered it here and SkyPilot refused the file.
    """
    _, text = render(build_spec("vllm", cloud="nebius", gpus="L40S:4", nodes=2), out=tmp_path / "n.yaml")
    skypilot_verdict(text)
    assert "network_tier" not in yaml.safe_load(text)["resources"]


@pytest.mark.parametrize("cloud", ["aws", "gcp", "nebius", "azure", "lambda"])
def test_multi_node_default_asks_no_fabric_the_image_cannot_use(records, tmp_path, cloud):
    """The images carry no EFA userspace, aws-ofi-nccl, verbs or TCPX plugin (README, SkyPilot section)."""
    _, text = render(build_spec("vllm", cloud=cloud, nodes=2), out=tmp_path / "t.yaml")
    skypilot_verdict(text)
    assert "network_tier" not in yaml.safe_load(text)["resources"]


def test_best_where_skypilot_accepts_it_is_rendered(records, tmp_path):
    _, text = render(build_spec("vllm", cloud="nebius", gpus="H100:8", nodes=2, network_tier="best"),
                     out=tmp_path / "ib.yaml")
    skypilot_verdict(text)
    assert yaml.safe_load(text)["resources"]["network_tier"] == "best"


@pytest.mark.parametrize("kwargs, refusal", [
    ({"cloud": "nebius", "gpus": "L40S:4", "nodes": 2, "network_tier": "best"},
     r"^SkyPilot's Nebius feature check refuses the task: custom_network_tier: Custom network tier is currently "
     r"only supported for H100:8, H200:8, B200:8 and B300:8 on Nebius\.$"),
    ({"cloud": "oci"}, r"^SkyPilot's OCI feature check refuses the task: docker_image: Docker image is currently "
                       r"not supported on OCI\."),
    ({"cloud": "runpod", "nodes": 2}, r"RunPod feature check refuses the task: multi-node: Multi-node not supported"),
    ({"cloud": "runpod", "bucket": "s3://ckpts/run"}, r"RunPod.*storage_mounting: Mounting object stores is not"),
    ({"cloud": "azure", "nodes": 2, "network_tier": "best"}, r"Azure.*custom_network_tier"),
])
def test_what_skypilot_refuses_is_refused_at_render_with_its_reason(records, tmp_path, kwargs, refusal):
    out = tmp_path / "refused.yaml"
    with pytest.raises(StackError, match=refusal) as err:
        render(build_spec("vllm", **kwargs), out=out)
    assert "--cloud" in err.value.hint
    assert not out.exists()  # nothing half-done


def test_bad_network_tier_is_one_clear_line(records):
    with pytest.raises(StackError, match=r"^bad --network-tier 'fast'$") as err:
        build_spec("vllm", network_tier="fast")
    assert "best" in err.value.hint


def test_kubernetes_is_left_to_launch_time(records, tmp_path):
    """SkyPilot's Kubernetes check reads the live cluster's node labels
    (sky/clouds/kubernetes.py _unsupported_features_for_resources -> _detect_network_type);
    render cannot see the cluster, so it passes the request through unchecked."""
    _, text = render(build_spec("vllm", cloud="kubernetes", nodes=2, network_tier="best"), out=tmp_path / "k.yaml")
    assert yaml.safe_load(text)["resources"]["network_tier"] == "best"
