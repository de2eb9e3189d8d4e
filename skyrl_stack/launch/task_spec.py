"""What to launch, as a small typed spec, and the GSM8K GRPO training overrides.

Standard library only: the smoke suite composes SkyRL's Hydra config with
exactly :func:`training_overrides`, possibly inside the image, and `invoke
render` must stay instant. Parsing here validates every user input up front so
that a bad value fails before anything is written (see options.build_spec).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from skyrl_stack.errors import StackError
from skyrl_stack.image.refs import is_ecr, registry_host
from skyrl_stack.launch.loggers import check_logger
from skyrl_stack.launch.managed import RESUME, check_durable_resume_mode
from skyrl_stack.launch.training_plan import (
    BATCH_KEYS,
    CKPTS_KEY,
    DEFAULT_CKPTS_TO_KEEP,
    SEED_MICRO_BATCH,
    SEED_MINI_BATCH,
    SEED_SAMPLES_PER_PROMPT,
    SEED_TRAIN_BATCH,
    BatchPlan,
    check_batch_sets,
    checkpoints_written,
    parse_ckpts_to_keep,
    plan_batches,
)

# Clouds SkyPilot (0.10.5 .. 0.14) accepts in `infra`. `local` is ours: it runs
# the task's `run:` in local containers (skyrl_stack.launch.local_cluster), never SkyPilot.
CLOUDS = (
    "aws", "gcp", "azure", "nebius", "lambda", "oci", "runpod", "kubernetes",
    "paperspace", "fluidstack", "cudo", "do", "vast", "ibm", "scp", "vsphere",
    "hyperbolic", "seeweb", "shadeform", "primeintellect", "mithril", "verda", "yotta",
)
CLOUD_ALIASES = {"k8s": "kubernetes"}
LOCAL = "local"

_GPUS = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?::(?P<count>[0-9]+))?$")
_KEY = re.compile(r"^\+{0,2}~?[A-Za-z_][A-Za-z0-9_.\-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Where data and checkpoints live on each node (containers run as root). Fixed,
# absolute paths: Hydra does not expand `~` or `$HOME`.
DATA_DIR = "/root/data/gsm8k"
LOCAL_CKPT_DIR = "/root/ckpts/gsm8k_1.5B_ckpt"
BUCKET_MOUNT = "/checkpoints"

# Bounds on what a task may ask for, each with its reason. A value past one is a typo or a paste
# error far more often than a plan, and it would only fail (or cost) later, on the cloud.
# GPUs per node: no instance type in SkyPilot's catalogs has more than 16 GPUs
# (GCP a2-megagpu-16g: 16 x A100, skypilot-catalog catalogs/v8/gcp/vms.csv; AWS
# p4d/p5 and Azure ND have 8).
MAX_GPUS_PER_NODE = 16
# Nodes: the GSM8K GRPO job takes 1024 prompts per step (trainer.train_batch_size)
# and runs one inference engine per GPU; at 64 nodes x 8 GPUs that is 2 prompts
# per engine, so more nodes add cost and join time (the Ray head waits for every
# node), not speed.
MAX_NODES = 64
# Disk per node (GB): the largest single volume a cloud offers is 64 TiB (GCP
# Persistent Disk, AWS io2 Block Express); SkyPilot's disk_size is one boot disk.
MAX_DISK_GB = 65536
# Memory per node (GB): the largest VM any cloud sells has 32 TiB (AWS u7in-32tb).
MAX_MEMORY_GB = 32768
# SkyPilot's memory syntax (sky/utils/resources_utils.py parse_memory_resource,
# units from sky/skylet/constants.py MEMORY_SIZE_UNITS): a number, in GB unless a
# unit follows, then '+' for "at least". Factors convert to GB.
_MEMORY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[kmgtp][bi])?(?P<plus>\+)?", re.IGNORECASE)
_MEMORY_UNIT_GB = {"k": 2.0**-20, "m": 2.0**-10, "g": 1.0, "t": 2.0**10, "p": 2.0**20}


@dataclass(frozen=True)
class RegistryLogin:
    """Private-registry login for SkyPilot's image pull: the *names* of env vars, never values."""

    username: str  # literal user name (not a secret), e.g. AWS, _json_key, ci
    password_env: str | None  # env var holding the password; None = ECR through the node's IAM role
    server: str


@dataclass(frozen=True)
class TaskSpec:
    variant: str
    image: str  # repo@sha256:... (or a tag with allow_tag)
    backend: str | None  # SkyRL generator.backend; None for the rehearsal
    cloud: str | None = "aws"  # a SkyPilot cloud, LOCAL, or None (let SkyPilot choose)
    region: str | None = None
    gpus: str | None = "L40S:4"  # accelerator name:count per node
    nodes: int = 1
    memory: str | None = "64+"
    disk_size: int = 256
    bucket: str | None = None
    logger: str = "wandb"
    network_tier_best: bool = False
    registry_login: RegistryLogin | None = None
    sets: tuple[tuple[str, str], ...] = ()
    data_dir: str = DATA_DIR
    pull_secret: str | None = None  # Kubernetes imagePullSecret name
    managed: bool = False  # a SkyPilot managed job (sky.jobs.launch), recovered on preemption
    spot: bool = False  # resources.use_spot
    run_name: str | None = None  # the run's checkpoint folder under the bucket (--run / --resume)
    resume: bool = False  # --resume: the run's checkpoints must exist (a new run refuses them)

    @property
    def gpus_per_node(self) -> int:
        return parse_accelerator(self.gpus)[1] if self.gpus else 0

    @property
    def ckpt_path(self) -> str:
        if self.bucket:  # one folder per run: run_paths.py says why
            return f"{BUCKET_MOUNT}/{self.run_name or 'gsm8k_1.5B_ckpt'}"
        return LOCAL_CKPT_DIR

    @property
    def infra(self) -> str | None:
        if self.cloud in (None, LOCAL):
            return None
        return f"{self.cloud}/{self.region}" if self.region else self.cloud


def refuse_control_characters(option: str, value) -> None:
    """Option values are data: one that holds a line break, tab, escape or other
    non-printable character (Python's str.isprintable: Unicode categories C* and
    Z* except ' ') is refused before it can reach the YAML, a shell or a log line.

    A line break in particular would end the rendered file's header comment and
    turn the rest of the value into YAML (a `setup:` SkyPilot runs on every node).
    """
    if not isinstance(value, str):
        return
    bad = next((ch for ch in value if not ch.isprintable()), None)
    if bad is not None:
        raise StackError(
            f"bad {option} {value!r}: it contains the control character U+{ord(bad):04X}",
            hint="type the value again without line breaks, tabs or other control characters (a paste can carry them)",
        )


def parse_cloud(value: str) -> tuple[str, str | None]:
    """'aws' | 'aws/us-east-1' | 'k8s/my-context' | 'local' -> (cloud, region)."""
    name, _, region = (value or "").strip().partition("/")
    name = CLOUD_ALIASES.get(name.lower(), name.lower())
    if name != LOCAL and name not in CLOUDS:
        raise StackError(
            f"unknown cloud {value!r}",
            hint=f"choose one of: {', '.join(CLOUDS)}, local (optionally cloud/region); `sky check` lists the ones you can use",
        )
    if name == LOCAL and region:
        raise StackError("the local cloud takes no region", hint="use --cloud local")
    return name, (region or None)


def parse_accelerator(value: str, option: str = "--gpus") -> tuple[str, int]:
    """--gpus as SkyPilot's accelerator request per node: 'L40S:4' -> ('L40S', 4); 'H100' -> ('H100', 1).
    (The smoke runner's --gpus, a count the suite expects, is smoke/main.py parse_gpus.)"""
    match = _GPUS.fullmatch((value or "").strip())
    count = int(match["count"]) if match and match["count"] else 1
    if not match or count < 1:
        raise StackError(f"bad {option} {value!r}", hint="use NAME:COUNT per node, e.g. L40S:4 or H100:8")
    if count > MAX_GPUS_PER_NODE:
        raise StackError(
            f"bad {option} {value!r}: {count} GPUs per node; no instance type has more than {MAX_GPUS_PER_NODE}",
            hint="COUNT is per node (e.g. H100:8); for more GPUs add nodes with --nodes",
        )
    return match["name"], count


def parse_whole_number(value, option: str, minimum: int, hint: str, maximum: int | None = None,
                       reason: str = "") -> int:
    """An option that must be a whole number in [minimum, maximum], or a one-line StackError naming it
    (and, past the maximum, the reason for the bound)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = minimum - 1
    if number < minimum:
        raise StackError(f"bad {option} {value!r}", hint=hint)
    if maximum is not None and number > maximum:
        raise StackError(f"bad {option} {value!r}: more than {maximum}{f' ({reason})' if reason else ''}", hint=hint)
    return number


def parse_nodes(value, option: str = "--nodes") -> int:
    return parse_whole_number(
        value, option, 1, f"use a whole number of nodes from 1 to {MAX_NODES}", maximum=MAX_NODES,
        reason="the GSM8K job's 1024 prompts per step leave more nodes idle; see MAX_NODES in skyrl_stack/launch/task_spec.py",
    )


def parse_disk_size(value) -> int:
    """--disk-size in GB: a whole number, at most the largest disk a cloud offers.

    The lower bound is the plan's (options.sized_disk: image, data, checkpoints).
    """
    hint = "leave it out to get the disk the plan needs"
    try:
        disk = int(value)
    except (TypeError, ValueError):
        raise StackError(f"bad --disk-size {value!r}: a whole number of GB", hint=hint) from None
    if disk > MAX_DISK_GB:
        raise StackError(f"bad --disk-size {value!r}: more than {MAX_DISK_GB} GB, the largest single disk a cloud "
                         "offers (64 TiB)", hint=hint)
    return disk


def parse_memory(value: str | None) -> str | None:
    """--memory in SkyPilot's syntax ('64', '64+', '512GB+', '1TB'), more than 0 and at most MAX_MEMORY_GB."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    match = _MEMORY.fullmatch(text)
    hint = "memory per node in GB, SkyPilot syntax: 64, 64+ (at least), 512GB+, 1TB"
    if not match:
        raise StackError(f"bad --memory {value!r}", hint=hint)
    unit = (match["unit"] or "g")[0].lower()
    gigabytes = float(match["number"]) * _MEMORY_UNIT_GB[unit]
    if gigabytes <= 0:
        raise StackError(f"bad --memory {value!r}: a node needs some memory", hint=hint)
    if gigabytes > MAX_MEMORY_GB:
        raise StackError(f"bad --memory {value!r}: more than {MAX_MEMORY_GB} GB, the largest VM any cloud sells",
                         hint=hint)
    return text


def parse_sets(values) -> tuple[tuple[str, str], ...]:
    """['trainer.epochs=1', ...] -> (('trainer.epochs', '1'), ...): Hydra overrides."""
    parsed = []
    for item in values or ():
        key, sep, val = item.partition("=")
        if not sep or not _KEY.match(key.strip()):
            raise StackError(f"bad --set {item!r}", hint="use a Hydra override KEY=VALUE, e.g. --set trainer.epochs=1")
        parsed.append((key.strip(), val.strip()))
    return tuple(parsed)


def parse_registry_login(value: str | None, image: str) -> RegistryLogin | None:
    """'USER:PASSWORD_ENV[@SERVER]' -> RegistryLogin; all three values or none.

    The password is named by an environment variable, so it never appears on a
    command line or in the rendered file. For ECR, 'ecr' alone (or 'AWS:' with
    no password variable) uses the node's IAM role (SkyPilot runs `aws ecr
    get-login-password` when the password is empty).
    """
    if not value:
        return None
    if value.strip().lower() == "ecr":
        value = "AWS:"
    creds, _, server = value.partition("@")
    user, sep, password_env = creds.partition(":")
    # The image's registry ('docker.io' for short Docker Hub names such as me/skyrl).
    server = server or registry_host(image)
    # is_ecr reads the host of a reference; a bare host needs a path to be read as one.
    ecr = is_ecr(f"{server}/repository")
    missing = [name for name, got in (("user", user), ("password variable", password_env), ("server", server)) if not got]
    if ecr and missing == ["password variable"]:
        return RegistryLogin(username=user, password_env=None, server=server)
    if missing or not sep:
        raise StackError(
            f"registry login {value!r} lacks its {' and '.join(missing) or 'password variable'}: "
            "SkyPilot needs user, password and server together",
            hint="use --registry-login USER:PASSWORD_ENV@SERVER (e.g. ci:REGISTRY_PASSWORD@ghcr.io), or `ecr` for ECR via the IAM role",
        )
    if not _ENV_NAME.match(password_env):
        raise StackError(
            f"registry login password must name an environment variable, got {password_env!r}",
            hint="export REGISTRY_PASSWORD=... and pass USER:REGISTRY_PASSWORD@SERVER",
        )
    return RegistryLogin(username=user, password_env=password_env, server=server)


# The seed's GRPO settings (SkyRL v0.2.0 examples/gsm8k), in its order. Values
# that depend on the cluster shape are filled in by training_overrides().
GSM8K_GRPO = (
    ("trainer.algorithm.advantage_estimator", "grpo"),
    ("trainer.policy.model.path", "Qwen/Qwen2.5-1.5B-Instruct"),
    ("trainer.placement.colocate_all", "true"),
    ("trainer.strategy", "fsdp2"),
    ("generator.inference_engine_tensor_parallel_size", "1"),
    ("trainer.epochs", "20"),
    ("trainer.eval_batch_size", "1024"),
    ("trainer.eval_before_train", "true"),
    ("trainer.eval_interval", "5"),
    ("trainer.update_epochs_per_batch", "1"),
    ("trainer.train_batch_size", "1024"),
    ("trainer.policy_mini_batch_size", "256"),
    ("trainer.micro_forward_batch_size_per_gpu", "64"),
    ("trainer.micro_train_batch_size_per_gpu", "64"),
    ("trainer.ckpt_interval", "10"),
    ("trainer.max_prompt_length", "512"),
    ("generator.sampling_params.max_generate_length", "1024"),
    ("trainer.policy.optimizer_config.lr", "1.0e-6"),
    ("trainer.algorithm.use_kl_loss", "true"),
    ("generator.run_engines_locally", "true"),
    ("generator.weight_sync_backend", "nccl"),
    ("generator.async_engine", "true"),
    ("generator.batched", "true"),
    ("environment.env_class", "gsm8k"),
    ("generator.n_samples_per_prompt", "5"),
    ("generator.gpu_memory_utilization", "0.8"),
    ("trainer.project_name", "gsm8k"),
    ("trainer.run_name", "gsm8k_test"),
    ("trainer.resume_mode", "null"),
)

def apply_spec_sets(spec: TaskSpec) -> TaskSpec:
    """Fold --set generator.backend / trainer.logger into the spec, refusing a backend mismatch."""
    source = "--logger"
    for key, value in spec.sets:
        if key == "generator.backend" and value != spec.backend:
            raise StackError(
                f"--set generator.backend={value} does not match the {spec.variant} image (backend {spec.backend})",
                hint=f"render the {value} variant instead: --variant {value}",
            )
        if key == "trainer.logger":
            spec, source = replace(spec, logger=value), "--set trainer.logger"
    check_logger(spec.logger, source)
    return spec


def training_values(spec: TaskSpec) -> dict[str, str]:
    """The GSM8K GRPO command's Hydra overrides as key -> value, in order, `--set` applied last-wins in place.

    Placement follows the cluster shape: colocate_all needs policy GPUs ==
    inference engines x tensor parallel size, so engines = nodes x GPUs per node.
    Batch sizes come from training_plan.plan_batches for that shape, and the
    final values (after --set) are checked against SkyRL's batch rules.
    """
    if spec.backend is None:
        raise StackError(f"variant {spec.variant!r} has no SkyRL", hint="training needs the vllm or sglang variant")
    gpus = max(spec.gpus_per_node, 1)
    plan = batch_plan(spec)
    values = dict(GSM8K_GRPO[:4])
    values.update({
        "data.train_data": f"['{spec.data_dir}/train.parquet']",
        "data.val_data": f"['{spec.data_dir}/validation.parquet']",
        "trainer.placement.policy_num_gpus_per_node": str(gpus),
        "trainer.placement.ref_num_gpus_per_node": str(gpus),
        "trainer.placement.policy_num_nodes": str(spec.nodes),
        "trainer.placement.ref_num_nodes": str(spec.nodes),
        "generator.num_inference_engines": str(plan.inference_engines(gpus, (*GSM8K_GRPO, *spec.sets))),
    })
    values.update(dict(GSM8K_GRPO[4:]))
    values.update(plan.overrides())  # same keys as the seed's: their places in the command stay
    values.update({
        "generator.backend": spec.backend,
        "trainer.logger": spec.logger,
        "trainer.ckpt_path": spec.ckpt_path,
        CKPTS_KEY: str(DEFAULT_CKPTS_TO_KEEP),
    })
    if spec.bucket:  # durable: a first run and each recovery run one command (managed.py RESUME)
        values["trainer.resume_mode"] = RESUME
    values.update(spec.sets)  # last wins, in place
    if spec.bucket:
        check_durable_resume_mode(values["trainer.resume_mode"])
    check_batch_sets(plan, values)
    parse_ckpts_to_keep(values[CKPTS_KEY])
    # data paths first, as in the seed; the rest keeps insertion order.
    order = ["data.train_data", "data.val_data"]
    return {key: values[key] for key in order + [k for k in values if k not in order]}


def training_overrides(spec: TaskSpec) -> list[str]:
    """The Hydra overrides of the GSM8K GRPO command for this spec (see training_values)."""
    return [f"{key}={value}" for key, value in training_values(spec).items()]


def batch_plan(spec: TaskSpec) -> BatchPlan:
    """The seed's batch sizes made valid for this spec's nodes x GPUs (StackError for a shape that cannot be).

    A shape with no derived plan is still rendered when --set gives all three
    batch sizes: those are then checked against SkyRL's rules (check_batch_sets).
    """
    try:
        return plan_batches(spec.nodes, spec.gpus_per_node)
    except StackError:
        given = {key for key, _ in spec.sets}
        if not {BATCH_KEYS["train"], BATCH_KEYS["mini"], BATCH_KEYS["micro_train"]} <= given:
            raise
        return BatchPlan(spec.nodes * max(spec.gpus_per_node, 1), SEED_TRAIN_BATCH, SEED_MINI_BATCH,
                         SEED_MICRO_BATCH, SEED_MICRO_BATCH, SEED_SAMPLES_PER_PROMPT, derived=False)


def checkpoints_on_disk(values: dict[str, str]) -> int:
    """The most checkpoints a node holds at once with these overrides.

    SkyRL deletes old ones only after the new one is saved (trainer.py
    save_checkpoints -> cleanup_old_checkpoints), so keeping N means N + 1 at
    the peak; keep-all (-1) means every checkpoint the schedule writes.
    """
    keep = parse_ckpts_to_keep(values[CKPTS_KEY])
    try:
        written = checkpoints_written(int(values["trainer.train_batch_size"]), int(values["trainer.epochs"]),
                                      int(values["trainer.ckpt_interval"]))
    except ValueError:
        raise StackError("trainer.epochs and trainer.ckpt_interval must be whole numbers",
                         hint="e.g. --set trainer.epochs=1") from None
    return written if keep < 0 else min(keep + 1, written)
