"""The SkyPilot task document: the dict SkyPilot parses (task_config) and the text written (to_yaml).

task_config orders the keys as SkyPilot's examples do (name, resources, ...,
run) and pins the image by digest; its `run:` is run_script.py's. Secrets
appear only as names (null placeholders); their values are supplied at launch.
The header says what was rendered from what (command, image, pins, training
plan, disk, checkpoints); every comment goes through comment_lines, so no value
can end a comment and become YAML.
"""
from __future__ import annotations

from skyrl_stack.image.pins import load_pins
from skyrl_stack.launch.cold_start import pull_plan
from skyrl_stack.launch.options import disk_need
from skyrl_stack.launch.managed import job_recovery
from skyrl_stack.launch.registry_access import login_note, login_secrets
from skyrl_stack.launch.run_script import run_script
from skyrl_stack.launch.task_spec import BUCKET_MOUNT, TaskSpec, batch_plan, training_values
from skyrl_stack.launch.training_plan import BATCH_KEYS, CKPTS_KEY

# How long the Ray head waits for every node to join (seconds); env-overridable per launch.
DEFAULT_JOIN_TIMEOUT = 600
# The rehearsal's training with durable storage (skyrl-rehearsal-job --ckpt-path): long enough for a
# preemption at 20 s to land mid-run (issue 16), `launch --env REHEARSAL_STEPS=...` to change it.
REHEARSAL_TRAINING = {"REHEARSAL_STEPS": "40", "REHEARSAL_STEP_SECONDS": "1", "REHEARSAL_CKPT_INTERVAL": "5"}


def task_config(spec: TaskSpec) -> dict:
    """The task as a dict, in the order of SkyPilot's examples (name, resources, ..., run)."""
    config: dict = {"name": f"skyrl-{spec.variant}", "resources": _resources(spec), "num_nodes": spec.nodes}
    envs = {"LOGGER": spec.logger}
    if spec.backend:
        envs["INFERENCE_BACKEND"] = spec.backend
    envs["SKYRL_RAY_JOIN_TIMEOUT"] = str(DEFAULT_JOIN_TIMEOUT)
    if spec.bucket and not spec.backend:
        envs.update(REHEARSAL_TRAINING)
    config["envs"] = envs
    secrets: dict = {"WANDB_API_KEY": None} if spec.logger == "wandb" else {}
    if spec.registry_login:
        secrets.update(login_secrets(spec.registry_login))
    if secrets:
        config["secrets"] = secrets
    if spec.bucket:
        # MOUNT_CACHED: writes go to a local cache and upload in the background,
        # which SkyPilot recommends for checkpoints (MOUNT writes are slow and
        # not every filesystem operation works on them).
        config["file_mounts"] = {BUCKET_MOUNT: {"source": spec.bucket, "mode": "MOUNT_CACHED"}}
    config["config"] = _config_overrides(spec)
    config["run"] = run_script(spec, load_pins().ray_port)
    return config


def _resources(spec: TaskSpec) -> dict:
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
    plan = pull_plan(spec.variant, spec.cloud)
    if plan and plan.tier:  # a disk that keeps up with the pull (cold_start.py)
        resources["disk_tier"] = plan.tier
    if spec.network_tier_best:
        resources["network_tier"] = "best"
    if spec.spot:
        resources["use_spot"] = True
    if spec.managed:
        resources["job_recovery"] = job_recovery()  # read by the managed-jobs controller (managed.py)
    return resources


def _config_overrides(spec: TaskSpec) -> dict:
    """The task's `config:` (SkyPilot config overrides for this task only)."""
    # --ipc=host: NCCL and vLLM need the host's shared memory (a private
    # /dev/shm is too small). No --ulimit memlock: AWS `network_tier: best`
    # adds it where EFA needs it, and hosts without CAP_SYS_RESOURCE refuse it.
    overrides: dict = {"docker": {"run_options": ["--ipc=host"]}}
    if spec.pull_secret:
        overrides["kubernetes"] = {"pod_config": {"spec": {"imagePullSecrets": [{"name": spec.pull_secret}]}}}
    return overrides


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
        f"#          Python {pins.variant(spec.variant).python}, SkyPilot {pins.skypilot_tested}",
        f"# Note:    {ckpt}",
        *run_notes(spec),
        *plan_notes(spec),
        *pull_notes(spec),
        (f"# Launch:  invoke launch --managed ... (or: sky jobs launch -n {spec.run_name} THIS_FILE --secret WANDB_API_KEY)"
         if spec.managed else "# Launch:  invoke launch ... (or: sky launch -c NAME THIS_FILE --secret WANDB_API_KEY)"),
    ]
    if spec.registry_login:
        lines.append(login_note(spec.registry_login))
    return comment_lines(lines)


def run_notes(spec: TaskSpec) -> list[str]:
    """Header lines: the run's name and checkpoint folder, and how a managed job recovers."""
    lines = []
    if spec.run_name:
        how = "continues (--resume: its checkpoints must exist)" if spec.resume else "a new run (its folder must hold no checkpoints)"
        lines.append(f"# Run:     {spec.run_name}: {how}; checkpoints in {spec.ckpt_path}"
                     + (f" = {spec.bucket.rstrip('/')}/{spec.run_name}" if spec.bucket else ""))
    if spec.managed:
        policy = job_recovery()
        lines.append(f"# Managed: sky.jobs.launch{' on spot' if spec.spot else ''}; recovery {policy['strategy']}: "
                     f"a preemption always, failures with the cluster up at most {policy['max_restarts_on_errors']} "
                     "times (SkyRL's driver exits 1 for a lost actor and for a bug alike; see README \"Long runs on spot\")")
    elif spec.spot:
        lines.append("# Spot:    not managed: a preemption ends the run (render with --managed to recover it)")
    return lines


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


def pull_notes(spec: TaskSpec) -> list[str]:
    """Header lines: what each fresh node pulls and writes, at the stated bandwidth, and its disk tier."""
    plan = pull_plan(spec.variant, spec.cloud)
    return [f"# {line}" for line in plan.lines(spec.cloud)] if plan else []


_SECTION_NOTES = {
    "resources": "Image by digest: exactly what was built and smoke-tested. Ports: none needed (Ray stays inside the cluster).",
    "num_nodes": "Re-render for another size: the training placement below is computed for it.",
    "secrets": "Names only; values are given at launch (invoke launch, or sky launch --secret NAME).",
    "config": "docker run options for NCCL / vLLM shared memory (ignored on Kubernetes).",
    "run": "No setup: the image holds every dependency.",
}


def to_yaml(config: dict, head: str) -> str:
    """The document: the header, then each top-level key with its note; multi-line strings as `|` blocks."""
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
