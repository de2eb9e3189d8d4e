"""Compressed and unpacked bytes of the wheels a lock installs, measured once from the wheels themselves.

A wheel is a zip: its central directory, at the end of the file, lists every member's uncompressed
size. Two HTTP range requests per wheel (the end-of-directory record, then the directory) give the
bytes a node writes when it installs the wheel, without downloading the wheel (PyPI's file host
serves ranges, as pip's lazy wheel relies on). `python -m skyrl_stack.dev.wheel_sizes` measures the
wheels of SkyRL's lock (tests/data/skyrl-1ed499c, both GPU extras), the rehearsal lock and uv, and
writes tests/data/skyrl-1ed499c/wheel-sizes.json; `invoke bench --part bytes` reads that file and
never goes online.

Wheels PyPI does not host are not measured here: torch/torchvision +cu128 (PyTorch's index),
flash-attn (a GitHub release asset), flashinfer's prebuilt wheel (PyTorch's index). torch and
torchvision get PyPI's build of the same release (CUDA 12.6) as a stand-in, recorded as such.
"""
from __future__ import annotations

import json
import re
import ssl
import struct
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

PYPI_FILES = "https://files.pythonhosted.org/"
# PyPI's builds of the releases SkyRL's lock takes from PyTorch's cu128 index: the same code with
# CUDA 12.6 kernels, the nearest published size (an estimate of the +cu128 wheel).
STAND_INS = {"torch": ("2.7.1", "torch-2.7.1-cp312-cp312-manylinux_2_28_x86_64.whl"),
             "torchvision": ("0.22.1", "torchvision-0.22.1-cp312-cp312-manylinux_2_28_x86_64.whl")}


def _context() -> ssl.SSLContext:
    import os

    bundle = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    return ssl.create_default_context(cafile=bundle if Path(bundle).is_file() else None)


def _get(url: str, byte_range: str | None = None) -> tuple[bytes, str]:
    headers = {"Range": byte_range} if byte_range else {}
    headers["Accept"] = "application/vnd.pypi.simple.v1+json" if "/simple/" in url else "*/*"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=_context(), timeout=60) as r:
        return r.read(), r.headers.get("Content-Range", "")


def central_directory_sizes(directory: bytes) -> tuple[int, int]:
    """(sum of members' uncompressed sizes, member count) from a zip's central directory bytes
    (APPNOTE.TXT 4.3.12; a zip64 extra field, id 1, carries sizes that do not fit 32 bits)."""
    total = count = offset = 0
    while offset < len(directory):
        (signature,) = struct.unpack_from("<I", directory, offset)
        if signature != 0x02014B50:
            raise ValueError(f"not a central directory entry at byte {offset}")
        (size,) = struct.unpack_from("<I", directory, offset + 24)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", directory, offset + 28)
        if size == 0xFFFFFFFF:
            extra = directory[offset + 46 + name_len: offset + 46 + name_len + extra_len]
            at = 0
            while at + 4 <= len(extra):
                header, length = struct.unpack_from("<HH", extra, at)
                if header == 1:
                    (size,) = struct.unpack_from("<Q", extra, at + 4)
                    break
                at += 4 + length
        total += size
        count += 1
        offset += 46 + name_len + extra_len + comment_len
    return total, count


def measure(url: str) -> dict:
    """{"bytes": the wheel's size, "unpacked": its members' bytes, "files": member count} by range requests."""
    tail, content_range = _get(url, "bytes=-65536")
    size = int(content_range.rsplit("/", 1)[1])
    end = tail.rfind(b"PK\x05\x06")
    directory_size, directory_offset = struct.unpack_from("<II", tail, end + 12)
    zip64 = tail.rfind(b"PK\x06\x06")
    if directory_offset == 0xFFFFFFFF and zip64 >= 0:
        directory_size, directory_offset = struct.unpack_from("<QQ", tail, zip64 + 40)
    directory, _ = _get(url, f"bytes={directory_offset}-{directory_offset + directory_size - 1}")
    unpacked, files = central_directory_sizes(directory)
    return {"bytes": size, "unpacked": unpacked, "files": files}


def _pypi_file(package: str, filename: str = "", sha256: set[str] | None = None) -> str:
    """The URL of one of a project's files on PyPI (by file name, or by one of the hashes)."""
    listing = json.loads(_get(f"https://pypi.org/simple/{package}/")[0])
    for entry in listing["files"]:
        if entry["filename"] == filename or (sha256 and entry["hashes"].get("sha256") in sha256):
            if entry["filename"].endswith(".whl"):
                return entry["url"]
    raise LookupError(f"{package}: no file {filename or 'with the locked hashes'} on PyPI")


def _rehearsal_wheels(lock: str) -> list[str]:
    """The URLs of the rehearsal lock's wheels for CPython 3.11 linux x86_64 (by the lock's hashes)."""
    from packaging.tags import cpython_tags, compatible_tags
    from packaging.utils import parse_wheel_filename

    from skyrl_stack.image.layers import entries

    platforms = [f"manylinux_2_{g}_x86_64" for g in range(36, 4, -1)] + ["manylinux2014_x86_64", "linux_x86_64"]
    supported = set(cpython_tags((3, 11), platforms=platforms)) | set(compatible_tags((3, 11), "cp311", platforms=platforms))
    urls = []
    for name, entry in entries(lock):
        hashes = set(re.findall(r"sha256:([0-9a-f]{64})", entry))
        listing = json.loads(_get(f"https://pypi.org/simple/{name}/")[0])
        url = next(f["url"] for f in listing["files"] if f["hashes"].get("sha256") in hashes
                   and f["filename"].endswith(".whl") and supported & set(parse_wheel_filename(f["filename"])[3]))
        urls.append(url)
    return urls


def main(argv: list[str] | None = None) -> int:
    import gzip
    import subprocess
    import tempfile

    from skyrl_stack.image import layers
    from skyrl_stack.project import project_root

    root = project_root()
    data = root / "tests" / "data" / "skyrl-1ed499c"
    with tempfile.TemporaryDirectory() as project:
        (Path(project) / "pyproject.toml").write_bytes((data / "pyproject.toml").read_bytes())
        lock_text = gzip.decompress((data / "uv.lock.gz").read_bytes()).decode()
        (Path(project) / "uv.lock").write_text(lock_text)
        (Path(project) / "skyrl-gym").mkdir()
        uv = str(Path(sys.executable).parent / "uv")
        wanted = set()
        for extra in ("vllm", "sglang"):
            export = subprocess.run([uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--extra", extra],
                                    cwd=project, capture_output=True, text=True, check=True).stdout
            wanted |= {w["url"] for _, w in layers.locked_wheels(export, lock_text) if w and
                       w["url"].startswith(PYPI_FILES)}
    stand_ins = {name: _pypi_file(name, filename) for name, (_, filename) in STAND_INS.items()}
    uv_url = _pypi_file("uv", sha256={load_uv_sha(root)})
    rehearsal = _rehearsal_wheels((root / "docker" / "rehearsal" / "requirements.lock").read_text())
    urls = sorted(wanted | set(stand_ins.values()) | {uv_url} | set(rehearsal))
    with ThreadPoolExecutor(8) as pool:
        sizes = dict(zip(urls, pool.map(measure, urls)))
    out = data / "wheel-sizes.json"
    out.write_text(json.dumps({
        "measured": str(date.today()),
        "how": "HTTP range requests for each wheel's zip central directory on files.pythonhosted.org "
               "(skyrl_stack/dev/wheel_sizes.py): bytes = the file's size, unpacked = its members' sizes",
        "stand_ins": {name: {"for": f"{name} {version}+cu128 (PyTorch's cu128 index, not reachable here)",
                             "url": stand_ins[name]} for name, (version, _) in STAND_INS.items()},
        "uv": uv_url, "rehearsal": rehearsal, "wheels": sizes}, indent=1, sort_keys=True) + "\n")
    print(f"{len(sizes)} wheels measured: {out}")
    return 0


def load_uv_sha(root: Path) -> str:
    """The pinned uv wheel's sha256 ([python] uv_sha256 in pins.toml)."""
    import tomllib

    return tomllib.loads((root / "skyrl_stack" / "image" / "pins.toml").read_text())["python"]["uv_sha256"]


if __name__ == "__main__":
    raise SystemExit(main())
