"""Render a SkyPilot task YAML from a build record and a TaskSpec, checked by SkyPilot's own parser.

The file pins the image by digest, installs nothing at launch (no `setup:`),
and its `run:` calls scripts baked into the image (docker/scripts/bin):
skyrl-gsm8k-data, skyrl-ray-up, then skyrl-train (or, for the rehearsal
image, skyrl-rehearsal-job). Secrets appear only as names (null placeholders);
their values are supplied at launch.
"""
from __future__ import annotations

import copy
import os
import re
import shlex
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.records import load_build_record, write_text_atomic
from skyrl_stack.image.refs import is_ecr, parse_reference
from skyrl_stack.launch import cloud_features
from skyrl_stack.launch.task_spec import (
    LOCAL,
    BUCKET_MOUNT,
    REGISTRIES,
    TaskSpec,
    apply_spec_sets,
    parse_cloud,
    parse_disk_size,
    parse_accelerator,
    parse_memory,
    parse_nodes,
    parse_registry_login,
    parse_sets,
    refuse_control_characters,
    training_overrides,
    training_values,
    checkpoints_on_disk,
    batch_plan,
)
from skyrl_stack.launch.training_plan import BATCH_KEYS, CKPTS_KEY, DATA_GB, DiskNeed
from skyrl_stack.project import project_root, workspace

# `network_tier: best` is never requested by default: the images carry no
# fabric userspace (no EFA libfabric / aws-ofi-nccl for AWS, no verbs library
# for InfiniBand, no GPUDirect-TCPX-matched NCCL for GCP), so NCCL would fall
# back to TCP on a fabric that was paid for. `--network-tier best` opts in
# (an image that has it); SkyPilot's feature check then decides (cloud_features).
NETWORK_TIERS = ("best",)
# The pinned prod image is tens of GB unpacked; smaller disks fail at pull (skypilot#1506).
# The image's share of a node's disk (training_plan.DiskNeed adds data and checkpoints).
MIN_DISK_GB = {True: 100, False: 20}
# How long the Ray head waits for every node to join (seconds); env-overridable per launch.
DEFAULT_JOIN_TIMEOUT = 600
# Overrides the spec owns and the YAML exposes as envs, so `sky launch --env
# LOGGER=console` works as in SkyRL's example.
ENV_BOUND = {"trainer.logger": "LOGGER", "generator.backend": "INFERENCE_BACKEND"}


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
) -> TaskSpec:
    """Validate every option and the build record; returns the spec (no side effects).

    registry="ecr": the image is the build's push to the registry stack's ECR
    repository (`invoke infra.up`), refused when it was not pushed there.
    """
    options = {"--variant": variant, "--cloud": cloud, "--gpus": gpus, "--nodes": nodes, "--memory": memory,
               "--disk-size": disk_size, "--bucket": bucket, "--image": image, "--registry-login": registry_login,
               "--pull-secret": pull_secret, "--logger": logger, "--registry": registry}
    for option, value in [*options.items(), *(("--set", item) for item in sets or ())]:
        refuse_control_characters(option, value)
    pins = load_pins()
    var = pins.variant(variant)
    cloud_name, region = parse_cloud(cloud)
    registry = registry or "generic"
    if registry not in REGISTRIES:
        raise StackError(f"unknown --registry {registry!r}", hint=f"use one of: {', '.join(REGISTRIES)}")
    nodes = parse_nodes(nodes)
    if gpus is None:
        gpus = default_gpus if var.gpu else None
    if gpus:
        parse_accelerator(gpus)
    sets = parse_sets(sets)
    if network_tier not in (None, "", *NETWORK_TIERS):
        raise StackError(f"bad --network-tier {network_tier!r}",
                         hint="use --network-tier best (only with an image that carries the cloud's fabric userspace), or leave it out")
    if not var.has_skyrl and sets:
        raise StackError(f"--set is for the training command; variant {variant!r} has none", hint="use --variant vllm or sglang")
    given_image = image is not None
    if registry == "ecr":
        image = ecr_image(variant, image)
    elif image is None:
        record = load_build_record(variant)
        image = record.pushed_ref or record.ref
    reference = parse_reference(image, what="--image" if given_image else "image")
    if reference.digest is None and not allow_tag:
        raise StackError(
            f"image {image!r} is not pinned by digest",
            hint="use REPO@sha256:<digest> (invoke build/push record it), or pass --allow-tag to accept a moving tag",
        )
    memory = parse_memory(memory)
    if bucket and not re.match(r"^(s3|gs|r2|cos|oci|https)://[^/\s]+", bucket):
        raise StackError(f"bad --bucket {bucket!r}", hint="use s3://BUCKET[/path] or gs://BUCKET[/path]")
    if registry_login is None and is_ecr(image) and cloud_name != "kubernetes":
        # ECR tokens expire after 12 h, so the node logs in with its IAM role
        # (SkyPilot's empty-password path), as `--registry-login ecr` does.
        registry_login = "ecr"
    login = parse_registry_login(registry_login, image)
    if cloud_name == "kubernetes" and login:
        raise StackError(
            "on Kubernetes SkyPilot ignores registry login variables",
            hint="create a docker-registry secret in the namespace and pass --pull-secret NAME",
        )
    if pull_secret and cloud_name != "kubernetes":
        raise StackError("--pull-secret is for --cloud kubernetes", hint="on VMs use --registry-login USER:PASSWORD_ENV@SERVER")
    spec = TaskSpec(
        variant=variant,
        image=image,
        backend=var.inference_backend,
        cloud=cloud_name,
        region=region,
        gpus=gpus,
        nodes=nodes,
        memory=memory or ("64+" if var.gpu else None),
        bucket=bucket or None,
        logger=logger or ("wandb" if var.has_skyrl else "console"),
        network_tier_best=network_tier == "best",
        registry_login=login,
        sets=sets,
        pull_secret=pull_secret or None,
    )
    spec = apply_spec_sets(spec) if var.has_skyrl else spec
    # Sized (and the training plan checked, refusing a shape SkyRL cannot run) before anything is written.
    return replace(spec, disk_size=sized_disk(spec, var, disk_size))


def disk_need(spec: TaskSpec, gpu_image: bool) -> DiskNeed:
    """What one node's disk must hold: the image, and for training the model, data and checkpoints."""
    if spec.backend is None:
        return DiskNeed(image_gb=MIN_DISK_GB[gpu_image], data_gb=0, checkpoints=0)
    return DiskNeed(image_gb=MIN_DISK_GB[gpu_image], data_gb=DATA_GB, checkpoints=checkpoints_on_disk(training_values(spec)))


def sized_disk(spec: TaskSpec, var, disk_size) -> int:
    """--disk-size if it holds the plan (one-line error if not); by default exactly what the plan needs."""
    need = disk_need(spec, var.gpu)
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


def ecr_image(variant: str, image: str | None) -> str:
    """The image for --registry ecr: inside the registry stack's repository, pushed there."""
    from skyrl_stack.infra.aws_stack import ecr_repository_uri

    repository = ecr_repository_uri()  # StackError with the infra.up hint when no stack is recorded
    given = image is not None
    if image is None:
        image = load_build_record(variant).pushed_ref
    pushed_to = parse_reference(image, what="--image" if given else "image").repository if image else None
    if pushed_to != repository:
        where = f"it was pushed to {pushed_to}" if image else "it was not pushed"
        raise StackError(
            f"the {variant} image is not in the ECR repository {repository} ({where})",
            hint=f"push it first: invoke push --variant {variant} --registry ecr",
        )
    return image


def task_config(spec: TaskSpec) -> dict:
    """The task as a dict, in the order of SkyPilot's examples (name, resources, ..., run)."""
    pins = load_pins()
    resources = {"image_id": f"docker:{spec.image}"}
    if spec.infra:
        resources["infra"] = spec.infra
    if spec.gpus:
        resources["accelerators"] = spec.gpus
    else:
        resources["cpus"] = "2+"
    if spec.memory:
        resources["memory"] = spec.memory
    resources["disk_size"] = spec.disk_size
    if spec.network_tier_best:
        resources["network_tier"] = "best"

    config: dict = {"name": f"skyrl-{spec.variant}", "resources": resources, "num_nodes": spec.nodes}
    envs = {"LOGGER": spec.logger}
    if spec.backend:
        envs["INFERENCE_BACKEND"] = spec.backend
    envs["SKYRL_RAY_JOIN_TIMEOUT"] = str(DEFAULT_JOIN_TIMEOUT)
    config["envs"] = envs

    secrets: dict = {}
    if spec.logger == "wandb":
        secrets["WANDB_API_KEY"] = None
    login = spec.registry_login
    if login:
        # SkyPilot wants all three together, all in secrets (sky/task.py). An
        # empty password on ECR makes SkyPilot use the node's IAM role.
        secrets["SKYPILOT_DOCKER_USERNAME"] = login.username
        secrets["SKYPILOT_DOCKER_PASSWORD"] = None if login.password_env else ""
        secrets["SKYPILOT_DOCKER_SERVER"] = login.server
    if secrets:
        config["secrets"] = secrets
    if spec.bucket:
        # MOUNT_CACHED: writes go to a local cache and upload in the background,
        # which SkyPilot recommends for checkpoints (MOUNT writes are slow and
        # not every filesystem operation works on them).
        config["file_mounts"] = {BUCKET_MOUNT: {"source": spec.bucket, "mode": "MOUNT_CACHED"}}

    # --ipc=host: NCCL and vLLM need the host's shared memory (a private
    # /dev/shm is too small). No --ulimit memlock: AWS `network_tier: best`
    # adds it where EFA needs it, and hosts without CAP_SYS_RESOURCE refuse it.
    overrides: dict = {"docker": {"run_options": ["--ipc=host"]}}
    if spec.pull_secret:
        overrides["kubernetes"] = {"pod_config": {"spec": {"imagePullSecrets": [{"name": spec.pull_secret}]}}}
    config["config"] = overrides
    config["run"] = run_script(spec, pins.ray_port)
    return config


def run_script(spec: TaskSpec, ray_port: int) -> str:
    lines = [
        "set -euo pipefail",
        "# Every step is a script baked into the image (/usr/local/bin); nothing is installed here.",
    ]
    if spec.backend:
        lines += [
            "# Data first, on every node: a node joins Ray only once its data exists,",
            "# because the trainer may be scheduled on any node.",
            f"skyrl-gsm8k-data {shlex.quote(spec.data_dir)}",
        ]
    lines += [
        f"# Our Ray on port {ray_port}, clear of SkyPilot's own Ray (6380). The head waits",
        "# until all SKYPILOT_NUM_NODES nodes joined (SKYRL_RAY_JOIN_TIMEOUT seconds).",
        f"skyrl-ray-up --port {ray_port}",
        'if [ "$SKYPILOT_NODE_RANK" = "0" ]; then',
    ]
    if spec.backend:
        args = []
        for item in training_overrides(spec):
            key, _, value = item.partition("=")
            env = ENV_BOUND.get(key)
            args.append(f'{key}="${env}"' if env else _quote(item))
        lines.append("  skyrl-train \\")
        lines += [f"    {arg} \\" for arg in args[:-1]] + [f"    {args[-1]}"]
    else:
        lines.append(f"  skyrl-rehearsal-job --port {ray_port}")
    # The workers' run: holds their node in the cluster until this; a failed job
    # never gets here, and SkyPilot's job then cancels the workers itself.
    lines.append(f"  skyrl-ray-up --port {ray_port} --release")
    lines.append("fi")
    return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    """Shell-quote, preferring double quotes so Hydra lists stay readable: "k=['a']"."""
    if shlex.quote(arg) == arg:
        return arg
    if not any(ch in arg for ch in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def header(spec: TaskSpec, command: str) -> str:
    pins = load_pins()
    ckpt = (
        f"checkpoints go to {spec.bucket} (mounted at {BUCKET_MOUNT}) and survive `invoke down`."
        if spec.bucket
        else f"checkpoints stay on the nodes' disks ({spec.ckpt_path}) and are LOST on teardown; use --bucket to keep them."
    )
    lines = [
        "# SkyPilot task rendered by skyrl-stack. Do not edit: re-render instead.",
        f"# Command: {command}",
        f"# Image:   {spec.image} (variant {spec.variant})",
        f"# Pins:    {pins.digest()} - SkyRL {pins.skyrl_ref} ({pins.skyrl_commit[:12]}), Ray {pins.ray} on port {pins.ray_port},",
        f"#          Python {load_pins().variant(spec.variant).python}, SkyPilot {pins.skypilot_tested}",
        f"# Note:    {ckpt}",
        *plan_notes(spec),
        "# Launch:  invoke launch ... (or: sky launch -c NAME THIS_FILE --secret WANDB_API_KEY)",
    ]
    if spec.registry_login and spec.registry_login.password_env:
        lines.append(f"# Registry password: read from ${spec.registry_login.password_env} at launch (--secret SKYPILOT_DOCKER_PASSWORD).")
    elif spec.registry_login:
        lines.append(f"# Registry login: {spec.registry_login.server} through the node's IAM role (empty SKYPILOT_DOCKER_PASSWORD).")
    return comment_lines(lines)


def comment_lines(lines) -> str:
    """YAML comment lines, whatever text they carry: every header line goes through here.

    A comment ends at a line break, and YAML (PyYAML's reader, YAML 1.1) counts
    \\n, \\r, \\x85, \\u2028 and \\u2029 as breaks and refuses other control
    characters anywhere in the stream. So each character that is not printable
    (str.isprintable) is written as its Python escape (\\n, \\x1b, \\u2028): the
    value stays readable, and nothing in it can end the comment and become YAML.
    A line without a leading '#' gets one.
    """
    out = []
    for line in lines:
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(line))
        out.append(text if text.startswith("#") else f"# {text}")
    return "\n".join(out) + "\n"


def plan_notes(spec: TaskSpec) -> list[str]:
    """Header lines: the batch sizes and what render changed from the seed (and why), checkpoints, disk."""
    if spec.backend is None:
        return [f"# Disk:    {spec.disk_size} GB per node"]
    values = training_values(spec)
    plan = batch_plan(spec)
    keep = int(values[CKPTS_KEY])
    lines = [
        f"# Plan:    {spec.nodes} node(s) x {max(spec.gpus_per_node, 1)} GPU(s) = {plan.dp} data-parallel GPUs: "
        f"train_batch_size {values['trainer.train_batch_size']}, policy_mini_batch_size "
        f"{values['trainer.policy_mini_batch_size']}, micro_train_batch_size_per_gpu "
        f"{values['trainer.micro_train_batch_size_per_gpu']} (SkyRL's example: 1024, 256, 64)",
    ]
    given = [f"{key}={value}" for key, value in spec.sets if key in BATCH_KEYS.values()]
    if given:
        lines.append(f"#          set by --set (checked against SkyRL's rules): {', '.join(given)}")
    else:
        lines += [f"#          changed: {change}" for change in plan.changes] or ["#          unchanged from SkyRL's example"]
    kept = f"the last {keep} kept ({keep + 1} on disk while the next is saved)" if keep > 0 else "all kept"
    lines.append(f"# Ckpts:   {kept} ({CKPTS_KEY}={keep}; --set {CKPTS_KEY}=N changes it, -1 keeps all) in {spec.ckpt_path}")
    lines.append(f"# Disk:    {spec.disk_size} GB per node; the plan needs {disk_need(spec, load_pins().variant(spec.variant).gpu).breakdown()}")
    return lines


_SECTION_NOTES = {
    "resources": "Image by digest: exactly what was built and smoke-tested. Ports: none needed (Ray stays inside the cluster).",
    "num_nodes": "Re-render for another size: the training placement below is computed for it.",
    "secrets": "Names only; values are given at launch (invoke launch, or sky launch --secret NAME).",
    "config": "docker run options for NCCL / vLLM shared memory (ignored on Kubernetes).",
    "run": "No setup: the image holds every dependency.",
}


def to_yaml(config: dict, head: str) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, data):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    parts = [head]
    for key, value in config.items():
        if key in _SECTION_NOTES:
            parts.append("\n" + comment_lines([_SECTION_NOTES[key]]))
        parts.append(yaml.dump({key: value}, Dumper=Dumper, sort_keys=False, width=120))
    return "".join(parts)


@contextmanager
def _no_local_api_server():
    """SKYPILOT_DISABLE_LOCAL_API_SERVER=1 while validating, restored after.

    Validation is offline and must never start SkyPilot's API server; but a
    launch in the same process afterwards needs SkyPilot free to start it, so
    the variable must not outlive the check.
    """
    key = "SKYPILOT_DISABLE_LOCAL_API_SERVER"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def validate(config: dict) -> None:
    """Check the task with SkyPilot's own schema, Task parser and its cloud's feature check (offline)."""
    with _no_local_api_server():
        _validate(config)


def _validate(config: dict) -> None:
    from skyrl_stack.launch.skypilot_import import require_sky

    sky = require_sky(or_else="or --no-validate")
    from sky.utils import common_utils, schemas

    try:
        common_utils.validate_schema(copy.deepcopy(config), schemas.get_task_schema(), "Invalid task YAML: ")
        # Null secrets are filled at launch (`sky launch --secret NAME`); give
        # them a stand-in the same way, so the check covers the launch path.
        blanks = [(k, "<given-at-launch>") for k, v in (config.get("secrets") or {}).items() if v is None]
        task = sky.Task.from_yaml_config(copy.deepcopy(config), secrets_overrides=blanks or None)
    except Exception as exc:  # SkyPilot raises ValueError and its own exception types
        message = " ".join(str(exc).split())
        raise StackError(f"SkyPilot rejects the task: {message}", hint="fix the option named above and render again") from None
    cloud_features.check(task)


def check_gpus(spec: TaskSpec) -> None:
    """The accelerator name against SkyPilot's catalog where it is on this machine, else a warning line."""
    if not spec.gpus or spec.cloud == LOCAL:  # a local cluster uses this machine's GPUs, whatever their name
        return
    from skyrl_stack.launch.accelerators import check_accelerator

    warning = check_accelerator(parse_accelerator(spec.gpus)[0], spec.cloud)
    if warning:
        print(warning, file=sys.stderr)


def default_out(spec: TaskSpec) -> Path:
    where = spec.cloud or "any"
    # Under the workspace (the project by default), wherever invoke runs from, like records and reports.
    return workspace() / "skypilot" / f"{spec.variant}-{where}-{spec.nodes}n.yaml"


def render(spec: TaskSpec, out: Path | None = None, command: str = "invoke render", check: bool = True) -> tuple[Path, str]:
    """Render, validate (what is written is what SkyPilot parsed), then write atomically."""
    import yaml

    out = Path(out) if out else default_out(spec)
    if out.is_dir():  # refused before anything is rendered (os.replace onto a directory fails late, with a traceback)
        raise StackError(f"--out {out} is a directory", hint=f"name the file to write, e.g. --out {out / default_out(spec).name}")
    config = task_config(spec)
    text = to_yaml(config, header(spec, command))
    if check:
        check_gpus(spec)
        validate(yaml.safe_load(text))
    try:
        write_text_atomic(out, text)
    except OSError as exc:  # e.g. a parent that is a file, no permission
        raise StackError(f"cannot write {out}: {exc.strerror or exc}", hint="choose another --out path") from None
    return out, text


def for_local(spec: TaskSpec) -> TaskSpec:
    """The spec `--cloud local` runs: same task, no cloud placement."""
    return replace(spec, cloud=LOCAL, region=None, network_tier_best=False)


# Checked-in examples (skypilot/examples/): a placeholder digest, clearly marked.
EXAMPLE_IMAGE = "ghcr.io/your-org/skyrl-stack@sha256:" + "0" * 64
EXAMPLES_COMMAND = "python -m skyrl_stack.launch.render --examples"


def render_example(variant: str) -> str:
    spec = build_spec(variant, cloud="aws", nodes=1, image=EXAMPLE_IMAGE)
    note = comment_lines([
        "# PLACEHOLDER: the image digest below is all zeros. Do not launch this file;",
        "# run `invoke render` for a YAML with your build's real digest.",
    ])
    return note + to_yaml(task_config(spec), header(spec, EXAMPLES_COMMAND))


def write_examples() -> list[Path]:
    paths = []
    import yaml

    for variant in ("vllm", "sglang"):
        text = render_example(variant)
        validate(yaml.safe_load(text))
        path = project_root() / "skypilot" / "examples" / f"{variant}.yaml"
        write_text_atomic(path, text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    if sys.argv[1:] != ["--examples"]:
        sys.exit("usage: python -m skyrl_stack.launch.render --examples")
    for written in write_examples():
        print(written)
