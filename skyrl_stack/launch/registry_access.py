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
from skyrl_stack.image.refs import is_ecr, parse_reference
from skyrl_stack.launch.task_spec import RegistryLogin, parse_registry_login

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
    if registry_login is None and is_ecr(image) and cloud != "kubernetes":
        # ECR tokens expire after 12 h, so the node logs in with its IAM role
        # (SkyPilot's empty-password path), as `--registry-login ecr` does.
        registry_login = "ecr"
    login = parse_registry_login(registry_login, image)
    if cloud == "kubernetes" and login:
        raise StackError(
            "on Kubernetes SkyPilot ignores registry login variables",
            hint="create a docker-registry secret in the namespace and pass --pull-secret NAME",
        )
    if pull_secret and cloud != "kubernetes":
        raise StackError("--pull-secret is for --cloud kubernetes", hint="on VMs use --registry-login USER:PASSWORD_ENV@SERVER")
    return login


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
