"""SkyPilot's own per-cloud feature check, run offline on a rendered task.

SkyPilot's optimizer silently drops a cloud whose implementation lacks a
feature the task needs (sky/clouds/cloud.py
Cloud.get_feasible_launchable_resources -> check_features_are_supported), so
a task for OCI with a container image, or for RunPod with two nodes, would
only fail at launch with "no resources". Asking the same check at render turns
that into one line naming SkyPilot's reason. The check is SkyPilot's code; the
only thing decided here is which clouds it can be asked offline.
"""
from __future__ import annotations

from skyrl_stack.errors import StackError

# SkyPilot's Kubernetes check asks the live cluster (node labels for spot and
# high-performance networking: sky/clouds/kubernetes.py
# Kubernetes._unsupported_features_for_resources -> _detect_network_type), which
# render cannot see; SkyPilot checks it against the cluster at launch.
CHECKED_AT_LAUNCH = {"kubernetes"}


def required_features(task, resources) -> set:
    """The features SkyPilot's optimizer requires of a cloud for this task.

    The resources' own (sky/resources.py Resources.get_required_cloud_features:
    docker image, network tier, ports, image id, spot, disk tier ...) plus the
    task's (sky/task.py Task.get_required_cloud_features: multi-node, storage
    mounting), as sky/execution.py _execute and Cloud.get_feasible_launchable_resources
    combine them.
    """
    return resources.get_required_cloud_features() | task.get_required_cloud_features()


def check(task) -> None:
    """Raise StackError with SkyPilot's reason when the task's cloud does not support what it asks.

    A task without a cloud is left to the optimizer, which filters candidate
    clouds with this very check at launch.
    """
    from sky import exceptions

    for resources in task.resources:
        cloud = resources.cloud
        if cloud is None or str(cloud).lower() in CHECKED_AT_LAUNCH:
            continue
        wanted = required_features(task, resources)
        try:
            cloud.check_features_are_supported(resources, wanted, region=resources.region)
        except exceptions.NotSupportedError as exc:
            raise StackError(
                f"SkyPilot's {cloud} feature check refuses the task: {_reasons(str(exc), wanted)}",
                hint="choose another --cloud, or drop what it refuses (--nodes 1, --bucket, --network-tier)",
            ) from None
        except ImportError as exc:  # the cloud's SDK extra is missing: launching there would fail the same way
            raise StackError(f"cannot check the task for {cloud}: {exc}",
                             hint=f"pip install 'skypilot[{str(cloud).lower()}]' (or render with --no-validate)") from None


def _reasons(message: str, wanted: set) -> str:
    """SkyPilot's refusal is a table (feature, reason); one 'feature: reason' per refused feature."""
    found = []
    for line in message.splitlines():
        row = line.strip()
        for feature in sorted(wanted, key=lambda f: f.value):
            if row.startswith(feature.value + " "):
                found.append(f"{feature.value}: {row[len(feature.value):].strip()}")
    return "; ".join(found) or " ".join(message.split())
