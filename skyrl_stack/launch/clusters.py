"""`invoke status / logs / down`: the clusters a launch made, through SkyPilot's API (skypilot_api.py).

`down` also removes local runs (`--cloud local`, local_runs.py) by name, or
those whose launcher is gone (`--cluster local --stale`).
"""
from __future__ import annotations

from skyrl_stack.errors import StackError
from skyrl_stack.launch.options import parse_job_id
from skyrl_stack.launch.skypilot_api import api
from skyrl_stack.launch.task_spec import LOCAL
from skyrl_stack.reporter import step


def default_cluster(variant: str) -> str:
    """The cluster a cloud launch of this variant makes unless named (--cluster). A local run is named
    skyrl-local-VARIANT-xxxxxx instead (one per run, see local_runs.py): `invoke down --cluster local` lists them."""
    return f"skyrl-{variant}"


def status(cluster: str | None = None) -> list[dict]:
    """Print SkyPilot's clusters (or the one named) and their state; returns the rows printed."""
    records = api("status", cluster_names=[cluster] if cluster else None)
    rows = []
    for record in records:
        get = record.get if isinstance(record, dict) else lambda key, r=record: getattr(r, key, None)
        rows.append({"name": get("name"), "status": str(getattr(get("status"), "value", get("status"))),
                     "resources": get("resources_str") or ""})
    for row in rows:
        print(f"{row['name']:<28} {row['status']:<10} {row['resources']}")
    if not rows:
        print("no clusters" + (f" named {cluster}" if cluster else ""))
    return rows


def logs(cluster: str, job_id: int | str | None = None, follow: bool = True) -> int:
    """Stream a job's logs (the latest job unless job_id); returns the job's exit code."""
    job_id = parse_job_id(job_id)
    return int(api("tail_logs", cluster, job_id, follow) or 0)


def down(cluster: str, stale: bool = False) -> None:
    """Tear down a SkyPilot cluster or one local run (by its name); `local` lists the local runs,
    and with stale=True removes those whose launcher is gone. A live local run is removed only by name."""
    from skyrl_stack.launch import local_runs

    if stale and cluster != LOCAL:
        raise StackError(f"--stale applies to --cluster local, not {cluster}",
                         hint="invoke down --cluster local --stale removes local runs whose launcher is gone")
    if cluster == LOCAL:
        removed = local_runs.down(stale=stale)
        if stale:
            step(f"removed {len(removed)} stale local cluster(s){': ' + ', '.join(removed) if removed else ''}")
        else:
            step("nothing removed: `invoke down --cluster NAME` removes one local run, "
                 "`invoke down --cluster local --stale` those whose launcher is gone")
        return
    if local_runs.down(name=cluster):
        step(f"local cluster {cluster} removed")
        return
    api("down", cluster)
    step(f"{cluster} is down")
