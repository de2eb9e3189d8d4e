"""AWS access shared by the registry stack and the ECR login: region, credentials, one call.

Every boto3 call of the infra goes through :func:`aws_call`, so a missing
credential, a refused permission or an unreachable endpoint is one ``error:``
line with a hint, never a botocore traceback.

boto3 is imported inside functions only. It honours AWS_ENDPOINT_URL, which
is how the tests point all of this at a local moto server.
"""
from __future__ import annotations

import os

from skyrl_stack.errors import StackError

# API error codes that mean the credentials are wrong or lack a permission.
_ACCESS_CODES = {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException",
                 "AccessDenied", "AccessDeniedException"}


def resolve_region(region: str | None) -> str:
    """--region, else the AWS environment/profile's region; checked against botocore's region list."""
    import boto3

    session = boto3.session.Session()
    # AWS_REGION is the variable most AWS SDKs and the CLI read; botocore itself only reads AWS_DEFAULT_REGION.
    region = region or os.environ.get("AWS_REGION") or session.region_name
    if not region:
        raise StackError("no AWS region given", hint="pass --region (e.g. us-east-1) or set AWS_REGION")
    known = set()
    for partition in session.get_available_partitions():
        known.update(session.get_available_regions("cloudformation", partition_name=partition))
    if region not in known:
        raise StackError(
            f"unknown AWS region {region!r}",
            hint="use a region name such as us-east-1, us-west-2 or eu-west-1 (`aws ec2 describe-regions`)",
        )
    return region


def aws_session(region: str):
    """A boto3 session that has credentials, or a StackError saying how to provide them."""
    import boto3

    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise StackError(
            "no AWS credentials found (environment, ~/.aws, SSO or instance role)",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run `aws configure` / `aws sso login`",
        )
    return session


def aws_call(what: str, fn, *args, **kwargs):
    """One AWS call; credential, network and API errors become one StackError line."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(*args, **kwargs)
    except NoCredentialsError:
        raise StackError("no AWS credentials found", hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
    except ClientError as exc:
        raise api_error(what, exc) from None
    except BotoCoreError as exc:
        raise StackError(f"{what}: {one_line(str(exc))}", hint="check the network and AWS_ENDPOINT_URL if set") from None


def api_error(what: str, exc) -> StackError:
    """An error answer of the AWS API (botocore ClientError) as one line: what failed, its code and message."""
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "Error"), error.get("Message", str(exc))
    hint = "check the AWS credentials and their permissions (CloudFormation, ECR, IAM)" if code in _ACCESS_CODES else None
    return StackError(f"{what}: {code}: {one_line(message)}", hint=hint)


def one_line(text: str) -> str:
    """AWS messages and reasons carry newlines and runs of spaces; an error line has none."""
    return " ".join(str(text).split())
