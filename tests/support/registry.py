"""A throwaway registry: Debian's docker-registry as a plain process, htpasswd auth."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests

USER = "tester"
PASSWORD = "correct-horse"


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
        self.stop()
        self.log.close()

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
