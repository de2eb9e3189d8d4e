"""Reproducible images, built incrementally.

Two clean builds of the same pins give the same image digest. No timestamp is
rewritten at export (that re-compresses every layer on every build): each RUN
clamps the mtimes of what it made to SOURCE_DATE_EPOCH (the Dockerfile's
SHELL), files enter through bind mounts and `cp`, logs, ldconfig's cache and
sshd host keys are kept out of the layers, and BuildKit writes whiteouts with
time 0. This builds the rehearsal target through the real path.
"""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile

import pytest

from skyrl_stack.image.bake import DEFAULT_COMPRESSION
from skyrl_stack.image.build import build_variants
from tests.conftest import TEST_BASE_IMAGE, TEST_CA_BUNDLE, TEST_REPOSITORY

pytestmark = pytest.mark.container


def test_two_clean_builds_give_the_same_digest(docker_engine, tmp_path, monkeypatch):
    digests = []
    for attempt in ("first", "second"):
        monkeypatch.setenv("SKYRL_STACK_WORKSPACE", str(tmp_path / attempt))
        (record,) = build_variants(["rehearsal"], TEST_REPOSITORY, base_image=TEST_BASE_IMAGE,
                                   ca_bundle=TEST_CA_BUNDLE, no_cache=True, progress="quiet")
        digests.append(record.digest)
    assert digests[0] == digests[1]


def _layers(ref: str, path) -> list[tuple[str, bytes]]:
    """(media type, blob) of each layer of ref, bottom first, from `docker save` (an OCI layout)."""
    subprocess.run(["docker", "image", "save", "--output", str(path), ref], check=True)
    with tarfile.open(path) as tar:
        def blob(digest):
            return tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}").read()
        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        return [(layer["mediaType"], blob(layer["digest"])) for layer in manifest["layers"]]


def _members(media_type: str, data: bytes) -> list[tarfile.TarInfo]:
    if media_type.endswith("+zstd"):
        data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    elif media_type.endswith("+gzip"):
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_no_file_the_build_made_is_newer_than_source_date_epoch(rehearsal_image, tmp_path):
    """What the digest test guards, layer by layer, naming the offending paths: every entry
    in every layer above the base has mtime <= SOURCE_DATE_EPOCH (a COPY, a WORKDIR or a RUN
    without the clamp shows up here as wall-clock times). Also: every layer, the base's too,
    has the default compression (force-compression)."""
    base_layers = int(subprocess.run(["docker", "image", "inspect", "--format", "{{len .RootFS.Layers}}",
                                      TEST_BASE_IMAGE], capture_output=True, text=True, check=True).stdout)
    layers = _layers(rehearsal_image.ref, tmp_path / "image.tar")
    assert {media_type for media_type, _ in layers} == {f"application/vnd.oci.image.layer.v1.tar+{DEFAULT_COMPRESSION}"}
    epoch = rehearsal_image.source_date_epoch
    newer = [(number, member.name, int(member.mtime))
             for number, (media_type, data) in enumerate(layers[base_layers:], start=base_layers)
             for member in _members(media_type, data) if member.mtime > epoch]
    assert newer == []
