"""A throwaway registry: Debian's docker-registry as a plain process, htpasswd auth."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests

USER = "tester"
PASSWORD = "correct-horse"


# Hosts (127.0.0.1:<port>) of the temporary registries and proxies this process started: a local
# tag under one outlives it only by mistake (the engine would try to push or pull a dead address).
# tests/conftest.py checks at the end of the session that none is left.
TEMPORARY_HOSTS: set[str] = set()


def engine_refs() -> dict[str, str] | None:
    """{reference: image id} of every name the engine holds: repository:tag, or repository@digest for a
    name without a tag (what a pull or push by digest can leave); None without an engine."""
    listed = subprocess.run(["docker", "image", "ls", "--digests", "--no-trunc", "--format",
                             "{{.Repository}} {{.Tag}} {{.Digest}} {{.ID}}"], capture_output=True, text=True)
    if listed.returncode != 0:
        return None
    refs = {}
    for repository, tag, digest, image in (line.split() for line in listed.stdout.splitlines()):
        if repository == "<none>":
            continue
        refs[f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}"] = image
    return refs


def remove_local_tags(host: str) -> None:
    """Remove every local name under host/ (by name: an image goes with its last one, never by id)."""
    ours = [ref for ref in engine_refs() or {} if ref.startswith(f"{host}/")]
    if ours:
        subprocess.run(["docker", "image", "rm", *ours], capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RegistryProcess:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.user = USER
        self.password = PASSWORD
        self.process: subprocess.Popen | None = None
        TEMPORARY_HOSTS.add(self.host)

    def __enter__(self) -> "RegistryProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        htpasswd = self.root / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), USER, PASSWORD], check=True, capture_output=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
            f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n"
        )
        self.log = open(self.root / "registry.log", "w")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://{self.host}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"registry did not start on {self.host}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        """Stop it and remove the local tags under its host (a push tags the image there first)."""
        self.stop()
        self.log.close()
        remove_local_tags(self.host)

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest the registry itself reports for repo:reference (None if absent)."""
        response = requests.head(
            f"http://{self.host}/v2/{repo}/manifests/{reference}",
            auth=(USER, PASSWORD),
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json"},
            timeout=10,
        )
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None

    def tags(self, repo: str) -> list[str]:
        response = requests.get(f"http://{self.host}/v2/{repo}/tags/list", auth=(USER, PASSWORD), timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    def pull_by_digest(self, repo: str, digest: str) -> int:
        """Pull repo@digest from the registry itself, as an engine would, and check every byte: the manifest
        and each blob it names (config, layers) must hash to their digests. Returns the bytes pulled.
        (Not `docker pull`: the engine already holds the image, and removing it there would take the
        user's own tags of the same image with it.)"""
        import hashlib
        import json

        manifest = requests.get(f"http://{self.host}/v2/{repo}/manifests/{digest}", auth=(USER, PASSWORD), timeout=30,
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                   "application/vnd.docker.distribution.manifest.v2+json"})
        manifest.raise_for_status()
        assert "sha256:" + hashlib.sha256(manifest.content).hexdigest() == digest, "manifest bytes != its digest"
        pulled = len(manifest.content)
        for blob in [json.loads(manifest.content)["config"], *json.loads(manifest.content)["layers"]]:
            hasher = hashlib.sha256()
            with requests.get(f"http://{self.host}/v2/{repo}/blobs/{blob['digest']}", auth=(USER, PASSWORD),
                              timeout=60, stream=True) as response:
                response.raise_for_status()
                for chunk in response.iter_content(1 << 20):
                    hasher.update(chunk)
                    pulled += len(chunk)
            assert "sha256:" + hasher.hexdigest() == blob["digest"], f"blob {blob['digest']} has other bytes"
        return pulled
