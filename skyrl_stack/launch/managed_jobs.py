"""`invoke launch --managed` and `invoke jobs.status / jobs.logs / jobs.cancel`: SkyPilot managed jobs.

A managed job is submitted to SkyPilot's jobs controller with
`sky.jobs.launch(task, name=...)` (sky/jobs/client/sdk.py, SkyPilot 0.14.1),
which provisions the cluster, runs the task and, on a preemption or a failure
its job_recovery allows (managed.py), provisions a new cluster and runs `run:`
again. Listing (`sky.jobs.queue_v2`, its records carry `recovery_count`),
following (`sky.jobs.tail_logs`, which returns the job's exit code) and
cancelling (`sky.jobs.cancel`) go through skypilot_api.api like every request.
The job is named after the run (--run / --resume), so the run's name finds it.
"""
from __future__ import annotations

from skyrl_stack.errors import StackError
from skyrl_stack.launch.managed import check_run_name
from skyrl_stack.launch.options import parse_job_id
from skyrl_stack.launch.skypilot_api import api
from skyrl_stack.launch.task_spec import TaskSpec
from skyrl_stack.reporter import step

# The queue's fields this module prints (sky/jobs/constants.py DEFAULT_MANAGED_JOB_FIELDS has them all).
FIELDS = ("job_id", "job_name", "status", "recovery_count", "resources", "job_duration")


def submit(spec: TaskSpec, task, *, detach: bool) -> int:
    """sky.jobs.launch the task as the run's job; follow its logs unless detached. Returns the job's exit code."""
    step(f"sky.jobs.launch {spec.run_name} on {spec.infra or 'any cloud'}{' (spot)' if spec.spot else ''}: "
         "SkyPilot's jobs controller provisions the cluster and recovers it (see the file's `Managed:` line)")
    job_ids, _handle = api("jobs.launch", task, name=spec.run_name, cloud=spec.cloud)
    job_id = job_ids[0] if job_ids else None
    if detach or job_id is None:
        step(f"managed job {job_id} ({spec.run_name}) submitted; follow it with: invoke jobs.logs --job-id {job_id}")
        return 0
    return logs(job_id=job_id, follow=True)


def status(name: str | None = None) -> list[dict]:
    """Print the managed jobs (or those named `name`) with their recovery count; returns the rows printed."""
    name = check_run_name(name)  # before any request: SkyPilot would take a line break or '/' as a pattern
    records, *_ = api("jobs.queue_v2", refresh=False, skip_finished=False, fields=list(FIELDS), name_match=name)
    rows = []
    for record in records:
        get = record.get if isinstance(record, dict) else lambda key, r=record: getattr(r, key, None)
        state = get("status")
        rows.append({"id": get("job_id"), "name": get("job_name") or "", "status": str(getattr(state, "value", state)),
                     "recoveries": int(get("recovery_count") or 0), "resources": get("resources") or ""})
    if name:  # name_match is a pattern on the server; the run's name is exact
        rows = [row for row in rows if row["name"] == name]
    for row in rows:
        print(f"{row['id']!s:<6} {row['name']:<36} {row['status']:<14} recoveries {row['recoveries']:<3} {row['resources']}")
    if not rows:
        print("no managed jobs" + (f" named {name}" if name else ""))
    return rows


def logs(name: str | None = None, job_id: int | str | None = None, follow: bool = True) -> int:
    """Stream a managed job's logs (by run name or id; the latest without either); returns its exit code
    (SkyPilot's: 0 succeeded, 100 failed, see sky/exceptions.py JobExitCode)."""
    name, job_id = check_run_name(name), parse_job_id(job_id)
    return int(api("jobs.tail_logs", name=name, job_id=job_id, follow=follow) or 0)


def cancel(name: str | None = None, job_id: int | str | None = None) -> None:
    """Cancel a managed job by run name or id: SkyPilot tears its cluster down; the bucket's checkpoints stay."""
    name, job_id = check_run_name(name), parse_job_id(job_id)
    if (name is None) == (job_id is None):
        raise StackError("name the managed job to cancel: --run NAME or --job-id ID (one of them)",
                         hint="`invoke jobs.status` lists them")
    api("jobs.cancel", name=name, job_ids=[job_id] if job_id is not None else None)
    step(f"managed job {name or job_id} cancelled; its checkpoints stay in the bucket (--resume {name or 'NAME'} continues it)")
