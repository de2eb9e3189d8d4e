"""Two clean builds of the same pins give the same image digest.

SOURCE_DATE_EPOCH comes from the pins and BuildKit rewrites every timestamp
to it; logs, ldconfig's cache and sshd host keys are kept out of the layers.
This builds the rehearsal target twice with --no-cache through the real path.
"""
from __future__ import annotations

import pytest

from skyrl_stack.build import build_variants
from tests.conftest import TEST_BASE_IMAGE, TEST_CA_BUNDLE, TEST_REPOSITORY

pytestmark = pytest.mark.container


def test_two_clean_builds_give_the_same_digest(docker_engine, tmp_path, monkeypatch):
    digests = []
    for attempt in ("first", "second"):
        monkeypatch.setenv("SKYRL_STACK_STATE_DIR", str(tmp_path / attempt))
        (record,) = build_variants(["rehearsal"], TEST_REPOSITORY, base_image=TEST_BASE_IMAGE,
                                   ca_bundle=TEST_CA_BUNDLE, no_cache=True, progress="quiet")
        digests.append(record.digest)
    assert digests[0] == digests[1]
