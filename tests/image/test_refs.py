"""One parser for image references, checked against the distribution reference grammar.

The table transcribes the rules of github.com/distribution/reference (reference.go's
"Grammar" comment and Parse, regexp.go, normalize.go splitDockerDomain) and of
github.com/opencontainers/go-digest algorithm.go (registered algorithms, exact
hex length); each row names the rule it exercises.
"""
from __future__ import annotations

import json

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image.records import build_record_path, load_build_record
from skyrl_stack.image.refs import (ImageRef, ecr_registry, image_digest, is_ecr, parse_reference, registry_host,
                                   validate_repository)

SHA = "sha256:" + "ab" * 32

VALID = [
    # (reference, domain, path, tag, digest)
    ("ubuntu", None, "ubuntu", None, None),  # a single path component: Docker Hub
    ("me/skyrl-stack:v1", None, "me/skyrl-stack", "v1", None),  # 'me' has no '.'/':': a path, not a host
    (f"ghcr.io/me/skyrl-stack@{SHA}", "ghcr.io", "me/skyrl-stack", None, SHA),
    (f"ghcr.io/me/app:v1@{SHA}", "ghcr.io", "me/app", "v1", SHA),  # tag and digest together
    ("localhost/app", "localhost", "app", None, None),  # 'localhost' is always a host (splitDockerDomain)
    ("localhost:5000/a/b/c:latest", "localhost:5000", "a/b/c", "latest", None),
    ("127.0.0.1:5000/skyrl-stack-test:t", "127.0.0.1:5000", "skyrl-stack-test", "t", None),  # IPv4 host
    ("[::1]:5000/app", "[::1]:5000", "app", None, None),  # IPv6 in brackets
    ("Registry.Example.COM/app", "Registry.Example.COM", "app", None, None),  # hosts may be upper case
    ("my-host.io/a__b/c--d/e.f_g", "my-host.io", "a__b/c--d/e.f_g", None, None),  # separators: . _ __ -+
    ("x:" + "A" * 128, None, "x", "A" * 128, None),  # a tag of 128 characters, upper case allowed
    ("x:_tag", None, "x", "_tag", None),  # a tag may start with '_'
    ("a/" + "b" * 253, None, "a/" + "b" * 253, None, None),  # path of exactly 255 characters
    ("x@sha512:" + "0" * 128, None, "x", None, "sha512:" + "0" * 128),  # registered: sha512 (128 hex)
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/skyrl-stack", "123456789012.dkr.ecr.us-east-1.amazonaws.com",
     "skyrl-stack", None, None),
]

INVALID = [
    # (reference, words the one-line error must contain)
    ("", "empty"),
    ("UPPER/case", "lowercase"),  # upper-case first component: refused, not read as a host (see refs._names_host)
    ("ghcr.io/Me/app", "lowercase"),  # path components are lower case
    ("ghcr.io/me/app ", "whitespace"),
    (" ghcr.io/me/app", "whitespace"),
    ("ghcr.io/me/app:v1\nsetup: rm -rf /", "whitespace"),  # a line break never reaches image_id
    ("ghcr.io/me/app:v\x001", "control"),
    ("ghcr.io/me\u2028app", "control"),  # a Unicode line separator
    ("ghcr.io//app", "not a repository path"),  # empty path component
    ("ghcr.io/-app", "not a repository path"),  # a component starts with a letter or digit
    ("ghcr.io/app-", "not a repository path"),  # ... and ends with one
    ("ghcr.io/a...b", "not a repository path"),  # one '.' between alphanumerics
    ("ghcr.io/a___b", "not a repository path"),  # one or two '_', not three
    ("-host.io/app", "not a registry host"),  # a domain component starts alphanumeric
    ("host_name.io/app", "not a registry host"),  # '_' is not in a domain component
    ("[::1%eth0]:5000/app", "not a registry host"),  # IPv6 zone identifiers are excluded
    ("host.io:port/app", "not a registry host"),  # port-number is digits
    ("a/" + "b" * 254, "over 255"),  # RepositoryNameTotalLengthMax
    ("x:" + "a" * 129, "1-128"),  # a tag is at most 128 characters
    ("x:.tag", "1-128"),  # a tag does not start with '.'
    ("x:-tag", "1-128"),  # ... or '-'
    ("x:tág", "1-128"),  # [\w] is ASCII in Go's RE2
    ("x@sha256:abc", "ALGORITHM:HEX"),  # digest-hex is at least 32 digits
    ("x@sha256:" + "0" * 63, "exactly 64"),  # go-digest: sha256 is exactly 64 hex digits
    ("x@sha256:" + "0" * 65, "exactly 64"),
    ("x@sha256:" + "AB" * 32, "lower-case"),  # go-digest: /A-F/ disallowed
    ("x@md5:" + "0" * 32, "unsupported algorithm"),  # not a registered algorithm
    ("x@sha256" + "0" * 64, "ALGORITHM:HEX"),
    ("ab" * 32, "image id"),  # a bare 64-hex string is an identifier, not a name
    ("@" + SHA, "not a repository path"),  # a digest alone names no repository
]


@pytest.mark.parametrize("text, domain, path, tag, digest", VALID)
def test_valid_references_parse_into_their_parts(text, domain, path, tag, digest):
    ref = parse_reference(text)
    assert ref == ImageRef(domain=domain, path=path, tag=tag, digest=digest)
    assert str(ref) == text  # parts recombine to what was written: nothing is normalised away
    assert registry_host(text) == (domain or "docker.io")


@pytest.mark.parametrize("text, words", INVALID)
def test_invalid_references_are_refused_with_one_line(text, words):
    with pytest.raises(StackError, match=r"^(malformed|empty) (image reference|digest)") as err:
        parse_reference(text)
    assert words in err.value.message
    assert "\n" not in err.value.message  # one line, with the offending value escaped (repr)
    assert err.value.hint


@pytest.mark.parametrize("text", ["ghcr.io/me/app:v1", f"ghcr.io/me/app@{SHA}", "Bad/Repo"])
def test_a_repository_has_no_tag_or_digest(text):
    with pytest.raises(StackError, match="malformed image repository"):
        validate_repository(text)


def test_image_digest_reads_only_valid_digests():
    assert image_digest(f"ghcr.io/me/app@{SHA}") == SHA
    assert image_digest(SHA) == SHA
    assert image_digest("ghcr.io/me/app:v1") is None
    assert image_digest("ghcr.io/me/app@sha256:" + "0" * 63) is None


def test_a_build_record_with_a_malformed_reference_is_refused(state_dir):
    """Records are state on disk that ends up in image_id: the parser checks them on the way in."""
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.records import BuildRecord

    pins = load_pins()
    BuildRecord(variant="vllm", repository="ghcr.io/me/app", digest=SHA, tags=[], pins_digest=pins.digest(),
                pins=pins.raw, source_date_epoch=0, base_image="b", built_at="t", build_seconds=1,
                pushed={"ref": f"ghcr.io/me/app@{SHA}"}).save()
    assert load_build_record("vllm").pushed_ref == f"ghcr.io/me/app@{SHA}"
    path = build_record_path("vllm")
    data = json.loads(path.read_text())
    data["pushed"]["ref"] = "ghcr.io/me/app@sha256:0\nsetup: echo injected"
    path.write_text(json.dumps(data))
    with pytest.raises(StackError, match="malformed image reference|malformed pushed reference|whitespace") as err:
        load_build_record("vllm")
    assert "invoke build --variant vllm" in err.value.hint


ECR_HOSTS = [
    # (reference, (account, region) or None): the ecrPattern of kubernetes/cloud-provider-aws's
    # ecr-credential-provider and awslabs/amazon-ecr-credential-helper, without the isolated partitions
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/skyrl-stack", ("123456789012", "us-east-1")),
    (f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app@{SHA}", ("123456789012", "eu-west-1")),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app", ("123456789012", "us-gov-west-1")),  # FIPS
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app:v1", ("123456789012", "cn-north-1")),  # China
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com", None),  # a bare host is a Docker Hub path, not a registry
    ("12345.dkr.ecr.us-east-1.amazonaws.com/app", None),  # an account id has 12 digits
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com.example.io/app", None),  # a look-alike host elsewhere
    ("mirror.dkr.ecr.example.amazonaws.com.evil.io/app", None),
    ("public.ecr.aws/me/app", None),  # ECR Public: no ECR login, pulled anonymously
    ("ghcr.io/me/app", None),
]


@pytest.mark.parametrize("reference, expected", ECR_HOSTS)
def test_ecr_registries_are_recognised_by_their_whole_host(reference, expected):
    """One detector (refs.ecr_registry) for push, promote, render and the ECR login: a host that only
    contains '.dkr.ecr' and '.amazonaws.com' somewhere is no ECR registry (no ECR token, no immutable tags)."""
    assert ecr_registry(reference) == expected
    assert is_ecr(reference) is (expected is not None)

