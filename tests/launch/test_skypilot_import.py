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
