"""Image references: validation and the parts other modules need (host, ECR or not).

One place for Docker's reference grammar, so build, push, render and infra
agree on what a repository, a tag and a registry host are. Standard library only.
"""
from __future__ import annotations

import re

from skyrl_stack.errors import StackError

# Docker's reference grammar (distribution/reference): an optional registry
# host[:port] (recognised by a '.' or ':' or being 'localhost'), then lowercase
# path components; tags are [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$")
_PATH_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _names_host(component: str) -> bool:
    """Docker's rule: a first component is a registry host if it has '.' or ':' or is 'localhost'."""
    return "." in component or ":" in component or component == "localhost"


def validate_repository(repository: str) -> str:
    parts = (repository or "").split("/")
    if len(parts) > 1 and _names_host(parts[0]):
        host_ok, path = bool(_HOST_RE.match(parts[0])), parts[1:]
    else:
        host_ok, path = True, parts
    if not host_ok or not all(_PATH_RE.match(p) for p in path):
        raise StackError(
            f"malformed image repository {repository!r}",
            hint="use host[:port]/name[/name] in lowercase, without tag or digest, e.g. ghcr.io/me/skyrl-stack",
        )
    return repository


def validate_tag(tag: str) -> str:
    if not _TAG_RE.match(tag):
        raise StackError(
            f"malformed image tag {tag!r}",
            hint="tags are 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        )
    return tag


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_digest(reference: str) -> str | None:
    """'sha256:<hex>' from a digest or a 'repo@sha256:<hex>' reference; None for a tag or junk."""
    value = (reference or "").strip()
    if "@" in value:
        repository, value = value.rsplit("@", 1)
        if not repository:
            return None
    return value if _DIGEST_RE.match(value) else None


def registry_host(reference: str) -> str:
    """The registry a repository or image reference lives in ('docker.io' for short names)."""
    first, _, rest = reference.partition("/")
    if rest and _names_host(first):
        return first
    return "docker.io"


def is_ecr(reference: str) -> bool:
    """Amazon ECR: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]."""
    host = registry_host(reference)
    return ".dkr.ecr" in host and ".amazonaws.com" in host
