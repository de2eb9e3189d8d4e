"""Invoke tasks: `invoke build push`, `invoke launch --cloud aws`, `invoke smoke`, ...

Thin by design: each task parses its options and calls one function in the
`skyrl_stack` package, where the logic (and its tests) live. Heavy libraries
(docker, sky, boto3) are imported inside those functions, never here, so
`invoke --list` stays instant. Defaults come from invoke.yaml (override with
INVOKE_* environment variables).
"""
from invoke import Collection, task

from skyrl_stack.cli import check_project_config, reports_errors, split_csv
from skyrl_stack.task_defaults import default

# invoke.yaml and INVOKE_* as Invoke will read them: what would end in its traceback is one line now.
check_project_config(__file__)

# --------------------------------------------------------------------------- image


@task(
    help={
        "variant": "vllm | sglang | rehearsal; comma-separated for several (default: invoke.yaml image.variant)",
        "base_image": "override the base image (e.g. a locally made Debian image for the rehearsal)",
        "repository": "image repository, e.g. ghcr.io/me/skyrl-stack (default: invoke.yaml image.repository)",
        "push": "after the build, run the smoke suite and push what passed (see `invoke push`)",
        "no_cache": "build without BuildKit's cache",
        "ca_bundle": "CA bundle file passed to the build as a secret (TLS-intercepting proxies)",
        "progress": "buildx progress: auto | plain | tty | quiet",
        "cache_ref": "repository for BuildKit's build cache, tagged per variant (cache-from/to, mode=max), e.g. in CI",
        "git_token_env": "name of an environment variable holding a git token for a private SkyRL fork (a build secret)",
        "compression": "layer compression: zstd (default; Docker >= 23, containerd >= 1.5) | gzip (older engines); pushes send layers as built",
    }
)
@reports_errors
def build(c, variant=None, base_image=None, repository=None, push=False, no_cache=False, ca_bundle=None, progress=None,
          cache_ref=None, git_token_env=None, compression=None):
    """Build image variants with docker buildx; writes a build record per variant."""
    from skyrl_stack.image.build import build_variants

    records = build_variants(
        variants=split_csv(variant or default(c, "image.variant")),
        repository=repository or default(c, "image.repository"),
        base_image=base_image or None,
        no_cache=no_cache,
        ca_bundle=ca_bundle or default(c, "build.ca_bundle") or None,
        progress=progress or default(c, "build.progress"),
        cache_ref=cache_ref,
        git_token_env=git_token_env,
        compression=compression or default(c, "build.compression"),
    )
    if push:
        from skyrl_stack.image.push import smoke_and_push

        smoke_and_push([record.variant for record in records])


@task(
    help={
        "variant": "variant(s) to push, comma-separated (default: invoke.yaml image.variant)",
        "repository": "push to this repository instead of the one built for (e.g. ghcr.io/me/skyrl-stack)",
        "registry": "generic (env or docker login credentials) | ecr (repository and token from `invoke infra.up`)",
        "skip_smoke_gate": "move the human tags without a passing (for GPU images: GPU) smoke run (said loudly, recorded)",
    }
)
@reports_errors
def push(c, variant=None, repository=None, registry="generic", skip_smoke_gate=False):
    """Push built images: digest first, verified against the registry, then the human tags."""
    from skyrl_stack.image.push import push_variants

    push_variants(split_csv(variant or default(c, "image.variant")), repository=repository, registry=registry,
                  skip_smoke_gate=skip_smoke_gate)


@task(
    help={
        "variant": "the variant the image is (its human tags are named from this checkout's pins)",
        "image": "the pushed image by digest, REPOSITORY@sha256:... (need not be in the local engine)",
        "registry": "generic (env or docker login credentials) | ecr",
        "skip_smoke_gate": "move the tags although no GPU run vouches for the digest (said loudly, recorded)",
    }
)
@reports_errors
def promote(c, variant, image, registry="generic", skip_smoke_gate=False):
    """Move a pushed digest's human tags registry-side, once its smoke record says the GPU tiers passed."""
    from skyrl_stack.image.promote import promote as promote_image

    promote_image(variant, image, registry=registry, skip_smoke_gate=skip_smoke_gate)


@task
@reports_errors
def lock_rehearsal(c):
    """Regenerate the rehearsal variant's hashed lock from pins.toml (uv pip compile, needs PyPI)."""
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.rehearsal_lock import regenerate

    print(regenerate(load_pins()))


@task
@reports_errors
def lint(c):
    """Static checks: hadolint, cfn-lint, GitHub workflow schema, zizmor (workflow security)."""
    from skyrl_stack.dev.lint import lint as run_lint

    run_lint()


@task(help={"suite": "unit (no engine) | container (real Docker engine) | all", "pytest_args": "extra pytest arguments"})
@reports_errors
def test(c, suite="all", pytest_args=""):
    """Run the test suite (the container suite needs scripts/setup-dev.sh first)."""
    from skyrl_stack.dev.lint import pytest_command

    c.run(pytest_command(suite, pytest_args), pty=False)


@task(help={"part": "benchmarks to run, comma-separated: image,start,launch,layers,bytes,coldstart (default all; "
                    "without image, the rehearsal build record's image is measured; bytes: the per-node byte "
                    "table, offline; coldstart: image vs setup at the same bandwidth)",
            "repeat": "runs per timed figure (median reported)",
            "no_readme": "write reports/bench.{json,md} only, leave README's performance table as it is"})
@reports_errors
def bench(c, part=None, repeat=3, no_readme=False):
    """Run the benchmarks (image, SkyPilot start, launch and render, layers): JSON, markdown, README table."""
    from skyrl_stack.dev import bench as benchmarks

    benchmarks.run(split_csv(part) or list(benchmarks.PARTS), repeat=int(repeat), readme=not no_readme)


# --------------------------------------------------------------------------- smoke


@task(
    help={
        "variant": "run the built image of this variant (its build record; default: invoke.yaml image.variant)",
        "image": "run this image reference instead (local, or pulled)",
        "gpus": "all | none | N: GPUs given to the container and expected by the suite (default all; "
                "a GPU image fails if the Docker host cannot give them; none: a CPU-only run)",
        "tier": "tiers to run, comma-separated: environment,cuda,gpu,ray,engine,skyrl (default all)",
        "report": "directory for smoke.json, junit.xml, summary.txt (default reports/smoke/<variant>)",
        "host": "run the suite on this machine (e.g. a GPU box without Docker); not recorded for the gate",
        "overrides_file": "JSON list of Hydra overrides to compose SkyRL's config with (default: the rendered command's)",
    }
)
@reports_errors
def smoke(c, variant=None, image=None, gpus="all", tier=None, report=None, host=False, overrides_file=None):
    """Run the smoke suite in the image as SkyPilot would; the result gates push and launch."""
    from skyrl_stack.smoke.runner import run_smoke

    if not (variant or image or host):
        variant = default(c, "image.variant")
    run_smoke(variant=variant, image=image, gpus=gpus, tiers=split_csv(tier), report_dir=report, host=host,
              overrides_file=overrides_file)

# --------------------------------------------------------------------------- skypilot

_TASK_HELP = {
    "variant": "vllm | sglang | rehearsal (default: invoke.yaml image.variant)",
    "cloud": "aws, gcp, azure, nebius, lambda, oci, runpod, kubernetes, ... optionally /region; launch also: local",
    "gpus": "accelerators per node, NAME:COUNT (default: invoke.yaml launch.gpus; none for rehearsal)",
    "nodes": "number of nodes (default: invoke.yaml launch.nodes)",
    "memory": "memory per node, SkyPilot syntax (default: 64+ for GPU variants)",
    "disk_size": "disk per node in GB (default: sized for the image, data and kept checkpoints; the header shows it)",
    "bucket": "s3://... or gs://... mounted at /checkpoints and used for checkpoints (--cloud local: an absolute host directory)",
    "set": "Hydra override for the training command, KEY=VALUE (repeatable; written into the file: no secrets)",
    "image": "image reference instead of the build record's (must be REPO@sha256:... unless --allow-tag)",
    "registry": "generic | ecr (the build's push to the registry stack's ECR repository, see `invoke infra.up`)",
    "allow_tag": "accept an image by moving tag",
    "registry_login": "private registry: USER:PASSWORD_ENV[@SERVER], or `ecr` for ECR through the node's IAM role",
    "pull_secret": "Kubernetes: name of the imagePullSecret for the image",
    "logger": "wandb | console | tensorboard: what the image can run (default: wandb; console for rehearsal)",
    "network_tier": "best: ask for the cloud's fast interconnect (only with an image that can use it; see README)",
    "managed": "a SkyPilot managed job (sky jobs launch): recovered after preemptions; needs --bucket (--cloud local: a local jobs controller)",
    "spot": "spot capacity (resources.use_spot); with --managed a preemption is recovered",
    "run": "the run's name: its checkpoint folder under --bucket (default: <variant>-YYYYmmdd-HHMMSS-xxxx)",
    "resume": "continue run NAME from its checkpoints under --bucket (they must exist)",
}


def _task_spec(c, variant, cloud, gpus, nodes, memory, disk_size, bucket, set, image, allow_tag,
               registry_login, pull_secret, logger, registry, network_tier=None, managed=False, spot=False, run=None,
               resume=None):
    from skyrl_stack.launch.options import build_spec

    return build_spec(
        variant or default(c, "image.variant"), cloud=cloud or default(c, "launch.cloud"), gpus=gpus or None,
        nodes=nodes if nodes is not None else default(c, "launch.nodes"), memory=memory, disk_size=disk_size, bucket=bucket,
        sets=set, image=image, allow_tag=allow_tag, registry_login=registry_login, pull_secret=pull_secret,
        logger=logger, default_gpus=None if gpus else default(c, "launch.gpus"), registry=registry, network_tier=network_tier,
        managed=managed, spot=spot, run=run, resume=resume,
    )


@task(iterable=["set"], help={**_TASK_HELP, "out": "output file (default: skypilot/<variant>-<cloud>-<N>n.yaml)",
                              "no_validate": "skip the checks with SkyPilot's parser, schema and the cloud's feature check"})
@reports_errors
def render(c, variant=None, cloud=None, gpus=None, nodes=None, memory=None, disk_size=None, bucket=None, set=None,
           image=None, allow_tag=False, registry_login=None, pull_secret=None, logger=None, out=None, no_validate=False,
           registry="generic", network_tier=None, managed=False, spot=False, run=None, resume=None):
    """Write the SkyPilot task YAML for a built image (by digest), checked by SkyPilot's own parser."""
    from skyrl_stack.launch.options import command_line
    from skyrl_stack.launch.render import render as render_task
    from skyrl_stack.project import shown

    spec = _task_spec(c, variant, cloud, gpus, nodes, memory, disk_size, bucket, set, image, allow_tag,
                      registry_login, pull_secret, logger, registry, network_tier, managed, spot, run, resume)
    path, _ = render_task(spec, out=out, command=command_line(), check=not no_validate)
    print(shown(path))


@task(iterable=["set", "env", "preempt"], help={
    **_TASK_HELP, "cluster": "cluster name (default: skyrl-<variant>; --cloud local: skyrl-local-<variant>-xxxxxx)", "dry_run": "let SkyPilot plan, launch nothing",
    "detach": "return once the job is submitted (follow with `invoke logs`)",
    "autostop": "stop the cluster after M idle minutes (with --down: tear it down); default 30 for a cloud "
                "launch that is not managed; `off`: keep it up while idle", "down": "tear down when done",
    "skip_smoke_gate": "launch without a passing smoke run of the digest and without SkyRL's check of the "
                       "training plan in the image (said loudly)",
    "env": "override a task env, KEY=VALUE (repeatable), e.g. SKYRL_RAY_JOIN_TIMEOUT=60",
    "yes": "launch without asking (otherwise SkyPilot's plan, instance type and $/h, is shown and confirmed)",
    "preempt": "--cloud local --managed: kill node NODE's container SECONDS after the start, NODE@SECONDS "
               "(repeatable), e.g. node1@20",
})
@reports_errors
def launch(c, variant=None, cloud=None, gpus=None, nodes=None, memory=None, disk_size=None, bucket=None, set=None,
           image=None, allow_tag=False, registry_login=None, pull_secret=None, logger=None, cluster=None,
           dry_run=False, detach=False, autostop=None, down=False, skip_smoke_gate=False, env=None,
           registry="generic", network_tier=None, yes=False, managed=False, spot=False, run=None, resume=None,
           preempt=None):
    """Launch the task with SkyPilot (`--cloud local`: N local containers); exits with the job's code."""
    from invoke.exceptions import Exit

    from skyrl_stack.launch.launcher import launch as launch_task
    from skyrl_stack.launch.options import command_line, parse_env

    spec = _task_spec(c, variant, cloud, gpus, nodes, memory, disk_size, bucket, set, image, allow_tag,
                      registry_login, pull_secret, logger, registry, network_tier, managed, spot, run, resume)
    code = launch_task(spec, cluster=cluster, dry_run=dry_run, detach=detach, autostop=autostop, down=down,
                       skip_smoke_gate=skip_smoke_gate, env_overrides=parse_env(env), command=command_line(),
                       confirm=not yes, preempt=preempt or ())
    if code:
        raise Exit(f"error: the job exited with code {code}", code=code)


@task(help={"cluster": "only this cluster"})
@reports_errors
def status(c, cluster=None):
    """SkyPilot clusters and their state."""
    from skyrl_stack.launch.clusters import status as cluster_status

    cluster_status(cluster)


@task(help={"cluster": "cluster name (default: skyrl-<image.variant>)", "job_id": "job id (default: the latest)",
            "no_follow": "print what is there and return"})
@reports_errors
def logs(c, cluster=None, job_id=None, no_follow=False):
    """Stream a job's logs; exits with the job's code."""
    from invoke.exceptions import Exit

    from skyrl_stack.launch.clusters import default_cluster, logs as job_logs

    code = job_logs(cluster or default_cluster(default(c, "image.variant")), job_id=job_id, follow=not no_follow)
    if code:
        raise Exit(code=code)


@task(help={"cluster": "cluster name (default: skyrl-<image.variant>), or a local run's name; `local` lists local runs",
            "stale": "with --cluster local: remove the local runs whose launcher is gone"})
@reports_errors
def down(c, cluster=None, stale=False):
    """Tear a cluster down (bucket checkpoints survive; node disks do not)."""
    from skyrl_stack.launch.clusters import default_cluster, down as cluster_down

    cluster_down(cluster or default_cluster(default(c, "image.variant")), stale=stale)


# --------------------------------------------------------------------------- managed jobs

_JOB_HELP = {"run": "the run's name (the managed job is named after it)", "job_id": "managed job id (`invoke jobs.status`)"}


@task(name="status", help={"run": "only the jobs of this run"})
@reports_errors
def jobs_status(c, run=None):
    """Managed jobs (invoke launch --managed): id, run, state and how many times SkyPilot recovered each."""
    from skyrl_stack.launch.managed_jobs import status as managed_status

    managed_status(run)


@task(name="logs", help={**_JOB_HELP, "no_follow": "print what is there and return"})
@reports_errors
def jobs_logs(c, run=None, job_id=None, no_follow=False):
    """Stream a managed job's logs across its recoveries (the latest job unless named); exits with its code."""
    from invoke.exceptions import Exit

    from skyrl_stack.launch.managed_jobs import logs as managed_logs

    code = managed_logs(run, job_id=job_id, follow=not no_follow)
    if code:
        raise Exit(code=code)


@task(name="cancel", help=_JOB_HELP)
@reports_errors
def jobs_cancel(c, run=None, job_id=None):
    """Cancel a managed job (its cluster goes; its checkpoints stay in the bucket for --resume)."""
    from skyrl_stack.launch.managed_jobs import cancel as managed_cancel

    managed_cancel(run, job_id=job_id)


jobs = Collection("jobs")
jobs.add_task(jobs_status, name="status")
jobs.add_task(jobs_logs, name="logs")
jobs.add_task(jobs_cancel, name="cancel")

# --------------------------------------------------------------------------- infra

_INFRA_HELP = {
    "cloud": "where the registry stack lives; supported: aws",
    "region": "AWS region (default: AWS_REGION / the AWS profile's region)",
    "stack_name": "CloudFormation stack name (default: skyrl-stack-registry)",
}


@task(help={**_INFRA_HELP, "repository_name": "ECR repository name (default: skyrl-stack; kept on updates)",
            "untagged_expiry_days": "expire untagged images after N days (default: 14; kept on updates)"})
@reports_errors
def infra_up(c, cloud="aws", region=None, stack_name=None, repository_name=None, untagged_expiry_days=None):
    """Create or update the registry stack (ECR repository + node instance profile); records its outputs."""
    from skyrl_stack.infra import aws_stack

    aws_stack.print_outputs(aws_stack.deploy(cloud, region, stack_name, repository_name=repository_name,
                                             untagged_expiry_days=untagged_expiry_days))


@task(help=_INFRA_HELP)
@reports_errors
def infra_outputs(c, cloud="aws", region=None, stack_name=None):
    """Show the registry stack's outputs (and record them for push/render --registry ecr)."""
    from skyrl_stack.infra import aws_stack

    aws_stack.print_outputs(aws_stack.refresh_outputs(cloud, region, stack_name))


@task(help=_INFRA_HELP)
@reports_errors
def infra_down(c, cloud="aws", region=None, stack_name=None):
    """Delete the registry stack (CloudFormation keeps a repository that still holds images)."""
    from skyrl_stack.infra import aws_stack

    aws_stack.destroy(cloud, region, stack_name)


@task(help={"region": "region of the recorded stack (default: the only one recorded)"})
@reports_errors
def infra_skypilot_config(c, region=None):
    """Write the SkyPilot config layer with the stack's instance profile; prints the line that puts it in effect."""
    from skyrl_stack.infra.skypilot_config import CONFIG_ENV, write_skypilot_config

    print(f"export {CONFIG_ENV}={write_skypilot_config(region)}")


infra = Collection("infra")
infra.add_task(infra_up, name="up")
infra.add_task(infra_outputs, name="outputs")
infra.add_task(infra_down, name="down")
infra.add_task(infra_skypilot_config, name="skypilot-config")

ns = Collection(build, push, promote, lock_rehearsal, smoke, lint, test, bench, infra, jobs, render, launch, status, logs,
                down)
