"""Launch, inspect and tear down the rendered task through SkyPilot's Python SDK (or locally).

`--cloud local` runs the same rendered task in local containers
(skyrl_stack.launch.local_cluster). Every other cloud goes through `sky.launch` ->
request id -> `sky.stream_and_get`, after the smoke gate has passed the image
digest. SkyPilot is imported only here, inside the functions.
"""
from __future__ import annotations

import os
import re
import sys

from skyrl_stack.errors import StackError
from skyrl_stack.launch.render import ENV_BOUND, for_local, render, task_config
from skyrl_stack.launch.task_spec import LOCAL, TaskSpec, parse_whole_number, refuse_control_characters, training_overrides
from skyrl_stack.reporter import step

# Registries a cloud node cannot pull from.
_LOCAL_REGISTRY = re.compile(r"^(127\.0\.0\.1|localhost|0\.0\.0\.0)(:\d+)?/")
# What the rendered file's header shows instead of an --env value.
REDACTED = "<redacted>"


def default_cluster(spec: TaskSpec) -> str:
    return f"skyrl-{spec.variant}"


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
) -> int:
    """Launch the task; returns the job's exit code (0 when detached or a dry run).

    confirm: show SkyPilot's plan (instance type, hourly price) and ask before
    launching, as `sky launch` does (`invoke launch` without --yes).
    """
    refuse_control_characters("--cluster", cluster)
    autostop = parse_autostop(autostop)
    if spec.cloud == LOCAL:
        # The local cluster runs in the foreground and is always removed at the
        # end, so these options have nothing to act on; refusing beats
        # silently starting containers on --dry-run.
        given = [flag for flag, on in (("--dry-run", dry_run), ("--detach", detach), ("--down", down),
                                       ("--autostop", autostop is not None)) if on]
        if given:
            raise StackError(
                f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --cloud local",
                hint="the local cluster runs in the foreground and is removed when the job ends; "
                     "`invoke render --cloud local` writes the task without starting containers",
            )
        return launch_local(spec, cluster=cluster, env_overrides=env_overrides, command=command)
    if _LOCAL_REGISTRY.match(spec.image):
        raise StackError(
            f"image {spec.image} is in a registry only this machine can reach",
            hint="push it to a registry the cloud can pull from (invoke push), then launch",
        )
    # What can be refused without work comes first: the gate and the plan check may pull a large image.
    confirm = confirm and not dry_run
    if confirm and not sys.stdin.isatty():
        raise StackError("launching asks for confirmation, but stdin is not a terminal",
                         hint="see the plan with --dry-run, then launch with --yes")
    secrets = launch_secrets(spec, required=not dry_run)
    if not dry_run:
        require_smoke_passed(spec.image, skip_smoke_gate)
        require_plan_validated(spec, skip_smoke_gate)
    path, _ = render(spec, command=command)
    step(f"rendered {path}")
    return _sky_launch(spec, path, secrets, cluster or default_cluster(spec), dry_run, detach, autostop, down, env_overrides,
                       confirm=confirm)


def require_smoke_passed(image: str, override: bool) -> None:
    """The smoke gate (skyrl_stack.smoke.gate): no cloud launch of an untested digest."""
    from skyrl_stack.smoke.gate import require_passed

    require_passed(image, override=override, action="launch")


PLAN_CHECK = "skyrl.validate"


def require_plan_validated(spec: TaskSpec, override: bool) -> None:
    """SkyRL's own validate_cfg on the exact overrides of the task being launched, in the image, before paying.

    The smoke gate vouches for the image; this vouches for the plan (batch
    sizes against the placement, checkpoints, any --set). It runs the image's
    skyrl tier in a container of the image on this machine's CPU (composition
    and validation need no GPU), not recorded for the gate. A dry run skips
    it: it launches nothing and should not need the image locally.
    """
    if spec.backend is None:
        return  # nothing of SkyRL's to validate (rehearsal)
    if override:
        print("WARNING: gate overridden: SkyRL's validate_cfg did not check this task's training plan",
              file=sys.stderr, flush=True)
        return
    check_plan_in_image(spec.image, training_overrides(spec))


def check_plan_in_image(image: str, overrides: list[str]) -> str:
    """Run the skyrl tier in a container of `image` on these overrides; its detail, or StackError unless it passed."""
    from skyrl_stack.image.records import state_dir
    from skyrl_stack.smoke.runner import run_smoke

    step(f"checking the training plan with SkyRL's own validate_cfg in {image} (CPU, not recorded for the gate)")
    outcome = run_smoke(image=image, gpus="none", tiers=["skyrl"], overrides=overrides, record=False,
                        raise_on_failure=False, report_dir=str(state_dir() / "plan-check"))
    results = {c["name"]: c for c in outcome.report["checks"]}
    result = results.get(PLAN_CHECK, {"status": "missing", "detail": "the image's suite has no such check"})
    if result["status"] != "passed":
        # A skip (no SkyRL in the image, no overrides) proves nothing: refuse it like a failure.
        raise StackError(
            f"launch refused: the training plan was not validated in {image} ({PLAN_CHECK} {result['status']}: "
            f"{result['detail']})",
            hint=f"fix the --set or shape named above and launch again; details in {outcome.report_dir / 'summary.txt'}",
        )
    step(f"plan check: {result['detail']}")
    return result["detail"]


def launch_secrets(spec: TaskSpec, required: bool) -> dict:
    """Secret values from this shell's environment, by the names the YAML declares."""
    wanted = {}
    if spec.logger == "wandb":
        wanted["WANDB_API_KEY"] = "WANDB_API_KEY"
    login = spec.registry_login
    if login and login.password_env:
        wanted["SKYPILOT_DOCKER_PASSWORD"] = login.password_env
    values = {}
    for secret, env in wanted.items():
        value = os.environ.get(env)
        if value is None and required:
            raise StackError(
                f"{env} is not set (needed for {secret})",
                hint=f"export {env}=..." + (" or launch with --logger console" if secret == "WANDB_API_KEY" else ""),
            )
        values[secret] = value if value is not None else "<dry-run>"
    return values


def _sdk():
    from skyrl_stack.launch.skypilot_import import require_sky

    os.environ.setdefault("SKYPILOT_DEBUG", "0")
    return require_sky()


# SkyPilot colours its messages (colorama); a one-line error shows none of that.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _explain(exc: Exception, cloud: str | None) -> StackError:
    """One clear line for a SkyPilot failure, the hint chosen by the exception's class
    (sky/exceptions.py, SkyPilot 0.14.1), never by its name as a string."""
    from sky import exceptions as sky_errors

    text = _ANSI.sub("", " ".join(str(exc).split())) or type(exc).__name__
    where = cloud or "the cloud"
    check = f"`sky check {cloud}`" if cloud else "`sky check`"
    if isinstance(exc, sky_errors.ApiServerConnectionError):
        return StackError(f"cannot reach the SkyPilot API server: {text}",
                          hint="start it with `sky api start` (or unset SKYPILOT_DISABLE_LOCAL_API_SERVER)")
    if type(exc) is RuntimeError and _local_api_server_disabled():  # not its subclasses (ApiServer*Error)
        # sky/server/common.py check_local_api_server_enabled_or_raise raises a plain
        # RuntimeError; the state it guards is checked here instead of its words.
        return StackError(f"no SkyPilot API server: {text}",
                          hint="`sky api login -e ENDPOINT` for a remote one, or unset "
                               "SKYPILOT_DISABLE_LOCAL_API_SERVER to let SkyPilot start a local one")
    if isinstance(exc, sky_errors.ApiServerAuthenticationError):
        return StackError(f"the SkyPilot API server wants a login: {text}", hint="log in with `sky api login`")
    if isinstance(exc, (sky_errors.NoCloudAccessError, sky_errors.CloudUserIdentityError,
                        sky_errors.InvalidCloudCredentials, sky_errors.InvalidCloudConfigs)):
        return StackError(f"SkyPilot cannot launch on {where}: {text}",
                          hint=f"run {check} to see which credentials are missing")
    if isinstance(exc, sky_errors.ResourcesUnavailableError):
        return _explain_unavailable(exc, text, where, check)
    if isinstance(exc, (sky_errors.ClusterDoesNotExist, sky_errors.ClusterNotUpError)):
        return StackError(f"SkyPilot: {text}", hint="`invoke status` lists the clusters and their state")
    if isinstance(exc, sky_errors.NotSupportedError):
        return StackError(f"SkyPilot does not support this on {where}: {text}",
                          hint="choose another cloud with --cloud, or drop the option it names")
    return StackError(f"SkyPilot failed: {text}", hint="see `sky api logs` for details")


def _local_api_server_disabled() -> bool:
    """SkyPilot would start a local API server but is told not to (SkyPilot 0.14.1)."""
    from sky.server import common as server_common
    from sky.utils import env_options

    return bool(env_options.Options.DISABLE_LOCAL_API_SERVER.get()) and server_common.is_api_server_local()


def _explain_unavailable(exc, text: str, where: str, check: str) -> StackError:
    """ResourcesUnavailableError has three causes that need different advice: no capacity
    right now (the provisioner raises it with a failover history), a cloud that is not
    enabled, or a request no enabled cloud offers (accelerator count, image, region).
    The last two come from sky/optimizer.py without any field that tells them apart; the
    fallback is the phrase of _check_specified_clouds ("... which is not enabled")."""
    if exc.failover_history:
        return StackError(f"no capacity on {where} for the task: {text}",
                          hint="try another region or zone (--cloud CLOUD/REGION), fewer nodes, or retry later")
    if "not enabled" in text:
        return StackError(f"SkyPilot cannot launch on {where}: {text}",
                          hint=f"run {check} to see which credentials are missing")
    return StackError(f"no {where} resources match the task: {text}",
                      hint="check --gpus (name and count per node, `sky gpus list --all`), --memory and the image")


def _api(name: str, *args, cloud: str | None = None, **kwargs):
    """A request to SkyPilot's API server; its failures become one line (see _explain)."""
    try:
        return _request(name, *args, **kwargs)
    except Exception as exc:  # SkyPilot's own exception types; re-raised as one line
        if isinstance(exc, StackError):
            raise
        raise _explain(exc, cloud) from None


def _request(name: str, *args, **kwargs):
    """Every request to SkyPilot's API server goes through here: the one seam that tests
    replace (no API server or cloud can be reached on a test machine).

    sky.launch/status/down return a request id that sky.stream_and_get resolves;
    sky.tail_logs streams and returns the job's exit code itself."""
    sky = _sdk()
    result = getattr(sky, name)(*args, **kwargs)
    return result if name == "tail_logs" else sky.stream_and_get(result)


def _sky_launch(spec, path, secrets, cluster, dry_run, detach, autostop, down, env_overrides, confirm=False) -> int:
    import yaml

    sky = _sdk()
    config = yaml.safe_load(path.read_text())
    try:
        task = sky.Task.from_yaml_config(
            config,
            env_overrides=list((env_overrides or {}).items()) or None,
            secrets_overrides=list(secrets.items()) or None,
        )
    except ValueError as exc:
        raise StackError(f"SkyPilot rejects the task: {' '.join(str(exc).split())}", hint="re-render it: invoke render") from None
    step(f"sky.launch {cluster} on {spec.infra or 'any cloud'} ({spec.nodes} node(s), {spec.gpus or 'no GPUs'})")
    if confirm:
        _confirm_plan(task, cluster, spec.cloud)
    job_id, _handle = _api("launch", task, cluster_name=cluster, dryrun=dry_run, idle_minutes_to_autostop=autostop,
                           down=down, cloud=spec.cloud)
    if dry_run:
        step(f"dry run: nothing was launched (SkyPilot's COST column is $ per hour for all {task.num_nodes} node(s))")
        return 0
    if detach or job_id is None:
        step(f"job {job_id} submitted on {cluster}; follow it with: invoke logs --cluster {cluster}")
        return 0
    return logs(cluster, job_id=job_id, follow=True)


def _confirm_plan(task, cluster: str, cloud: str | None) -> None:
    """SkyPilot's optimizer plan, then a question, as `sky launch` asks it (sky/client/sdk.py _launch).

    The plan is SkyPilot's own table (instance type, region, COST per hour for
    all nodes), streamed from its optimizer; the 0.14 API server does not return
    the chosen resources (sky/server/server.py optimize: ignore_return_value),
    so the table is what the user reads before answering.
    """
    from sky.utils import dag_utils

    _api("optimize", dag_utils.convert_entrypoint_to_dag(task), cloud=cloud)
    try:
        answer = input(f"Launch {cluster} with this plan (COST is $ per hour for all {task.num_nodes} node(s))? [y/N] ")
    except EOFError:  # Ctrl-D: no answer is a no
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise StackError(f"launch of {cluster} not confirmed: nothing was launched",
                         hint="invoke launch --dry-run shows the plan without asking")


def launch_local(spec: TaskSpec, *, cluster: str | None, env_overrides: dict | None, command: str) -> int:
    from skyrl_stack.launch import local_cluster
    from skyrl_stack.image.pins import load_pins

    spec = for_local(spec)
    path, _ = render(spec, command=command)
    step(f"rendered {path}")
    job = local_cluster.from_task(
        task_config(spec), nodes=spec.nodes, gpus_per_node=spec.gpus_per_node,
        image=spec.image, name=cluster or f"skyrl-local-{spec.variant}", env_overrides=env_overrides,
        gpu_devices=load_pins().variant(spec.variant).gpu and spec.gpus_per_node > 0,
    )
    return local_cluster.run(job)


def status(cluster: str | None = None) -> list[dict]:
    records = _api("status", cluster_names=[cluster] if cluster else None)
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


def parse_autostop(value) -> int | None:
    """--autostop: whole minutes, 0 or more (None: no autostop)."""
    if value is None or value == "":
        return None
    return parse_whole_number(value, "--autostop", 0, "minutes of idleness before stopping, a whole number, 0 or more")


def parse_job_id(value) -> int | None:
    """--job-id: a SkyPilot job id, 1 or more (None: the latest job)."""
    if value is None or value == "":
        return None
    return parse_whole_number(value, "--job-id", 1,
                              "a job id is a whole number from `sky queue CLUSTER`; leave it out for the latest job")


def logs(cluster: str, job_id: int | str | None = None, follow: bool = True) -> int:
    job_id = parse_job_id(job_id)
    return int(_api("tail_logs", cluster, job_id, follow) or 0)


def down(cluster: str, stale: bool = False) -> None:
    """Tear down a SkyPilot cluster or one local run (by its name); `local` lists the local runs,
    and with stale=True removes those whose launcher is gone. A live local run is removed only by name."""
    from skyrl_stack.launch import local_cluster

    if stale and cluster != LOCAL:
        raise StackError(f"--stale applies to --cluster local, not {cluster}",
                         hint="invoke down --cluster local --stale removes local runs whose launcher is gone")
    if cluster == LOCAL:
        removed = local_cluster.down(stale=stale)
        if stale:
            step(f"removed {len(removed)} stale local cluster(s){': ' + ', '.join(removed) if removed else ''}")
        else:
            step("nothing removed: `invoke down --cluster NAME` removes one local run, "
                 "`invoke down --cluster local --stale` those whose launcher is gone")
        return
    if local_cluster.down(name=cluster):
        step(f"local cluster {cluster} removed")
        return
    _api("down", cluster)
    step(f"{cluster} is down")


def command_line(argv: list[str] | None = None) -> str:
    """How this run was invoked, for the rendered file's header, with --env values redacted.

    --env values are often tokens (HF_TOKEN=...) and never belong in the file:
    SkyPilot gets them at launch, not from the YAML. --set values are kept:
    they are Hydra settings that the file's `run:` holds anyway, so hiding
    them here would protect nothing (secrets go through --env or the
    secrets' environment variables, never --set).
    """
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    shown = []
    after_env = False
    for arg in args:
        if after_env:
            key, sep, _ = arg.partition("=")
            arg = f"{key}={REDACTED}" if sep else arg
        elif arg.startswith("--env="):
            key, sep, _ = arg.removeprefix("--env=").partition("=")
            arg = f"--env={key}={REDACTED}" if sep else arg
        after_env = arg == "--env"
        shown.append(arg)
    return shlex.join(["invoke", *shown])


def parse_env(values) -> dict:
    """['KEY=VALUE', ...] -> {KEY: VALUE} for --env."""
    result = {}
    for item in values or ():
        refuse_control_characters("--env", item)
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise StackError(f"bad --env {item!r}", hint="use KEY=VALUE, e.g. --env SKYRL_RAY_JOIN_TIMEOUT=60")
        if key in ENV_BOUND.values():
            # These feed the training command, whose plan is checked before launch; an --env would change it unchecked.
            option = next(k for k, v in ENV_BOUND.items() if v == key)
            raise StackError(f"--env {key} would change {option} after the plan was checked",
                             hint=f"use --set {option}=VALUE (or --logger for trainer.logger)")
        result[key] = value
    return result
