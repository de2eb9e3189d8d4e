"""`invoke promote`: move the human tags onto an already-pushed digest, registry-side.

The CI's GPU job pulls the digest the release job pushed, smoke-tests it on a
GPU and then calls this: the gate record of that digest (written by that
`invoke smoke`) must vouch for it, and the tags are moved without the image in
the local engine, by copying the manifest's bytes under the tag through the
registry's HTTP API (OCI distribution spec: GET then PUT
/v2/<name>/manifests/<reference>), so the tag names exactly that digest.
(`docker buildx imagetools create --tag` wraps a single manifest in a new
index, which has another digest.)
"""
from __future__ import annotations

import re

from skyrl_stack import engine
from skyrl_stack.errors import StackError, first_line
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.push import (auth_config, check_tag_moved, human_tags_for, refuse_taken_immutable_tags,
                                    remote_digest, targets_ecr)
from skyrl_stack.image.refs import image_digest, registry_host, validate_repository
from skyrl_stack.reporter import step

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
TIMEOUT_S = 60


def split_image(image: str) -> tuple[str, str]:
    """(repository, digest) of REPO@sha256:...; a tag or a bare digest is refused."""
    digest = image_digest(image or "")
    if digest is None or "@" not in image:
        raise StackError(f"not an image by digest: {image!r}",
                         hint="give REPOSITORY@sha256:<digest>, as `invoke push` prints it")
    return validate_repository(image.rsplit("@", 1)[0]), digest


def promote(variant: str, image: str, *, registry: str = "generic", skip_smoke_gate: bool = False,
            immutable: bool | None = None) -> list[str]:
    """Move `variant`'s human tags to the digest in `image`; returns the tags moved."""
    from skyrl_stack.smoke.gate import decide

    pins = load_pins()
    pins.variant(variant)  # an unknown name fails before anything else
    repository, digest = split_image(image)
    gate = decide(digest, skip_smoke_gate=skip_smoke_gate, action=f"promote {variant}")
    if not gate.human_tags:
        raise StackError(
            f"promote refused: {digest} is CPU-checked only (tiers {', '.join(gate.missing_tiers)} did not pass on a GPU)",
            hint=f"run `invoke smoke --image {image}` on a GPU machine first; --skip-smoke-gate moves the tags "
                 "anyway and records the missing tiers",
        )
    run = gate.run or {}
    if run.get("variant") and run["variant"] != variant:
        raise StackError(f"the smoke run of {digest} was of variant {run['variant']}, not {variant}",
                         hint="promote the variant that was tested")
    if run.get("pins_digest") and run["pins_digest"] != pins.digest():
        raise StackError(f"{digest} holds pins {run['pins_digest']}, this checkout's pins.toml is {pins.digest()}",
                         hint="promote from the commit the image was built from; its tags are named after its pins")
    if immutable is None:
        immutable = targets_ecr(repository, registry)
    tags = human_tags_for(pins, variant, repository, immutable)
    auth = auth_config(repository, registry)
    client = engine.client()
    if remote_digest(client, f"{repository}@{digest}", auth, missing_ok=True) != digest:
        raise StackError(f"{repository} does not hold {digest}", hint="push it first: invoke push --variant V")
    if immutable:
        refuse_taken_immutable_tags(client, tags, digest, auth)
    api = RegistryAPI(repository, auth or _docker_login(repository))
    manifest, media_type = api.get_manifest(digest)
    for ref in tags:
        api.put_manifest(ref.rsplit(":", 1)[1], manifest, media_type)
        check_tag_moved(client, ref, digest, auth, after="the promotion")
    step(f"promoted {repository}@{digest}: {len(tags)} human tag(s)")
    return tags


def _docker_login(repository: str) -> dict | None:
    """What `docker login` stored for the registry (docker-py reads the config and credential helpers)."""
    import docker

    found = docker.auth.load_config().resolve_authconfig(registry_host(repository)) or {}
    user, password = found.get("username") or found.get("Username"), found.get("password") or found.get("Password")
    return {"username": user, "password": password} if user and password else None


class RegistryAPI:
    """The few calls of the OCI distribution API that moving a tag needs, with Basic or token auth."""

    def __init__(self, repository: str, auth: dict | None):
        import requests

        host = registry_host(repository)
        self.name = repository.split("/", 1)[1] if repository.startswith(host + "/") else repository
        if host == "docker.io":
            host = "registry-1.docker.io"
            self.name = self.name if "/" in self.name else f"library/{self.name}"
        # Docker's own rule: loopback registries speak plain HTTP, every other one TLS.
        scheme = "http" if re.match(r"^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$", host) else "https"
        self.base = f"{scheme}://{host}/v2"
        self.auth = (auth["username"], auth["password"]) if auth else None
        self.session = requests.Session()

    def get_manifest(self, digest: str) -> tuple[bytes, str]:
        response = self._call("GET", f"manifests/{digest}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if response.headers.get("Docker-Content-Digest", digest) != digest:
            raise StackError(f"the registry answered {digest} with {response.headers['Docker-Content-Digest']}",
                             hint="no tag was moved; check for a proxy rewriting manifests")
        return response.content, response.headers.get("Content-Type", MANIFEST_TYPES[0])

    def put_manifest(self, tag: str, manifest: bytes, media_type: str) -> None:
        self._call("PUT", f"manifests/{tag}", data=manifest, headers={"Content-Type": media_type})

    def _call(self, method: str, path: str, **kwargs):
        import requests

        url = f"{self.base}/{self.name}/{path}"
        try:
            response = self.session.request(method, url, timeout=TIMEOUT_S, **kwargs)
            if response.status_code == 401:
                self._authenticate(response.headers.get("WWW-Authenticate", ""))
                response = self.session.request(method, url, timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise StackError(f"registry {url} unreachable: {first_line(exc)}", hint="no further tag was moved") from None
        if response.status_code >= 400:
            raise StackError(f"registry refused {method} {url}: HTTP {response.status_code} {first_line(response.text)}",
                             hint="check the credentials (push rights) and the repository; no further tag was moved")
        return response

    def _authenticate(self, challenge: str) -> None:
        """Answer a 401: Basic with the credentials, or a Bearer token from the realm it names."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if challenge.lower().startswith("basic"):
            self.session.auth = self.auth
            return
        if not challenge.lower().startswith("bearer") or "realm" not in params:
            raise StackError(f"registry asks for an unknown login: {first_line(challenge)}", hint="no tag was moved")
        query = {"scope": f"repository:{self.name}:pull,push"}
        if "service" in params:
            query["service"] = params["service"]
        response = self.session.get(params["realm"], params=query, auth=self.auth, timeout=TIMEOUT_S)
        if response.status_code != 200:
            raise StackError(f"registry token service refused the login: HTTP {response.status_code}",
                             hint="set SKYRL_STACK_REGISTRY_USER/PASSWORD or `docker login`; no tag was moved")
        body = response.json()
        self.session.headers["Authorization"] = f"Bearer {body.get('token') or body.get('access_token')}"
