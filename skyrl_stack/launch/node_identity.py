"""Whether an AWS launch's nodes can pull the image and use the bucket: checked before anything is provisioned.

On AWS, SkyPilot gives a cluster's nodes the identity that `aws.remote_identity`
in the SkyPilot config in effect names for the cluster's name (a string for
every cluster, or a list of {name pattern: identity}, first match wins:
sky/backends/backend_utils.py write_cluster_config):

- an instance profile name: the nodes run with it, and no local credentials
  are uploaded (sky/templates/aws-ray.yml.j2 IamInstanceProfile);
- LOCAL_CREDENTIALS (the default), SERVICE_ACCOUNT or NO_UPLOAD: the nodes run
  with SkyPilot's own profile skypilot-v1, whose role SkyPilot creates with
  EC2 and S3 full access and no ECR read (sky/provision/aws/config.py
  _configure_iam_role).

SkyPilot's password-less ECR login runs `aws ecr get-login-password` on the
node at container creation, before any credential is uploaded
(sky/provision/docker_utils.py DockerInitializer.initialize,
sky/provision/provisioner.py), so the instance profile's role must be able to
pull. A bucket mounted MOUNT_CACHED is read and written by rclone with the
node's identity when SkyPilot's own AWS identity is not static keys
(sky/clouds/aws.py should_use_env_auth_for_s3) and nothing was uploaded (a
profile). What the role may do is read from IAM (skyrl_stack.infra.iam_access).

SkyPilot and boto3 are imported inside functions only.
"""
from __future__ import annotations

import fnmatch
import sys

from skyrl_stack.errors import StackError
from skyrl_stack.image.refs import ecr_registry, is_ecr, parse_reference, registry_host
from skyrl_stack.launch.run_paths import run_url
from skyrl_stack.launch.task_spec import TaskSpec

# SkyPilot's instance profile for nodes without a custom remote_identity (sky/provision/aws/config.py).
SKYPILOT_DEFAULT_PROFILE = "skypilot-v1"
# What docker needs to pull from a repository once logged in, and the login itself (account-wide).
ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage")
ECR_LOGIN = ("ecr:GetAuthorizationToken", "*")
# What a checkpoint mount does: list the bucket, read, write and delete objects (SkyRL removes old checkpoints).
BUCKET_ACTIONS = ("s3:ListBucket",)
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")


def require_node_access(spec: TaskSpec, cluster: str) -> None:
    """Refuse (one line) an AWS launch whose nodes' role cannot pull the ECR image or use the s3:// bucket."""
    if spec.cloud != "aws":
        return
    pulls_with_role = is_ecr(spec.image) and spec.registry_login is not None and spec.registry_login.password_env is None
    if not pulls_with_role and not (spec.bucket or "").startswith("s3://"):
        return
    identity, source = remote_identity(cluster, spec.region)
    profile = SKYPILOT_DEFAULT_PROFILE if identity in _skypilot_identities() else identity
    needs: list[tuple[str, str]] = []
    if pulls_with_role:
        needs += [ECR_LOGIN, *((action, ecr_repository_arn(spec.image)) for action in ECR_PULL_ACTIONS)]
    if (spec.bucket or "").startswith("s3://") and profile == identity and _node_identity_mounts_s3():
        needs += bucket_needs(run_folder(spec))
    if not needs:
        return
    known, role, lacking = _role_lacks(profile, needs, region=_region(spec))
    if not known or (role is not None and not lacking):
        return
    blocked = []
    if pulls_with_role and (role is None or any(action.startswith("ecr:") for action in lacking)):
        blocked.append(f"pull {spec.image} from ECR")
    if any(action.startswith("s3:") for action in lacking) or (role is None and not blocked):
        blocked.append(f"use {spec.bucket}")
    if role is None:
        why = f"instance profile {profile} does not exist or holds no role" + (
            " (SkyPilot makes it with EC2 and S3 access, no ECR)" if profile == SKYPILOT_DEFAULT_PROFILE else "")
    else:
        why = f"its role {role} is not allowed {', '.join(lacking)}"
    raise StackError(
        f"launch refused: the nodes of {cluster} could not {' or '.join(blocked)}: they run as instance profile "
        f"{profile} ({source}), and {why}",
        hint=_fix_hint(spec, profile),
    )


def nodes_cluster(spec: TaskSpec, cluster: str) -> str:
    """The name SkyPilot gives the cluster the task's nodes are in, which aws.remote_identity's patterns match:
    a managed job's is the jobs controller's `<run>-<job id>` (sky/jobs/utils.py
    generate_managed_job_cluster_name; the id is known only once submitted, so the first: 1), else `cluster`."""
    if not spec.managed or not spec.run_name:
        return cluster
    from sky.jobs.utils import generate_managed_job_cluster_name

    return generate_managed_job_cluster_name(spec.run_name, 1)


def remote_identity(cluster: str, region: str | None) -> tuple[str, str]:
    """(the identity SkyPilot gives the cluster's nodes on AWS, where that came from), resolved from
    the SkyPilot config this process loads, as write_cluster_config resolves it."""
    try:
        from sky import skypilot_config
        from sky.utils import schemas
    except Exception as exc:  # noqa: BLE001 - a config SkyPilot cannot load (missing file, bad schema)
        raise StackError(f"SkyPilot's config does not load: {' '.join(str(exc).split())}",
                         hint="fix or unset SKYPILOT_PROJECT_CONFIG / SKYPILOT_GLOBAL_CONFIG") from None
    configured = skypilot_config.get_effective_workspace_region_config(
        cloud="aws", region=region, keys=("remote_identity",), default_value=None)
    where = skypilot_config.loaded_config_path() or "the SkyPilot config"
    if isinstance(configured, str):
        return configured, f"aws.remote_identity in {where}"
    for entry in configured or []:
        (pattern, identity), = entry.items()
        if fnmatch.fnmatchcase(cluster, pattern):
            return identity, f"aws.remote_identity {pattern!r} in {where}"
    return schemas.get_default_remote_identity("aws"), "SkyPilot's default: no aws.remote_identity for it"


def ecr_repository_arn(image: str) -> str:
    account, region = ecr_registry(image)
    name = parse_reference(image).repository.removeprefix(registry_host(image) + "/")
    return f"arn:aws:ecr:{region}:{account}:repository/{name}"


def run_folder(spec: TaskSpec) -> str:
    """Where the run's objects go: its own folder under the bucket (run_paths.run_url), so a role scoped to
    some runs' prefixes is judged on this run's."""
    return run_url(spec.bucket, spec.run_name) if spec.run_name else spec.bucket


def bucket_needs(bucket: str) -> list[tuple[str, str]]:
    """(action, ARN) pairs for a checkpoint mount of s3://BUCKET[/PREFIX]."""
    name, _, prefix = bucket.removeprefix("s3://").partition("/")
    objects = f"arn:aws:s3:::{name}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}checkpoint"
    return [*((a, f"arn:aws:s3:::{name}") for a in BUCKET_ACTIONS), *((a, objects) for a in OBJECT_ACTIONS)]


def _skypilot_identities() -> set[str]:
    from sky.utils import schemas

    return {option.value for option in schemas.RemoteIdentityOptions}


def _node_identity_mounts_s3() -> bool:
    """SkyPilot's own answer: rclone on the node uses the node's identity (env_auth) rather than embedded keys."""
    from sky import clouds

    return clouds.AWS.should_use_env_auth_for_s3()


def _region(spec: TaskSpec) -> str:
    if is_ecr(spec.image):
        return ecr_registry(spec.image)[1]
    from skyrl_stack.infra.aws_api import resolve_region

    return resolve_region(spec.region)


def _role_lacks(profile: str, needs: list[tuple[str, str]], region: str) -> tuple[bool, str | None, list[str]]:
    """(known, role, the needed actions it lacks) through IAM. Policies this shell may not read leave it
    unknown: a warning, not a refusal (the role may well be able to)."""
    from skyrl_stack.infra.aws_api import aws_session
    from skyrl_stack.infra.iam_access import missing, role_statements

    try:
        role, statements = role_statements(aws_session(region), profile)
    except StackError as exc:
        print(f"WARNING: cannot check what instance profile {profile} may do ({exc.message}); launching anyway",
              file=sys.stderr, flush=True)
        return False, None, []
    return True, role, missing(statements, needs)


def _fix_hint(spec: TaskSpec, profile: str) -> str:
    """What to run: the stack's config layer, whose node profile can pull from its repository and use its
    bucket; with that layer already in effect, the image or bucket to use instead."""
    from skyrl_stack.infra.aws_stack import UP_HINT, cached_outputs
    from skyrl_stack.infra.skypilot_config import CONFIG_ENV, skypilot_config_path

    try:
        recorded = cached_outputs(ecr_registry(spec.image)[1] if is_ecr(spec.image) else spec.region)
    except StackError:
        return f"run {UP_HINT}, then invoke infra.skypilot-config and export the {CONFIG_ENV} line it prints"
    region = recorded["region"]
    bucket = recorded["outputs"].get("CheckpointBucketName")
    if profile == recorded["outputs"]["InstanceProfileName"]:
        return (f"the stack's node profile may pull only from {recorded['outputs']['RepositoryUri']} "
                f"(invoke push --variant {spec.variant} --registry ecr)"
                + (f" and use only s3://{bucket} (--bucket s3://{bucket}/RUN)" if bucket else ""))
    hint = (f"run: invoke infra.skypilot-config --region {region} && "
            f"export {CONFIG_ENV}={skypilot_config_path(region)} (its nodes' profile "
            f"{recorded['outputs']['InstanceProfileName']} can pull from {recorded['outputs']['RepositoryUri']}")
    return hint + (f" and use s3://{bucket})" if bucket else ")")
