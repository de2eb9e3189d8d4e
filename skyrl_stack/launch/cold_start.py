"""A node's cold start, before launch: the bytes it pulls, how long that takes, and a disk that keeps up.

A fresh node (every node of every recovery of a managed job) pulls the whole image, then unpacks it
onto its boot disk. The bytes come from `invoke bench --part bytes` (skyrl_stack/dev/node_bytes.py),
kept in image_bytes.json beside this file so render stays instant and offline; tests/test_node_bytes.py
holds the file to what that accounting computes.

The disk tier (SkyPilot's `resources.disk_tier`): a layer arrives compressed and is written unpacked,
so while pulling at B MB/s the disk must take B x (unpacked / compressed). SkyPilot's default tier on
AWS, `medium`, is gp3 at 3500 IOPS and 3500 // 16 = 218 MiB/s; `high` is 7000 IOPS and 437 MiB/s
(sky/clouds/aws.py AWS._get_disk_specs). Where the default tier would write the image's unpacked bytes
more slowly than the stated bandwidth brings them, and for longer than UNPACK_WORTH_S, the task asks
for `high`. Clouds whose SkyPilot implementation takes no custom disk tier
(Cloud.check_features_are_supported with CUSTOM_DISK_TIER refuses it; tests/launch/test_cold_start.py
asks SkyPilot) get none: SkyPilot would refuse the task.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The stated bandwidth of the plan's pull estimate: 1 Gbit/s per node, the figure the README's byte table
# uses. Faster links make the disk the bottleneck sooner, which is what the tier is for.
PULL_MB_S = 125.0
MIB = 1024 * 1024
# Below this many seconds of writes at the default tier a faster disk buys nothing worth a line.
UNPACK_WORTH_S = 30.0
# SkyPilot's AWS tiers (sky/clouds/aws.py AWS._get_disk_specs): gp3 IOPS and IOPS // 16 MiB/s.
AWS_TIERS = {"medium": {"type": "gp3", "iops": 3500, "mib_s": 3500 // 16},
             "high": {"type": "gp3", "iops": 7000, "mib_s": 7000 // 16}}
# gp3's price above its free baseline (3000 IOPS, 125 MB/s), us-east-1, Amazon EBS pricing page as quoted
# in saisci.com/aws/gp2-vs-gp3-cost-comparison-ebs-volumes: $0.005 per IOPS-month, $0.04 per MB/s-month.
GP3_IOPS_MONTH_USD = 0.005
GP3_MB_S_MONTH_USD = 0.04
HOURS_PER_MONTH = 730
# Clouds whose SkyPilot implementation takes `disk_tier` (CUSTOM_DISK_TIER not in their
# _CLOUD_UNSUPPORTED_FEATURES, sky/clouds/*.py; checked against SkyPilot in the tests), and what
# `high` means there (each cloud's _get_disk_type / disk specs in sky/clouds/*.py).
HIGH_TIER = {"aws": "gp3, 7000 IOPS, 437 MiB/s", "gcp": "pd-ssd (hyperdisk-balanced on a3-ultragpu/a4/g4)",
             "azure": "Premium_LRS at performance tier P50", "nebius": "Nebius' high tier", "oci": "OCI's high VPU"}
DEFAULT_TIER = "medium"


@dataclass(frozen=True)
class PullPlan:
    """What one fresh node pulls and writes, and the disk tier the task asks for (None: the cloud takes none)."""

    compressed: int
    unpacked: int
    source: str
    tier: str | None

    @property
    def download_s(self) -> float:
        return self.compressed / 1e6 / PULL_MB_S

    def write_s(self, tier: str) -> float:
        return self.unpacked / (AWS_TIERS[tier]["mib_s"] * MIB)

    def lines(self, cloud: str | None) -> list[str]:
        """The plan's lines: bytes, the pull at the stated bandwidth, the tier, what it buys and costs."""
        out = [f"Pull:    {self.compressed / 1e9:.2f} GB compressed, {self.unpacked / 1e9:.2f} GB unpacked per node "
               f"({self.source}); at {PULL_MB_S:g} MB/s the download takes {self.download_s:.0f} s per node, "
               f"again on every node of every recovery"]
        medium = f"{self.write_s(DEFAULT_TIER):.0f} s at the default medium's 218 MiB/s"
        if self.tier == "high":
            out.append(f"Unpack:  disk_tier high ({HIGH_TIER[cloud]}): writing the unpacked bytes takes "
                       f"{self.write_s('high'):.0f} s at 437 MiB/s vs {medium} (AWS gp3, sky/clouds/aws.py), so the "
                       f"disk keeps up with the download; {high_tier_cost_line(cloud)}")
        elif self.tier is None:
            where = f"{cloud} takes no disk_tier (SkyPilot)" if cloud else "no disk_tier (it would rule out the clouds that take none)"
            out.append(f"Unpack:  {where}; writing the unpacked bytes takes {medium} on AWS gp3")
        else:
            out.append(f"Unpack:  disk_tier {self.tier}: writing the unpacked bytes takes {medium}, "
                       f"no longer than the download")
        return out


def high_tier_cost_line(cloud: str | None) -> str:
    if cloud != "aws":
        return "priced by the cloud (SkyPilot's COST column counts instances, not disks)"
    return (f"+${high_tier_extra_usd_per_hour():.3f}/h per node over medium (gp3 IOPS and throughput, us-east-1; "
            f"SkyPilot's COST column counts instances, not disks)")


def high_tier_extra_usd_per_hour() -> float:
    """What AWS' high tier costs over medium per node-hour (gp3: extra IOPS and MB/s above the baseline)."""
    def monthly(tier: str) -> float:  # throughput is priced per provisioned unit (EBS provisions MiB/s)
        spec = AWS_TIERS[tier]
        return max(spec["iops"] - 3000, 0) * GP3_IOPS_MONTH_USD + max(spec["mib_s"] - 125, 0) * GP3_MB_S_MONTH_USD
    return (monthly("high") - monthly("medium")) / HOURS_PER_MONTH


@lru_cache(maxsize=1)
def image_bytes() -> dict:
    """Per variant: the node's compressed and unpacked bytes and their source (image_bytes.json)."""
    return json.loads(Path(__file__).with_name("image_bytes.json").read_text())


def choose_tier(compressed: int, unpacked: int) -> str:
    """medium, unless at medium unpacking is slower than the download at PULL_MB_S and longer than UNPACK_WORTH_S."""
    write_at_medium = unpacked / (AWS_TIERS[DEFAULT_TIER]["mib_s"] * MIB)
    download = compressed / 1e6 / PULL_MB_S
    return "high" if write_at_medium > max(download, UNPACK_WORTH_S) else DEFAULT_TIER


def pull_plan(variant: str, cloud: str | None) -> PullPlan | None:
    """The variant's pull plan on a cloud (None for a variant with no figures, or the local cluster)."""
    figures = image_bytes().get(variant)
    if figures is None or cloud == "local":
        return None
    # No cloud named: a disk_tier would silently rule out every cloud that takes none, so none is asked.
    takes_tier = cloud in HIGH_TIER
    tier = choose_tier(figures["compressed"], figures["unpacked"]) if takes_tier else None
    return PullPlan(figures["compressed"], figures["unpacked"], figures["source"], tier)
