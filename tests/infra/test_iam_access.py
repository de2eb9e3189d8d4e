"""IAM policy evaluation of skyrl_stack.infra.iam_access (the rules that need no AWS; the stack's real
policies through boto3 and moto: test_node_identity).

Property-based (hypothesis, derandomized: a fixed seed and budget) for the wildcard matching: IAM's
`*` and `?` are glob wildcards, so for patterns without `[` Python's fnmatch (an independent
implementation) must agree, whatever regex metacharacters the ARN or action holds.
"""
from __future__ import annotations

import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.infra.iam_access import allows, missing

FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=300)
# ARN-ish characters plus every regex metacharacter (but `[`, which fnmatch treats as a set).
CHARS = st.sampled_from(list("ab:/-_.*?$^+(){}|\\1"))


@FIXED
@given(pattern=st.text(CHARS, max_size=12), value=st.text(st.sampled_from(list("ab:/-_.$^+(){}|\\1")), max_size=12))
def test_resource_wildcards_are_iams_globs(pattern, value):
    statements = [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": pattern}]
    assert allows(statements, "s3:GetObject", value) == fnmatch.fnmatchcase(value, pattern)


def test_actions_match_case_insensitively_and_resources_do_not():
    statements = [{"Effect": "Allow", "Action": ["ECR:Get*"], "Resource": "arn:aws:ecr:*:*:repository/skyrl-*"}]
    assert allows(statements, "ecr:GetDownloadUrlForLayer", "arn:aws:ecr:us-east-1:1:repository/skyrl-stack")
    assert not allows(statements, "ecr:GetDownloadUrlForLayer", "arn:aws:ecr:us-east-1:1:repository/SKYRL-stack")
    assert not allows(statements, "ecr:BatchGetImage", "arn:aws:ecr:us-east-1:1:repository/skyrl-stack")


def test_an_unconditional_deny_wins_and_a_conditional_one_is_not_counted():
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::b/*"}
    needs = [("s3:GetObject", "arn:aws:s3:::b/k"), ("s3:DeleteObject", "arn:aws:s3:::b/k")]
    assert missing([allow, deny], needs) == ["s3:DeleteObject"]
    # A condition cannot be evaluated here (e.g. aws:SecureTransport): an unknown never refuses a launch.
    conditional = {**deny, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    assert missing([allow, conditional], needs) == []


def test_not_action_and_not_resource():
    statements = [{"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"}]
    assert allows(statements, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not allows(statements, "iam:PassRole", "arn:aws:iam::1:role/r")
    assert not allows(statements, "s3:GetObject", "arn:aws:s3:::secret/k")
    assert missing([], [("ecr:BatchGetImage", "*")]) == ["ecr:BatchGetImage"]  # nothing granted, nothing allowed
