"""The suite's session-end check (tests/conftest.py engine_left_as_found): what counts as a leak.

The check itself runs on the real engine at the end of every session; here its rule is held
to cases a shared engine meets, other checkouts' tests working on it at the same time included.
"""
from __future__ import annotations

from tests.conftest import engine_leaks

IMAGE = "sha256:" + "a" * 64
USER_TAG = "127.0.0.1:5000/skyrl-stack:rehearsal-ray2.48.0-py3.11-cpu"  # the quickstart's, same image as the tests'


def test_a_users_tag_removed_by_the_session_is_a_leak():
    before = {USER_TAG: IMAGE, "127.0.0.1:5000/skyrl-stack-test-builder:rehearsal-x": IMAGE}
    assert engine_leaks(before, {}, set()) == [f"removed {USER_TAG}"]


def test_a_tag_left_under_this_sessions_temporary_registry_is_a_leak():
    after = {"127.0.0.1:41437/team/skyrl-stack:rehearsal-latest": IMAGE,
             "127.0.0.1:41437/team/skyrl-stack@sha256:" + "b" * 64: IMAGE}
    assert engine_leaks({}, after, {"127.0.0.1:41437"}) == [f"left {ref}" for ref in sorted(after)]


def test_other_checkouts_work_meanwhile_is_not_counted():
    before = {"127.0.0.1:5000/skyrl-stack-test-other:rehearsal-x": IMAGE,  # another checkout's test repository
              "127.0.0.1:39999/team/skyrl-stack:rehearsal-latest": IMAGE,  # another session's temporary registry
              "skyrl-stack-smoke-defect:1234abcd": IMAGE}  # a name older tests use
    after = {"127.0.0.1:40000/team/skyrl-stack:rehearsal-latest": IMAGE}  # not one of this session's hosts
    assert engine_leaks(before, after, {"127.0.0.1:41437"}) == []


def test_a_tag_that_moved_to_another_image_is_not_a_removal():
    """A user (or their build) may move their own tag meanwhile; only a name that is gone counts."""
    assert engine_leaks({USER_TAG: IMAGE}, {USER_TAG: "sha256:" + "c" * 64}, set()) == []


def test_this_sessions_own_test_repository_is_the_tests_whatever_its_name():
    """SKYRL_STACK_TEST_REPOSITORY may name any repository (CI, a user's registry): the tests' own images under it
    (the session's and its -revision/-coldstart ones) are theirs to remove, and a name that only starts alike is not."""
    import os
    import subprocess
    import sys

    from tests.support.paths import REPO_ROOT

    code = ("from tests.conftest import engine_leaks, TEST_REPOSITORY as R\n"
            "before = {R + ':rehearsal-x': 'i', R + '-revision:rehearsal-x': 'i', R + 'x:users': 'i'}\n"
            "print(engine_leaks(before, {}, set()))")
    env = dict(os.environ, SKYRL_STACK_TEST_REPOSITORY="registry.example:5000/ci/stack-tests")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['removed registry.example:5000/ci/stack-testsx:users']"
