"""Image references: one parser, following the distribution reference grammar.

Every reference that enters the project (`--image`, `--repository`,
`--cache-ref`, build records, the registry stack's outputs) goes through
:func:`parse_reference` or one of its narrow forms, so build, push, render and
infra agree on what a registry, a repository, a tag and a digest are, and a
malformed one fails here with one line instead of at pull time on a cluster.

The grammar is transcribed (not copied) from github.com/distribution/reference:
reference.go (package comment "Grammar", Parse, RepositoryNameTotalLengthMax),
regexp.go (separator, domainNameComponent, ipv6address, tag, digestPat) and
normalize.go (splitDockerDomain, ParseNormalizedNamed); digests are validated as
github.com/opencontainers/go-digest algorithm.go does (registered algorithms,
exact lower-case hex length). Standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from skyrl_stack.errors import StackError

# reference.go grammar:
#   path-component   := alpha-numeric [separator alpha-numeric]*
#   alpha-numeric    := /[a-z0-9]+/
#   separator        := one '.', one or two '_', or any run of '-'   (regexp.go: (?:[._]|__|[-]+))
#   domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
#   host             := domain-name | IPv4address | "[" IPv6address "]"   (no zone ids)
#   domain           := host [":" port-number]
#   tag              := /[\w][\w.-]{0,127}/
#   digest           := algorithm ":" hex, algorithm components /[A-Za-z][A-Za-z0-9]*/ joined by [-_+.]
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN_RE = re.compile(rf"^{_HOST}(?::[0-9]+)?$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
# [\w] in Go's RE2 is ASCII only; Python's \w is Unicode, so spell it out.
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*):([0-9a-fA-F]{32,})$")
# reference.go: RepositoryNameTotalLengthMax, counted over the path (without the domain).
PATH_MAX = 255
# go-digest algorithm.go: the registered algorithms and their hex lengths (lower case only).
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
# normalize.go ParseNormalizedNamed: a bare 64-hex string is an image id, never a name.
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")

_REFERENCE_HINT = "use [HOST[:PORT]/]NAME[/NAME...][:TAG][@sha256:<64 hex>], names in lowercase, e.g. ghcr.io/me/skyrl-stack@sha256:..."
_REPOSITORY_HINT = "use host[:port]/name[/name] in lowercase, without tag or digest, e.g. ghcr.io/me/skyrl-stack"


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference, in the form the user wrote (no docker.io/library/ added)."""

    domain: str | None  # registry host[:port] as written; None = Docker Hub
    path: str  # repository path components joined by '/'
    tag: str | None = None
    digest: str | None = None  # "<algorithm>:<hex>"

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def registry(self) -> str:
        """The registry host ('docker.io' for Docker Hub short names)."""
        return self.domain or "docker.io"

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


class ReferenceError(StackError):
    """A reference that does not follow the grammar; the message names the part that fails."""


def _names_host(component: str) -> bool:
    """normalize.go splitDockerDomain: the first of several components is a registry host when it is
    'localhost' or contains '.' or ':'.

    splitDockerDomain also reads an upper-case first component as a host
    ('MyOrg/app' -> host 'MyOrg'); here that falls through to the path check and
    is refused as upper case: it is almost always a Docker Hub namespace typed
    with capitals, and a host without a dot is no registry anyone can push to.
    """
    return component == "localhost" or "." in component or ":" in component


def split_domain(name: str) -> tuple[str | None, str]:
    """'ghcr.io/me/app' -> ('ghcr.io', 'me/app'); 'me/app' -> (None, 'me/app'). No validation."""
    first, slash, rest = name.partition("/")
    if slash and _names_host(first):
        return first, rest
    return None, name


def _split_name(text: str) -> tuple[str, str | None, str | None]:
    """'name[:tag][@digest]' -> (name, tag, digest): '@' first, then the ':' after the last '/'
    (a ':' before it belongs to a host's port)."""
    name, at, digest = text.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, (digest if at else None)


def check_digest(digest: str, where: str = "") -> str:
    """go-digest's Parse + Validate: grammar, a registered algorithm, its exact lower-case hex length.

    `where` ("in image reference '...'") says where the digest came from.
    """
    what = f"digest {digest!r}{' ' + where if where else ''}"
    match = _DIGEST_RE.fullmatch(digest or "")
    if not match:
        raise ReferenceError(f"malformed {what}: not ALGORITHM:HEX (at least 32 hex digits)",
                             hint="a digest looks like sha256:<64 lower-case hex digits>")
    algorithm, hex_part = match.groups()
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise ReferenceError(f"malformed {what}: unsupported algorithm {algorithm!r}",
                             hint=f"registries accept {', '.join(DIGEST_HEX_LENGTHS)}; images are named by sha256")
    if len(hex_part) != length or hex_part != hex_part.lower():
        raise ReferenceError(f"malformed {what}: {algorithm} needs exactly {length} lower-case hex digits",
                             hint="copy the digest whole, e.g. from the build record or `docker buildx imagetools inspect`")
    return digest


def parse_reference(text: str, what: str = "image reference") -> ImageRef:
    """Parse '[domain/]path[:tag][@digest]' by the grammar; ReferenceError names what is wrong."""
    value = text if isinstance(text, str) else ""
    if not value:
        raise ReferenceError(f"empty {what}", hint=_REFERENCE_HINT)
    if value != value.strip() or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ReferenceError(f"malformed {what} {value!r}: it contains whitespace or control characters",
                             hint=_REFERENCE_HINT)
    if _IDENTIFIER_RE.fullmatch(value):
        raise ReferenceError(f"malformed {what} {value!r}: a bare 64-hex string is an image id, not a name",
                             hint=_REFERENCE_HINT)
    name, tag, digest = _split_name(value)
    domain, path = split_domain(name)
    if domain is not None and not _DOMAIN_RE.fullmatch(domain):
        raise ReferenceError(f"malformed {what} {value!r}: {domain!r} is not a registry host[:port]", hint=_REFERENCE_HINT)
    if path != path.lower() and _PATH_RE.fullmatch(path.lower()):
        raise ReferenceError(f"malformed {what} {value!r}: repository names must be lowercase", hint=_REFERENCE_HINT)
    if not _PATH_RE.fullmatch(path):
        raise ReferenceError(
            f"malformed {what} {value!r}: {path!r} is not a repository path (lowercase letters and digits, "
            "separated by '.', '_', '__', '-' or '/')",
            hint=_REFERENCE_HINT,
        )
    if len(path) > PATH_MAX:
        raise ReferenceError(f"malformed {what} {value!r}: the repository path is over {PATH_MAX} characters",
                             hint=_REFERENCE_HINT)
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise ReferenceError(
            f"malformed {what} {value!r}: tag {tag!r} is not 1-128 characters of letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')",
            hint=_REFERENCE_HINT,
        )
    if digest is not None:
        check_digest(digest, where=f"in {what} {value!r}")
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest)


def validate_repository(repository: str, what: str = "image repository") -> str:
    """A repository: a reference without tag or digest. Returns it unchanged."""
    try:
        ref = parse_reference(repository, what=what)
    except ReferenceError as exc:
        message = exc.message if exc.message.startswith(f"malformed {what}") else f"malformed {what} {repository!r}: {exc.message}"
        raise ReferenceError(message, hint=_REPOSITORY_HINT) from None
    if ref.tag is not None or ref.digest is not None:
        raise ReferenceError(f"malformed {what} {repository!r}: a repository has no tag or digest", hint=_REPOSITORY_HINT)
    return repository


def validate_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise ReferenceError(
            f"malformed image tag {tag!r}",
            hint="tags are 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        )
    return tag


def image_digest(reference: str) -> str | None:
    """The digest of a 'repo@<digest>' reference or of a bare digest; None for a tag or junk."""
    value = (reference or "").strip()
    try:
        if "@" not in value:
            return check_digest(value)
        return parse_reference(value).digest
    except ReferenceError:
        return None


def registry_host(reference: str) -> str:
    """The registry a repository or image reference lives in ('docker.io' for short names)."""
    domain, _ = split_domain(_split_name(reference or "")[0])
    return domain or "docker.io"


# Amazon ECR private registries: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn], the hosts
# Kubernetes' ecr-credential-provider (kubernetes/cloud-provider-aws, ecrPattern) and
# awslabs/amazon-ecr-credential-helper (ecr-login/api, ecrPattern) recognise; the isolated
# partitions (sc2s.sgov.gov, c2s.ic.gov) are left out: the registry stack is never there.
# Registry kinds (--registry of push, promote, render, launch): `generic` is any OCI
# registry (credentials from the environment or docker login); `ecr` is the registry
# stack's repository (infra/), its login from the recorded stack outputs.
REGISTRIES = ("generic", "ecr")

_ECR_HOST_RE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def ecr_registry(reference: str) -> tuple[str, str] | None:
    """(account, region) of a reference into an Amazon ECR registry; None for any other registry."""
    match = _ECR_HOST_RE.match(registry_host(reference))
    return (match["account"], match["region"]) if match else None


def is_ecr(reference: str) -> bool:
    """Whether the reference (repository or image, with a path) lives in Amazon ECR."""
    return ecr_registry(reference) is not None
