"""`invoke launch`: the rendered task on a cloud through SkyPilot's SDK, or on local containers.

A cloud launch: refuse an image the cloud cannot reach, pass the preflight
(preflight.py: terminal, secrets, smoke gate, SkyRL's check of the plan),
render, show SkyPilot's plan and ask (unless --yes), then sky.launch and
follow the job's logs (unless detached). `--cloud local` runs the same
rendered task in local containers (local_cluster.py), in the foreground.
SkyPilot is imported only inside the functions.
"""
from __future__ import annotations

import copy
from dataclasses import replace

from skyrl_stack.errors import StackError
from skyrl_stack.launch.clusters import default_cluster, logs
from skyrl_stack.launch import managed_jobs
from skyrl_stack.launch.launch_env import split_secrets
from skyrl_stack.launch.options import AUTOSTOP_OFF, idle_autostop, parse_autostop
from skyrl_stack.launch.preflight import preflight
from skyrl_stack.launch.registry_access import refuse_unreachable
from skyrl_stack.launch.render import render
from skyrl_stack.launch.run_paths import check_run_path
from skyrl_stack.launch.skypilot_api import api, sky_sdk
from skyrl_stack.launch.task_spec import LOCAL, TaskSpec, refuse_control_characters
from skyrl_stack.launch.task_yaml import task_config
from skyrl_stack.reporter import step


def launch(
    spec: TaskSpec,
    *,
    cluster: str | None = None,
    dry_run: bool = False,
    detach: bool = False,
    autostop: int | str | None = None,
    down: bool = False,
    skip_smoke_gate: bool = False,
    env_overrides: dict | None = None,
    command: str = "invoke launch",
    confirm: bool = False,
    preempt=(),
) -> int:
    """Launch the task; returns the job's exit code (0 when detached or a dry run).

    confirm: show SkyPilot's plan (instance type, hourly price) and ask before
    launching, as `sky launch` does (`invoke launch` without --yes).
    """
    refuse_control_characters("--cluster", cluster)
    autostop = AUTOSTOP_OFF if autostop == AUTOSTOP_OFF else parse_autostop(autostop)
    if spec.cloud == LOCAL:
        _refuse_for_local({"--dry-run": dry_run, "--detach": detach, "--down": down,
                           "--autostop": autostop is not None})
        return launch_local(spec, cluster=cluster, env_overrides=env_overrides, command=command, preempt=preempt)
    if preempt:
        raise StackError("--preempt is for --cloud local", hint="on a cloud, spot capacity brings its own preemptions (--spot)")
    if spec.managed:
        # The jobs controller names, stops and tears down the job's clusters itself.
        _refuse_for_managed({"--cluster": cluster is not None, "--autostop": autostop is not None, "--down": down})
    else:
        autostop, autostop_note = idle_autostop(autostop, down, spec.cloud)
    refuse_unreachable(spec.image)
    check_run_path(spec)  # a new run in an old run's folder, or a --resume with nothing to resume
    # What can be refused without work comes first: the gate and the plan check may pull a large image.
    confirm = confirm and not dry_run
    secrets = preflight(spec, dry_run=dry_run, confirm=confirm, skip_smoke_gate=skip_smoke_gate, cluster=cluster,
                        env_overrides=env_overrides)
    path, _ = render(spec, command=command)
    step(f"rendered {path}")
    show_pull_plan(spec)
    task = _sky_task(path, env_overrides, secrets)
    if spec.managed:
        if confirm or dry_run:
            _show_plans(task, spec)
        if dry_run:
            step(f"dry run: nothing was launched (COST is $ per hour for all {task.num_nodes} node(s))")
            return 0
        if confirm:
            _ask(f"Submit managed job {spec.run_name} with this plan (COST is $ per hour for all "
                 f"{task.num_nodes} node(s))? [y/N] ", spec.run_name)
        return managed_jobs.submit(spec, task, detach=detach)
    cluster = cluster or default_cluster(spec.variant)
    step(f"sky.launch {cluster} on {spec.infra or 'any cloud'} ({spec.nodes} node(s), {spec.gpus or 'no GPUs'})")
    step(f"idle: {autostop_note}")
    if confirm:
        if spec.spot:  # README "What it costs": a spot launch shows the on-demand plan beside its own
            _show_plans(task, spec, spot=False)
        _confirm_plan(task, cluster, spec.cloud)
    job_id, _handle = api("launch", task, cluster_name=cluster, dryrun=dry_run, idle_minutes_to_autostop=autostop,
                          down=down, cloud=spec.cloud)
    if dry_run:
        if spec.spot:
            _show_plans(task, spec, spot=False)
        step(f"dry run: nothing was launched (SkyPilot's COST column is $ per hour for all {task.num_nodes} node(s))")
        return 0
    if detach or job_id is None:
        step(f"job {job_id} submitted on {cluster}; follow it with: invoke logs --cluster {cluster}")
        return 0
    return logs(cluster, job_id=job_id, follow=True)


def show_pull_plan(spec: TaskSpec) -> None:
    """Before SkyPilot's plan: what each fresh node pulls, how long at the stated bandwidth, its disk tier
    (SkyPilot shows nothing while a node pulls, skypilot#10141)."""
    from skyrl_stack.launch.cold_start import pull_plan

    plan = pull_plan(spec.variant, spec.cloud)
    for line in plan.lines(spec.cloud) if plan else ():
        step(" ".join(line.split()))


def _refuse_for_local(options: dict[str, bool]) -> None:
    """The local cluster runs in the foreground and is always removed at the end, so these
    options have nothing to act on; refusing beats silently starting containers on --dry-run."""
    _refuse(options, "--cloud local", "the local cluster runs in the foreground and is removed when the job ends; "
                                      "`invoke render --cloud local` writes the task without starting containers")


def _refuse_for_managed(options: dict[str, bool]) -> None:
    """SkyPilot's jobs controller names, stops and tears down a managed job's clusters itself."""
    _refuse(options, "--managed", "SkyPilot's jobs controller names the job's clusters and tears them down when "
                                  "the job ends; `invoke jobs.cancel --run NAME` ends it early")


def _refuse(options: dict[str, bool], where: str, hint: str) -> None:
    given = [flag for flag, on in options.items() if on]
    if given:
        raise StackError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {where}", hint=hint)


def _show_plans(task, spec: TaskSpec, spot: bool | None = None) -> None:
    """SkyPilot's optimizer table for spot and for on-demand capacity (or only the one named by `spot`).

    The price of each is the catalog's (Price, SpotPrice in its vms.csv), chosen
    by SkyPilot's optimizer, so the two tables show what recovering on spot saves.
    """
    from sky.utils import dag_utils

    for use_spot in ((True, False) if spot is None else (spot,)):
        step(f"SkyPilot's plan on {'spot' if use_spot else 'on-demand'} capacity"
             f"{' (requested)' if use_spot == spec.spot else ''}:")
        planned = copy.deepcopy(task)
        planned.set_resources(type(task.resources)(r.copy(use_spot=use_spot) for r in task.resources))
        api("optimize", dag_utils.convert_entrypoint_to_dag(planned), cloud=spec.cloud)


def _ask(question: str, what: str) -> None:
    """A y/N question; anything but yes refuses (Ctrl-D too)."""
    try:
        answer = input(question)
    except EOFError:  # Ctrl-D: no answer is a no
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise StackError(f"launch of {what} not confirmed: nothing was launched",
                         hint="invoke launch --dry-run shows the plan without asking")


def _sky_task(path, env_overrides: dict | None, secrets: dict):
    """SkyPilot's Task from the file just rendered, with the --env overrides and the secrets' values."""
    import yaml

    sky = sky_sdk()
    # Credential-like --env values go as secrets, which SkyPilot redacts (launch_env.split_secrets).
    env_overrides, env_secrets = split_secrets(env_overrides)
    secrets = {**secrets, **env_secrets}
    try:
        return sky.Task.from_yaml_config(
            yaml.safe_load(path.read_text()),
            env_overrides=list(env_overrides.items()) or None,
            secrets_overrides=list(secrets.items()) or None,
        )
    except ValueError as exc:
        raise StackError(f"SkyPilot rejects the task: {' '.join(str(exc).split())}", hint="re-render it: invoke render") from None


def _confirm_plan(task, cluster: str, cloud: str | None) -> None:
    """SkyPilot's optimizer plan, then a question, as `sky launch` asks it (sky/client/sdk.py _launch).

    The plan is SkyPilot's own table (instance type, region, COST per hour for
    all nodes), streamed from its optimizer; the 0.14 API server does not return
    the chosen resources (sky/server/server.py optimize: ignore_return_value),
    so the table is what the user reads before answering.
    """
    from sky.utils import dag_utils

    api("optimize", dag_utils.convert_entrypoint_to_dag(task), cloud=cloud)
    _ask(f"Launch {cluster} with this plan (COST is $ per hour for all {task.num_nodes} node(s))? [y/N] ", cluster)


def for_local(spec: TaskSpec) -> TaskSpec:
    """The spec `--cloud local` runs: same task, no cloud placement."""
    return replace(spec, cloud=LOCAL, region=None, network_tier_best=False)


def launch_local(spec: TaskSpec, *, cluster: str | None, env_overrides: dict | None, command: str,
                 preempt=()) -> int:
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.launch import local_cluster, local_managed

    spec = for_local(spec)
    preemptions = local_managed.prepare_local_run(spec, preempt)
    path, _ = render(spec, command=command)
    step(f"rendered {path}")
    config = task_config(spec)
    job = local_cluster.from_task(
        config, nodes=spec.nodes, gpus_per_node=spec.gpus_per_node,
        image=spec.image, name=cluster or f"skyrl-local-{spec.variant}", env_overrides=env_overrides,
        gpu_devices=load_pins().variant(spec.variant).gpu and spec.gpus_per_node > 0,
    )
    if spec.managed:
        label = f" (run {spec.run_name}: checkpoints in {spec.bucket.rstrip('/')}/{spec.run_name})" if spec.run_name else ""
        return local_managed.run_managed(job, config, preemptions, run_label=label)
    return local_cluster.run(job)
