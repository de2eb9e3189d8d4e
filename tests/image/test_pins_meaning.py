"""pins.toml values checked for what they mean (skyrl_stack/image/pins_meaning.py), not only their types.

SkyPilot's ports come from SkyPilot's own code (tests/launch/test_ray_ports.py
skypilot_ports), SkyRL's engine extras from its pyproject at the pinned commit
(tests/data/skyrl-1ed499c); each bad pins file is a real file loaded by the
real loader, and one through the real `invoke` command line.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.pins_meaning import ENGINE_EXTRAS, EPHEMERAL_START, SKYPILOT_PORTS, meaning_errors
from tests.image.test_pins import real_raw, write_pins
from tests.launch.test_ray_ports import skypilot_ports
from tests.support.paths import DATA, REPO_ROOT

FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=150)


def test_the_real_pins_mean_what_they_should():
    assert meaning_errors(real_raw()) == []


def test_skypilots_ports_are_read_from_skypilots_code():
    theirs = {(r.start, r.stop - 1) for r in skypilot_ports().values()}
    assert set(SKYPILOT_PORTS.values()) == theirs


def test_the_engine_extras_are_skyrls_and_conflict_there():
    project = tomllib.loads((DATA / "skyrl-1ed499c" / "pyproject.toml").read_text())
    assert set(ENGINE_EXTRAS) <= set(project["project"]["optional-dependencies"])
    conflicts = [{item["extra"] for item in group} for group in project["tool"]["uv"]["conflicts"]]
    assert set(ENGINE_EXTRAS) in conflicts  # two images, one extra each


def _edit(raw: dict, path: str, value) -> dict:
    *tables, key = path.split(".")
    node = raw
    for table in tables:
        node = node[table]
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return raw


DELETE = object()
BAD = [
    ("ray.port", 6380, "[ray] port: 6380 clashes with SkyPilot's ports on every node: its Ray's GCS 6380"),
    ("ray.port", -1, "[ray] port: -1 is outside 1024..32767"),
    ("ray.port", 99999, "[ray] port: 99999 is outside 1024..32767"),
    ("ray.port", 40000, "[ray] port: 40000 is outside 1024..32767 (unprivileged, below the kernel's ephemeral"),
    ("ray.ports.dashboard", 8266, "[ray.ports] dashboard: 8266 clashes with SkyPilot's ports on every node: "
                                  "its Ray's dashboard 8266"),
    ("ray.ports.ray_client_server", 10001, "[ray.ports] ray_client_server: 10001 clashes with SkyPilot's"),
    ("ray.ports.node_manager", 15000, "[ray.ports] node_manager: 15000 clashes with SkyPilot's ports on every node: "
                                      "its Ray's worker ports 10002-19999"),
    ("ray.ports.dashboard", 6479, "[ray] port: 6479 is also [ray.ports] dashboard (6479); each port once"),
    ("ray.ports.node_manager", 23000, "[ray.ports] node_manager: 23000 is also [ray.ports] min_worker..max_worker "
                                      "(22000-29999)"),
    ("ray.ports.min_worker", 11002, "[ray.ports] min_worker..max_worker: 11002-29999 clashes with SkyPilot's"),
    ("ray.ports.min_worker", 29999 + 1, "[ray.ports] min_worker: 30000 is above max_worker 29999"),
    ("variants.vllm.skyrl_extra", DELETE, "[variants.vllm] skyrl_extra: missing; target 'vllm' is SkyRL with the "
                                          "vllm engine"),
    ("variants.vllm.skyrl_extra", "sglang", "[variants.vllm] skyrl_extra: 'sglang' is another variant's engine"),
    ("variants.vllm.skyrl_extra", "tensorrt", "[variants.vllm] skyrl_extra: 'tensorrt' is not one of SkyRL's "
                                              "engine extras (vllm, sglang)"),
    ("variants.rehearsal.skyrl_extra", "vllm", "[variants.rehearsal] skyrl_extra: 'vllm' is already [variants.vllm]'s"),
    ("variants.vllm.gpu", False, "[variants.vllm] gpu: false, but a SkyRL variant (vllm) needs a GPU"),
    ("python.version", "", "[python] version: '' is not a Python version"),
    ("variants.rehearsal.python", "three", "[variants.rehearsal] python: 'three' is not a Python version"),
]


@pytest.mark.parametrize("path, value, problem", BAD, ids=[f"{p}={v if v is not DELETE else '<deleted>'}"
                                                           for p, v, _ in BAD])
def test_a_pin_that_cannot_work_is_one_line_naming_file_and_key(tmp_path, path, value, problem):
    pins_file = write_pins(tmp_path, _edit(real_raw(), path, value))
    with pytest.raises(StackError, match=re.escape(f"pins file {pins_file}: {problem}")) as err:
        load_pins(pins_file)
    assert "\n" not in err.value.message and "pins_meaning.py" in err.value.hint


@FIXED
@given(st.integers(min_value=-70000, max_value=140000))
def test_any_ray_port_loads_only_where_it_can_work(port):
    """A port loads iff it is unprivileged, below the ephemeral range, clear of SkyPilot's and of our other ports."""
    raw = _edit(real_raw(), "ray.port", port)
    ours = [p for name, p in raw["ray"]["ports"].items() if name not in ("min_worker", "max_worker")]
    workers = range(raw["ray"]["ports"]["min_worker"], raw["ray"]["ports"]["max_worker"] + 1)
    fine = (1024 <= port < EPHEMERAL_START and port not in ours and port not in workers
            and not any(a <= port <= b for a, b in SKYPILOT_PORTS.values()))
    problems = meaning_errors(raw)
    assert (problems == []) is fine
    assert all(line.startswith(("[ray] port: ", "[ray.ports] ")) for line in problems)


@pytest.mark.reliability("bad input", "`[ray] port = 6380` (SkyPilot's own Ray) in pins.toml",
                         "one `error:`/`hint:` pair naming the file and key, exit 1, nothing rendered")
def test_a_skypilot_port_in_pins_is_one_line_from_the_cli(tmp_path, state_dir):
    """`invoke render` as a user runs it, with [ray] port = 6380: error + hint, no traceback."""
    broken = write_pins(tmp_path, _edit(real_raw(), "ray.port", 6380))
    code = ("import sys; from skyrl_stack.image import pins; from pathlib import Path; pins.PINS_FILE = Path(sys.argv[1]);"
            "from invoke.main import program; program.run(['invoke', 'render', '--variant', 'rehearsal'])")
    out = subprocess.run([sys.executable, "-c", code, str(broken)], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"error: pins file {broken}: [ray] port: 6380 clashes with SkyPilot's ports")
    assert len(lines) == 2 and lines[1].startswith("hint: ")
