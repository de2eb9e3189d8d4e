"""How the nodes get the image: which image the task runs, whether a cloud can reach it, and the login.

- task_image: --image, or the build record's push; with --registry ecr, the
  push to the registry stack's ECR repository (`invoke infra.up`). Pinned by
  digest unless --allow-tag.
- node_login: SkyPilot's registry login for the pull (--registry-login, or the
  node's IAM role for an ECR image), or, on Kubernetes, an imagePullSecret.
  Login values never appear in the task: a password is the *name* of an
  environment variable (task_spec.RegistryLogin), given as a secret at launch.
"""
from __future__ import annotations

import re

from skyrl_stack.errors import StackError
from skyrl_stack.image.records import load_build_record
from skyrl_stack.image.refs import ecr_registry, is_ecr, parse_reference, registry_host
from skyrl_stack.launch.task_spec import RegistryLogin, parse_registry_login

# Clouds whose nodes SkyPilot gives an AWS identity (an EC2 instance profile):
# the only ones where its password-less ECR login can work.
AWS_IDENTITY_CLOUDS = ("aws",)
# Registries a cloud node cannot pull from.
_LOCAL_REGISTRY = re.compile(r"^(127\.0\.0\.1|localhost|0\.0\.0\.0)(:\d+)?/")


def task_image(variant: str, image: str | None, registry: str, allow_tag: bool) -> str:
    """The image reference the task runs, refused unless pinned by digest (or allow_tag)."""
    given = image is not None
    if registry == "ecr":
        image = ecr_image(variant, image)
    elif image is None:
        record = load_build_record(variant)
        image = record.pushed_ref or record.ref
    reference = parse_reference(image, what="--image" if given else "image")
    if reference.digest is None and not allow_tag:
        raise StackError(
            f"image {image!r} is not pinned by digest",
            hint="use REPO@sha256:<digest> (invoke build/push record it), or pass --allow-tag to accept a moving tag",
        )
    return image


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


def node_login(cloud: str | None, image: str, registry_login: str | None,
               pull_secret: str | None) -> RegistryLogin | None:
    """The login SkyPilot's nodes pull the image with; refuses the way that the cloud would ignore."""
    if registry_login is None and is_ecr(image) and cloud in AWS_IDENTITY_CLOUDS:
        # ECR tokens expire after 12 h, so the node logs in with its IAM role
        # (SkyPilot's empty-password path), as `--registry-login ecr` does.
        registry_login = "ecr"
    login = parse_registry_login(registry_login, image)
    if is_ecr(image) and cloud != "kubernetes" and (login is None or login.password_env is None):
        refuse_ecr_without_aws_identity(cloud, image, registry_login)
    if cloud == "kubernetes" and login:
        raise StackError(
            "on Kubernetes SkyPilot ignores registry login variables",
            hint="create a docker-registry secret in the namespace and pass --pull-secret NAME",
        )
    if pull_secret and cloud != "kubernetes":
        raise StackError("--pull-secret is for --cloud kubernetes", hint="on VMs use --registry-login USER:PASSWORD_ENV@SERVER")
    return login


def refuse_ecr_without_aws_identity(cloud: str | None, image: str, registry_login: str | None) -> None:
    """SkyPilot's ECR login without a password needs nodes that have an AWS identity (cloud aws).

    With an ECR server and an empty SKYPILOT_DOCKER_PASSWORD, SkyPilot runs
    `aws ecr get-login-password` on the node itself, with the node's instance
    profile (sky/provision/docker_utils.py DockerInitializer.initialize, before
    any credential is uploaded: sky/provision/provisioner.py). A GCP, Azure or
    other node has no such identity: the pull would fail after the GPUs are up.
    """
    if cloud in AWS_IDENTITY_CLOUDS:
        return
    where = f"nodes on {cloud}" if cloud else "nodes on a cloud SkyPilot picks (no --cloud)"
    given = "--registry-login ecr" if registry_login else "an ECR image without --registry-login"
    host = registry_host(image)
    raise StackError(
        f"{given}: {where} have no AWS identity for SkyPilot's ECR login (--image {image})",
        hint=(f"launch with --cloud aws, or give a token: export ECR_TOKEN=$(aws ecr get-login-password "
              f"--region {ecr_registry(image)[1]}) and --registry-login AWS:ECR_TOKEN@{host} (valid 12 h: "
              "enough for the pull at provisioning, not for a later recovery)"),
    )


def login_secrets(login: RegistryLogin) -> dict:
    """The task's secrets for SkyPilot's registry login."""
    # SkyPilot wants all three together, all in secrets (sky/task.py). An
    # empty password on ECR makes SkyPilot use the node's IAM role.
    return {
        "SKYPILOT_DOCKER_USERNAME": login.username,
        "SKYPILOT_DOCKER_PASSWORD": None if login.password_env else "",
        "SKYPILOT_DOCKER_SERVER": login.server,
    }


def login_note(login: RegistryLogin) -> str:
    """The rendered file's header line saying where the registry password comes from."""
    if login.password_env:
        return f"# Registry password: read from ${login.password_env} at launch (--secret SKYPILOT_DOCKER_PASSWORD)."
    return f"# Registry login: {login.server} through the node's IAM role (empty SKYPILOT_DOCKER_PASSWORD)."


def refuse_unreachable(image: str) -> None:
    """A cloud launch of an image in a registry on this machine: its nodes could never pull it."""
    if _LOCAL_REGISTRY.match(image):
        raise StackError(
            f"image {image} is in a registry only this machine can reach",
            hint="push it to a registry the cloud can pull from (invoke push), then launch",
        )
