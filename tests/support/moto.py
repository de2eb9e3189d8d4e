"""moto's AWS endpoint as a real server process (`moto_server`), for boto3 and SkyPilot over HTTP."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.registry import free_port


@contextlib.contextmanager
def moto_server(env: dict | None = None):
    """Start moto_server on a free 127.0.0.1 port; yields its URL once it answers; terminated after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto_server did not start", pytrace=False)
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
