"""What an EC2 instance profile's role may do, read from IAM (boto3), for the launch's identity check.

- role_statements: the role behind an instance profile and the statements of
  its inline and attached managed policies (their default versions).
- missing: which of the (action, resource) pairs a run needs those
  statements do not allow.

The evaluation is IAM's core rule on identity policies: an explicit Deny wins,
otherwise some Allow must match the action and the resource (`*` and `?`
wildcards; actions case-insensitive; NotAction/NotResource honoured). Not
evaluated: conditions (a conditional Allow counts as allowing, a conditional
Deny as not denying, so an unknown never refuses a launch), permission
boundaries, SCPs and resource policies. So "missing" means the role's own
policies do not grant it: what the launch refuses on.

boto3 is imported inside functions only (aws_api.py).
"""
from __future__ import annotations

import json
import re
from urllib.parse import unquote

from skyrl_stack.infra.aws_api import aws_call


def role_statements(session, profile: str) -> tuple[str | None, list[dict]]:
    """(role name, its policy statements) behind the instance profile; (None, []) when the profile
    does not exist or holds no role. IAM errors other than "no such profile" raise StackError (aws_call)."""
    iam = session.client("iam")
    roles = aws_call(f"cannot read instance profile {profile}", _profile_roles, iam, profile)
    if not roles:
        return None, []
    role = roles[0]["RoleName"]  # an instance profile holds at most one role
    documents = []
    inline = aws_call(f"cannot list the policies of role {role}", iam.list_role_policies, RoleName=role)
    for name in inline["PolicyNames"]:
        documents.append(aws_call(f"cannot read policy {name} of role {role}", iam.get_role_policy,
                                  RoleName=role, PolicyName=name)["PolicyDocument"])
    attached = aws_call(f"cannot list the managed policies of role {role}", iam.list_attached_role_policies,
                        RoleName=role)
    for policy in attached["AttachedPolicies"]:
        arn = policy["PolicyArn"]
        version = aws_call(f"cannot read policy {arn}", iam.get_policy, PolicyArn=arn)["Policy"]["DefaultVersionId"]
        documents.append(aws_call(f"cannot read policy {arn}", iam.get_policy_version, PolicyArn=arn,
                                  VersionId=version)["PolicyVersion"]["Document"])
    return role, [statement for document in documents for statement in _statements(document)]


def _profile_roles(iam, profile: str) -> list[dict] | None:
    """The profile's roles, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return None
        raise  # aws_call words it


def _statements(document) -> list[dict]:
    """A policy document's statements (IAM returns documents URL-encoded JSON from some calls, dicts from boto3)."""
    if isinstance(document, str):
        document = json.loads(unquote(document))
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def missing(statements: list[dict], needs: list[tuple[str, str]]) -> list[str]:
    """The actions of `needs` ((action, resource ARN) pairs) that the statements do not allow."""
    return [action for action, resource in needs if not allows(statements, action, resource)]


def allows(statements: list[dict], action: str, resource: str) -> bool:
    matching = [s for s in statements if _matches(s, action, resource)]
    if any(s.get("Effect") == "Deny" and not s.get("Condition") for s in matching):
        return False
    return any(s.get("Effect") == "Allow" for s in matching)


def _matches(statement: dict, action: str, resource: str) -> bool:
    if "NotAction" in statement:
        action_ok = not _any_match(statement["NotAction"], action, case=False)
    else:
        action_ok = _any_match(statement.get("Action", []), action, case=False)
    if "NotResource" in statement:
        resource_ok = not _any_match(statement["NotResource"], resource, case=True)
    else:
        resource_ok = _any_match(statement.get("Resource", []), resource, case=True)
    return action_ok and resource_ok


def _any_match(patterns, value: str, case: bool) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return any(_wildcard(pattern, case).fullmatch(value) for pattern in patterns)


def _wildcard(pattern: str, case: bool) -> re.Pattern:
    """IAM's wildcards: `*` any run of characters, `?` one; nothing else is special."""
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body, 0 if case else re.IGNORECASE)
