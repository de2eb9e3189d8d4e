"""ECR login for `invoke push --registry ecr`: a docker auth_config from boto3.

ECR has no static password: `GetAuthorizationToken` returns base64("AWS:<token>"),
valid for 12 hours, for the registry host <account>.dkr.ecr.<region>.amazonaws.com.
The push passes the dict returned here to the docker SDK (`auth_config=`), so no
credential is written to ~/.docker/config.json. Cluster nodes do not use this:
they pull with their instance role (SkyPilot's ECR path, empty password).
"""
from __future__ import annotations

import base64

from skyrl_stack.errors import StackError
from skyrl_stack.image.refs import ecr_registry, registry_host


def parse_repository_uri(uri: str) -> tuple[str, str, str]:
    """'123456789012.dkr.ecr.us-east-1.amazonaws.com/skyrl-stack' -> (host, account, region)."""
    found = ecr_registry(uri)
    if found is None:
        raise StackError(
            f"not an ECR repository URI: {uri!r}",
            hint="expected <account>.dkr.ecr.<region>.amazonaws.com/<name>; `invoke infra.outputs --cloud aws` shows it",
        )
    return (registry_host(uri), *found)


def docker_auth_config(repository_uri: str) -> dict:
    """{'username': 'AWS', 'password': <token>, 'serveraddress': <host>} for docker push."""
    from skyrl_stack.infra.aws_api import aws_call, aws_session

    host, account, region = parse_repository_uri(repository_uri)
    ecr = aws_session(region).client("ecr")
    reply = aws_call(f"cannot get an ECR login token for {host}", ecr.get_authorization_token, registryIds=[account])
    data = reply["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if not password:
        raise StackError(f"ECR returned a malformed authorization token for {host}")
    return {"username": user, "password": password, "serveraddress": host}
