"""The options of `invoke render / launch / logs`, checked before anything is written or started.

- build_spec: every render/launch option (and the build record) -> one TaskSpec,
  in steps: the plain values (task_spec's parsers), the image and the registry
  login (registry_access), then the disk, sized for the plan (disk_need).
- The launch's own options: --env (parse_env), --autostop, --job-id, and the
  command line as the rendered file's header shows it (--env values redacted).
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import replace

from skyrl_stack.errors import StackError
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.refs import REGISTRIES
from skyrl_stack.launch.hydra_overrides import check_composes, check_sets
from skyrl_stack.launch.launch_env import refuse_owned
from skyrl_stack.launch.local_bucket import parse_local_bucket
from skyrl_stack.launch.managed import parse_run, require_durable_storage
from skyrl_stack.launch.registry_access import node_login, task_image
from skyrl_stack.launch.run_script import ENV_BOUND
from skyrl_stack.launch.task_spec import (
    LOCAL,
    MAX_DISK_GB,
    TaskSpec,
    apply_spec_sets,
    checkpoints_on_disk,
    parse_accelerator,
    parse_cloud,
    parse_disk_size,
    parse_memory,
    parse_nodes,
    parse_sets,
    parse_whole_number,
    refuse_control_characters,
    training_overrides,
    training_values,
)
from skyrl_stack.launch.model_sizes import model_size
from skyrl_stack.launch.training_plan import HEADROOM_GB, DiskNeed

# `network_tier: best` is never requested by default: the images carry no
# fabric userspace (no EFA libfabric / aws-ofi-nccl for AWS, no verbs library
# for InfiniBand, no GPUDirect-TCPX-matched NCCL for GCP), so NCCL would fall
# back to TCP on a fabric that was paid for. `--network-tier best` opts in
# (an image that has it); SkyPilot's feature check then decides (cloud_features).
NETWORK_TIERS = ("best",)
# The pinned prod image is tens of GB unpacked; smaller disks fail at pull (skypilot#1506).
# The image's share of a node's disk (training_plan.DiskNeed adds data and checkpoints).
MIN_DISK_GB = {True: 100, False: 20}
# What the rendered file's header shows instead of an --env value.
REDACTED = "<redacted>"
# The model the task trains (SkyRL's config key); the disk is sized for it.
MODEL_KEY = "trainer.policy.model.path"


def build_spec(
    variant: str,
    cloud: str = "aws",
    gpus: str | None = None,
    nodes=1,
    memory: str | None = None,
    disk_size=None,
    bucket: str | None = None,
    sets=(),
    image: str | None = None,
    allow_tag: bool = False,
    registry_login: str | None = None,
    pull_secret: str | None = None,
    logger: str | None = None,
    default_gpus: str = "L40S:4",
    registry: str | None = "generic",
    network_tier: str | None = None,
    managed: bool = False,
    spot: bool = False,
    run: str | None = None,
    resume: str | None = None,
) -> TaskSpec:
    """Validate every option and the build record; returns the spec (no side effects).

    registry="ecr": the image is the build's push to the registry stack's ECR
    repository (`invoke infra.up`), refused when it was not pushed there.
    """
    options = {"--variant": variant, "--cloud": cloud, "--gpus": gpus, "--nodes": nodes, "--memory": memory,
               "--disk-size": disk_size, "--bucket": bucket, "--image": image, "--registry-login": registry_login,
               "--pull-secret": pull_secret, "--logger": logger, "--registry": registry, "--run": run,
               "--resume": resume}
    for option, value in [*options.items(), *(("--set", item) for item in sets or ())]:
        refuse_control_characters(option, value)
    var = load_pins().variant(variant)
    cloud_name, region = parse_cloud(cloud)
    registry = registry or "generic"
    if registry not in REGISTRIES:
        raise StackError(f"unknown --registry {registry!r}", hint=f"use one of: {', '.join(REGISTRIES)}")
    nodes = parse_nodes(nodes)
    if gpus is None:
        gpus = default_gpus if var.gpu else None
    if gpus:
        parse_accelerator(gpus)
        gpus = gpus.strip()  # a padded value asks for the same GPUs; the YAML gets it without the padding
    sets = parse_sets(sets)
    network_tier_best = parse_network_tier(network_tier)
    if not var.has_skyrl and sets:
        raise StackError(f"--set is for the training command; variant {variant!r} has none", hint="use --variant vllm or sglang")
    check_sets(sets)  # Hydra's grammar and SkyRL's config (hydra_overrides), before the plan reads any of them
    image = task_image(variant, image, registry, allow_tag)
    memory = parse_memory(memory)
    bucket = parse_bucket(bucket, cloud_name)
    run_name, resuming = managed_run(variant, cloud_name, bucket, managed=managed, spot=spot, run=run, resume=resume)
    login = node_login(cloud_name, image, registry_login, pull_secret)
    spec = TaskSpec(
        variant=variant,
        image=image,
        backend=var.skyrl_extra,  # SkyRL names its extra after generator.backend (pins.py Variant)
        cloud=cloud_name,
        region=region,
        gpus=gpus,
        nodes=nodes,
        memory=memory or ("64+" if var.gpu else None),
        bucket=bucket,
        logger=logger or ("wandb" if var.has_skyrl else "console"),
        network_tier_best=network_tier_best,
        registry_login=login,
        sets=sets,
        pull_secret=pull_secret or None,
        managed=bool(managed),
        spot=bool(spot),
        run_name=run_name,
        resume=resuming,
    )
    spec = apply_spec_sets(spec) if var.has_skyrl else spec
    # Sized (and the training plan checked, refusing a shape SkyRL cannot run) before anything is written.
    spec = replace(spec, disk_size=sized_disk(spec, var, disk_size))
    if var.has_skyrl:
        check_composes(training_overrides(spec))  # the whole list, as SkyRL's entry point will compose it
    return spec


def parse_network_tier(value: str | None) -> bool:
    """--network-tier: True for `best`; left out, the cloud's default tier."""
    if value not in (None, "", *NETWORK_TIERS):
        raise StackError(f"bad --network-tier {value!r}",
                         hint="use --network-tier best (only with an image that carries the cloud's fabric userspace), or leave it out")
    return value == "best"


def parse_bucket(value: str | None, cloud: str | None = None) -> str | None:
    """--bucket: a bucket URL SkyPilot can mount (s3://, gs://, r2://, cos://, oci://, https://);
    with --cloud local also an absolute host directory (mounted into every node container)."""
    if value and cloud == LOCAL and "://" not in value:
        return parse_local_bucket(value)  # absolute, and a directory that exists or can be made
    if value and not re.match(r"^(s3|gs|r2|cos|oci|https)://[^/\s]+", value):
        local = " (an absolute directory only with --cloud local)" if value.startswith("/") else ""
        raise StackError(f"bad --bucket {value!r}{local}", hint="use s3://BUCKET[/path] or gs://BUCKET[/path]")
    return value or None


def managed_run(variant: str, cloud: str | None, bucket: str | None, *, managed: bool, spot: bool,
                run: str | None, resume: str | None) -> tuple[str | None, bool]:
    """--managed / --spot / --run / --resume -> (the run's name, resume?), refusing what cannot be durable.

    With durable storage every run has a name (generated unless given): its
    checkpoints' folder under the bucket. Without it there is no run folder, and --run is refused.
    """
    require_durable_storage(managed, bucket, cloud)
    if resume and not bucket:
        raise StackError(f"--resume {resume} needs the bucket that holds its checkpoints",
                         hint="pass the same --bucket the run was launched with")
    if run and not bucket:
        # The run's name is its folder under the bucket; on the nodes' disks there is one fixed folder, so the
        # header's "a new run (its folder must hold no checkpoints)" would name a check that never happens.
        raise StackError(f"--run {run} names the run's checkpoint folder under --bucket, and there is no --bucket",
                         hint="add --bucket s3://BUCKET/PATH (checkpoints then outlive the nodes), or leave --run out")
    if spot and not managed:
        print("WARNING: --spot without --managed: a preemption ends the run and nothing relaunches it "
              "(add --managed to have SkyPilot recover it)", file=sys.stderr, flush=True)
    name, resuming = parse_run(run, resume, variant)
    if not bucket:
        return None, False
    return name, resuming


def disk_need(spec: TaskSpec, gpu_image: bool) -> DiskNeed:
    """What one node's disk must hold: the image, and for training the model, data and checkpoints
    (of the model trainer.policy.model.path names, model_sizes.py; the seed's is training_plan's CKPT_GB, DATA_GB).

    On Kubernetes `disk_size` is the pod's ephemeral-storage request (SkyPilot
    0.14.1 sky/clouds/kubernetes.py make_deploy_resources_variables), and the
    optimizer keeps only nodes whose ephemeral-storage capacity holds it
    (sky/provision/kubernetes/utils.py check_instance_fits). The kubelet does
    not charge image layers to a pod's ephemeral storage, so the image's share
    is left out there: asking for it would rule out nodes that fit.
    """
    image_gb, note = MIN_DISK_GB[gpu_image], ""
    if spec.cloud == "kubernetes":
        image_gb, note = 0, "the pod's ephemeral-storage request; image layers are not counted"
    if spec.backend is None:
        return DiskNeed(image_gb=image_gb, data_gb=0, checkpoints=0, note=note)
    values = training_values(spec)
    size = model_size(values[MODEL_KEY])
    if size is None:
        return DiskNeed(image_gb=image_gb, data_gb=0, checkpoints=0, unsized_model=values[MODEL_KEY], note=note)
    return DiskNeed(image_gb=image_gb, data_gb=size.download_gb,
                    checkpoints=checkpoints_on_disk(values), ckpt_gb=size.ckpt_gb, note=note)


def sized_disk(spec: TaskSpec, var, disk_size) -> int:
    """--disk-size if it holds the plan (one-line error if not); by default exactly what the plan needs."""
    need = disk_need(spec, var.gpu)
    if need.unsized_model and disk_size in (None, ""):
        raise StackError(
            f"cannot size the disk for --set {MODEL_KEY}={need.unsized_model}: not a model skyrl_stack/launch/"
            "model_sizes.py knows (its checkpoints are about 12 GB per billion parameters each)",
            hint=f"give --disk-size GB: image {need.image_gb} + the model + (kept checkpoints + 1) x one checkpoint "
                 f"+ headroom {HEADROOM_GB}")
    if need.gb > MAX_DISK_GB:
        raise StackError(f"the {spec.variant} plan needs {need.gb} GB per node ({need.breakdown()}), more than the "
                         f"largest disk a cloud offers ({MAX_DISK_GB} GB)",
                         hint="keep fewer checkpoints (--set trainer.max_ckpts_to_keep=2) or train fewer epochs")
    if disk_size in (None, ""):
        return need.gb
    disk = parse_disk_size(disk_size)
    if disk < need.gb:
        raise StackError(
            f"bad --disk-size {disk_size!r}: the {spec.variant} plan needs at least {need.gb} GB per node ({need.breakdown()})",
            hint="leave it out to get exactly that" + (", or keep fewer checkpoints: --set trainer.max_ckpts_to_keep=1"
                                                      if need.checkpoints else ""),
        )
    return disk


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
        refuse_owned(key)
        result[key] = value
    return result


def parse_autostop(value) -> int | None:
    """--autostop: whole minutes, 0 or more (None: no autostop)."""
    return _optional_whole_number(value, "--autostop", 0,
                                  "minutes of idleness before stopping, a whole number, 0 or more, or `off`")


# An unmanaged cloud cluster stops after this many idle minutes unless told otherwise:
# a detached run that crashes at minute 5 would otherwise bill its nodes until
# someone notices (2 x g6e.12xlarge: about $21/h at catalog prices).
DEFAULT_AUTOSTOP_MINUTES = 30
AUTOSTOP_OFF = "off"  # --autostop off: no idle autostop (SkyPilot's 0 means "after 1 idle minute")


def idle_autostop(autostop, down: bool, cloud: str | None) -> tuple[int | None, str]:
    """sky.launch's idle_minutes_to_autostop for a cloud launch, and the plan's line saying what it does.

    SkyPilot's semantics (sky/client/sdk.py launch, sky/execution.py): None sets
    no autostop; M stops the cluster after M idle minutes (0 acts as 1), or tears
    it down with down=True; down=True alone tears it down when the job ends.
    Kubernetes cannot stop a cluster (sky/clouds/kubernetes.py: "Auto-stop is
    not supported on Kubernetes"), so there the default is none.
    """
    if autostop == AUTOSTOP_OFF:
        if down:
            raise StackError("--autostop off contradicts --down", hint="drop one of them")
        return None, "no idle autostop (--autostop off): the cluster bills until `invoke down`"
    minutes = parse_autostop(autostop)
    if minutes is not None and not down and cloud == "kubernetes":
        # sky/execution.py _execute_dag asks for AUTOSTOP, which Kubernetes refuses
        # (_unsupported_features_for_resources): no launchable resources, after the preflight's image pull.
        raise StackError(f"--autostop {minutes} would stop the cluster, and Kubernetes cannot stop one "
                         "(SkyPilot: \"Auto-stop is not supported on Kubernetes\")",
                         hint=f"add --down to tear it down after {max(minutes, 1)} idle minute(s), or leave --autostop out")
    if minutes is not None:
        verb = "is torn down" if down else "stops"
        return minutes, f"the cluster {verb} after {max(minutes, 1)} idle minute(s) (--autostop {minutes})"
    if down:
        return None, "the cluster is torn down when its job ends (--down)"
    if cloud == "kubernetes":
        return None, ("no idle autostop: Kubernetes cannot stop a cluster; --autostop M --down tears it down "
                      "after M idle minutes")
    return DEFAULT_AUTOSTOP_MINUTES, (f"the cluster stops after {DEFAULT_AUTOSTOP_MINUTES} idle minutes (default; "
                                      "--autostop M, --autostop off); a stopped cluster's disks still bill until "
                                      "`invoke down`")


def parse_job_id(value) -> int | None:
    """--job-id: a SkyPilot job id, 1 or more (None: the latest job)."""
    return _optional_whole_number(value, "--job-id", 1,
                                  "a job id is a whole number from `sky queue CLUSTER`; leave it out for the latest job")


def _optional_whole_number(value, option: str, minimum: int, hint: str) -> int | None:
    if value is None or value == "":
        return None
    return parse_whole_number(value, option, minimum, hint)


def command_line(argv: list[str] | None = None) -> str:
    """How this run was invoked, for the rendered file's header, with --env values redacted.

    --env values are often tokens (HF_TOKEN=...) and never belong in the file:
    SkyPilot gets them at launch, not from the YAML. --set values are kept:
    they are Hydra settings that the file's `run:` holds anyway, so hiding
    them here would protect nothing (secrets go through --env or the
    secrets' environment variables, never --set).
    """
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
