"""A disk that keeps up, and the pull stated before launch (skyrl_stack/launch/cold_start.py).

The tiers, the clouds that take one and the parse of the rendered task are SkyPilot 0.14.1's own code
(sky/clouds/aws.py AWS._get_disk_specs, Cloud.check_features_are_supported, sky.Task.from_yaml_config);
build records are fakes with a made-up digest (no GPU image is built here).
"""
from __future__ import annotations

import os
import re

import pytest
import yaml

from skyrl_stack.launch import cold_start
from skyrl_stack.launch.cloud_features import CHECKED_AT_LAUNCH
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.render import render
from skyrl_stack.launch.task_spec import CLOUDS
from tests.launch.test_cloud_features import skypilot_verdict
from tests.support.paths import REPO_ROOT
from tests.launch.test_render import no_skypilot_api_server, records, skypilot_task  # noqa: F401


@pytest.mark.parametrize("tier", ["medium", "high"])
def test_aws_tiers_are_skypilots(tier):
    from sky.clouds.aws import AWS
    from sky.utils.resources_utils import DiskTier

    specs = AWS._get_disk_specs(DiskTier(tier))
    ours = cold_start.AWS_TIERS[tier]
    assert (specs["disk_tier"], specs["disk_iops"], specs["disk_throughput"]) == (ours["type"], ours["iops"], ours["mib_s"])


def test_the_clouds_given_a_tier_are_the_ones_skypilots_feature_check_accepts():
    os.environ.setdefault("SKYPILOT_DISABLE_LOCAL_API_SERVER", "1")
    import sky
    from sky import exceptions
    from sky.clouds.cloud import CloudImplementationFeatures
    from sky.utils import registry

    accepted = set()
    for name in sorted(set(CLOUDS) - CHECKED_AT_LAUNCH):
        cloud = registry.CLOUD_REGISTRY.from_str(name)
        try:
            cloud.check_features_are_supported(sky.Resources(infra=name), {CloudImplementationFeatures.CUSTOM_DISK_TIER})
        except exceptions.NotSupportedError:
            continue
        accepted.add(name)
    assert accepted == set(cold_start.HIGH_TIER)


def test_the_aws_task_chooses_the_high_tier_and_states_the_pull(records, tmp_path):
    _, text = render(build_spec("vllm", cloud="aws", nodes=2), out=tmp_path / "aws.yaml")
    skypilot_verdict(text)
    (resources,) = skypilot_task(text).resources
    assert str(resources.disk_tier) == "high" or resources.disk_tier.value == "high"
    figures = cold_start.image_bytes()["vllm"]
    pull = next(line for line in text.splitlines() if line.startswith("# Pull:"))
    assert f"{figures['compressed'] / 1e9:.2f} GB compressed" in pull
    assert f"the download takes {figures['compressed'] / 1e6 / cold_start.PULL_MB_S:.0f} s per node" in pull
    assert "+$0.036/h per node over medium" in text


def test_a_cloud_without_tiers_gets_none_which_skypilot_would_refuse(records, tmp_path):
    """RunPod takes no custom disk tier: the task carries none, and SkyPilot refuses the same task with one."""
    from sky import exceptions

    _, text = render(build_spec("vllm", cloud="runpod"), out=tmp_path / "runpod.yaml")
    skypilot_verdict(text)
    config = yaml.safe_load(text)
    assert "disk_tier" not in config["resources"]
    assert "# Unpack:  runpod takes no disk_tier (SkyPilot)" in text
    config["resources"]["disk_tier"] = "high"
    with pytest.raises(exceptions.NotSupportedError, match=r"(?s)custom_disk_tier"):
        skypilot_verdict(yaml.safe_dump(config))


def test_no_cloud_named_asks_no_tier(records, tmp_path):
    spec = build_spec("vllm", cloud="aws")
    import dataclasses

    _, text = render(dataclasses.replace(spec, cloud=None), out=tmp_path / "any.yaml")
    assert "disk_tier" not in yaml.safe_load(text)["resources"]


@pytest.mark.parametrize("compressed, unpacked, tier", [
    (8_834_342_198, 18_347_787_556, "high"),  # the vllm image: 80 s of writes at medium against a 71 s download
    (377_301_851, 1_004_608_755, "medium"),  # the rehearsal: 4 s of writes, not worth a faster disk
    (10_000_000_000, 15_000_000_000, "medium"),  # 66 s of writes at medium, within an 80 s download
])
def test_the_tier_is_high_only_where_medium_would_lag_the_download(compressed, unpacked, tier):
    assert cold_start.choose_tier(compressed, unpacked) == tier


def test_the_high_tiers_price_is_gp3s_extra_iops_and_throughput():
    # (7000 - 3500) IOPS x $0.005 + (437 - 218) MiB/s x $0.04 per month, over 730 hours.
    assert cold_start.high_tier_extra_usd_per_hour() == pytest.approx((3500 * 0.005 + 219 * 0.04) / 730)


SKYRL_PHASE = REPO_ROOT / "docker" / "scripts" / "bin" / "skyrl-phase"


def phase(*args, log):
    import subprocess

    return subprocess.run(["bash", str(SKYRL_PHASE), *args], capture_output=True, text=True,
                          env={**os.environ, "SKYRL_PHASE_LOG": str(log), "SKYPILOT_NODE_RANK": "3"})


def test_skyrl_phase_says_when_a_phase_ended_and_how_long_after_the_one_before(tmp_path):
    """The in-image script itself, on this machine (its clocks are the kernel's: /proc/uptime, /proc/1/stat)."""
    log = tmp_path / "phases"
    first, second = phase("--new", "image-started", log=log), phase("ray-joined", log=log)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    stamp = r"at \d\d:\d\d:\d\dZ, "
    clocks = r"(\d+\.\d) s since the container started, (\d+\.\d+) s since the machine booted\n$"
    assert re.fullmatch(r"skyrl-phase: node 3: image-started " + stamp + clocks, first.stdout), first.stdout
    match = re.fullmatch(r"skyrl-phase: node 3: ray-joined " + stamp + r"(\d+\.\d) s after image-started; " + clocks,
                         second.stdout)
    assert match, second.stdout
    after, container, booted = (float(g) for g in match.groups())
    assert 0 <= after and container <= booted  # the container started after the machine booted
    again = phase("--new", "image-started", log=log)  # a rerun of run: starts afresh
    assert "after" not in again.stdout and len(log.read_text().splitlines()) == 1


def test_skyrl_phase_without_a_name_is_a_usage_error(tmp_path):
    result = phase(log=tmp_path / "phases")
    assert result.returncode != 0 and "usage: skyrl-phase [--new] NAME" in result.stderr


def test_skyrl_phase_on_a_line_reports_once_and_passes_everything_through(tmp_path):
    import subprocess

    from skyrl_stack.launch.run_script import RAY_JOINED

    out = subprocess.run(["bash", str(SKYRL_PHASE), "--on", RAY_JOINED, "ray-joined"], capture_output=True, text=True,
                         input="skyrl-ray-up: rank 1: joining 10.0.0.1:6479\nskyrl-ray-up: rank 1: joined 10.0.0.1:6479 (4 GPUs)\n"
                               "skyrl-ray-up: rank 1: already in the Ray cluster at x\nlast line, no newline",
                         env={**os.environ, "SKYRL_PHASE_LOG": str(tmp_path / "p"), "SKYPILOT_NODE_RANK": "1"})
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 5, out.stdout + out.stderr
    assert lines[0].endswith("joining 10.0.0.1:6479") and lines[1].endswith("(4 GPUs)")
    assert lines[2].startswith("skyrl-phase: node 1: ray-joined at ")  # right after the join, once
    assert lines[3:] == ["skyrl-ray-up: rank 1: already in the Ray cluster at x", "last line, no newline"]


@pytest.mark.parametrize("variant, phases", [("vllm", ["image-started", "data-ready", "ray-joined", "training-started"]),
                                             ("rehearsal", ["image-started", "ray-joined", "training-started"])])
def test_run_reports_the_phases_in_order(records, variant, phases):
    from skyrl_stack.launch.run_script import run_script

    spec = build_spec("vllm", cloud="aws")
    if variant == "rehearsal":
        import dataclasses

        spec = dataclasses.replace(spec, variant="rehearsal", backend=None)
    script = run_script(spec, 6479).splitlines()
    called = [line.split()[-1] for line in script if "skyrl-phase" in line and not line.startswith("#")]
    assert called == phases
    # each after the step whose end it reports; ray-joined from skyrl-ray-up's own line (a worker's goes on running)
    assert next(l for l in script if l.startswith("skyrl-ray-up --port 6479")).endswith(
        "| skyrl-phase --on '^skyrl-ray-up: (all [0-9]+ nodes joined|rank [0-9]+: (joined|already in the Ray cluster))' "
        "ray-joined")
    assert script.index("  skyrl-phase training-started") < next(i for i, l in enumerate(script)
                                                                 if l.startswith(("  skyrl-train", "  skyrl-rehearsal-job")))
