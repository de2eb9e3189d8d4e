"""skyrl_stack/launch/skypilot_import.py: SkyPilot imported with the collector held off, then frozen.

Each case runs in a fresh interpreter: the test process may already hold `sky`,
and a freeze there would outlive the test. No wall-clock assert: the check is on
what the helper did to the collector (the time it saves is in the benchmark).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT as ROOT

PROBE = """
import gc, json, sys
{before}
gc_enabled_inside = []
import builtins
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    if name == "sky.utils.common" and not gc_enabled_inside:  # imported while sky/__init__.py runs
        gc_enabled_inside.append(gc.isenabled())
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
from skyrl_stack.launch.skypilot_import import import_sky
sky = import_sky()
builtins.__import__ = real_import
frozen = gc.get_freeze_count()
again = import_sky()
print(json.dumps({{"enabled_after": gc.isenabled(), "enabled_inside": gc_enabled_inside, "frozen": frozen,
                   "frozen_again": gc.get_freeze_count(), "same": again is sky, "task": hasattr(sky, "Task")}}))
"""


def _probe(before: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("before, enabled_after", [("", True), ("gc.disable()", False)])
def test_sky_is_imported_without_collections_and_frozen_once(before, enabled_after):
    seen = _probe(before)
    assert seen["task"] and seen["same"]
    assert seen["enabled_inside"] == [False]  # the collector was off while SkyPilot imported
    assert seen["enabled_after"] is enabled_after  # and is left as the caller had it
    assert seen["frozen"] > 100_000  # SkyPilot's objects are out of every later collection's (and exit's) way
    assert seen["frozen_again"] == seen["frozen"]  # a second call changes nothing


@pytest.mark.parametrize("command", ["render", "status"])
def test_a_missing_skypilot_is_one_line_saying_how_to_install_it(command, state_dir, monkeypatch):
    """Every command that needs SkyPilot goes through require_sky. SkyPilot is hidden by the import
    system's own rule (None in sys.modules makes `import sky` raise ImportError), not by a fake module."""
    from skyrl_stack.errors import StackError
    from skyrl_stack.launch import clusters, render
    from skyrl_stack.launch.task_spec import TaskSpec
    from tests.launch.test_render import FAKE_DIGEST, FAKE_REPO

    monkeypatch.setitem(sys.modules, "sky", None)
    spec = TaskSpec(variant="rehearsal", image=f"{FAKE_REPO}@{FAKE_DIGEST}", backend=None, gpus=None, disk_size=20)
    run = {"render": lambda: render.render(spec), "status": clusters.status}[command]
    with pytest.raises(StackError, match=r"^SkyPilot is not installed: import of sky halted") as err:
        run()
    assert err.value.hint == {"render": "pip install 'skypilot[aws]' (or --no-validate)",
                              "status": "pip install 'skypilot[aws]'"}[command]
    assert not (state_dir.parent / "skypilot").exists()  # nothing written
