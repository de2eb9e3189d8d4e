"""invoke.yaml and INVOKE_* defaults through the real `invoke` binary: checked like flags, errors naming their source.

Each case runs `python -m invoke` on a copy of this checkout's tasks.py beside
an invoke.yaml written for the case (Invoke's project file is the one beside
tasks.py), so Invoke's own config merge, env casting and file loading are the
real ones (invoke/config.py, invoke/env.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.task_defaults import DEFAULTS, check, check_project_config, env_name
from tests.conftest import REPO_ROOT
from tests.launch.test_render import fake_record

FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=150)
REAL = (REPO_ROOT / "invoke.yaml").read_text()


def invoke_in(project, args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    environ.update(env or {}, PYTHONPATH=str(REPO_ROOT), SKYPILOT_DISABLE_LOCAL_API_SERVER="1")
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=project, env=environ, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def project(tmp_path, state_dir):
    """A project folder: this checkout's tasks.py, the invoke.yaml the test writes, the test's workspace."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "tasks.py", folder / "tasks.py")
    fake_record("vllm")
    return folder


def one_line(result, start):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 2 and lines[0].startswith(start) and lines[1].startswith("hint: "), result.stderr
    return lines[0]


CASES = [
    # (invoke.yaml, env, args, the error line's start)
    pytest.param(REAL.replace('gpus: "L40S:4"', "gpus: 4"), {}, ["render", "--variant", "vllm"],
                 "error: bad invoke.yaml launch.gpus '4'", marks=pytest.mark.reliability(
                     "bad input", "`launch.gpus: 4` in invoke.yaml",
                     "the check `--gpus 4` gets; one `error:`/`hint:` pair naming invoke.yaml, exit 1")),
    pytest.param("launch: [1\n", {}, ["--list"],
                 "error: invoke.yaml is not valid YAML (line 2, column 1): expected ',' or ']', but got '<stream end>'",
                 marks=pytest.mark.reliability("bad input", "an invoke.yaml that is not valid YAML (`invoke --list`)",
                                               "one `error:`/`hint:` pair with line and column, exit 1, no traceback")),
    ("launch: [1\n", {}, ["render"], "error: invoke.yaml is not valid YAML"),
    ("- image\n- launch\n", {}, ["render"], "error: invoke.yaml: must be sections of keys (image:, build:, launch:)"),
    (REAL.split("\nlaunch:")[0], {}, ["render", "--variant", "vllm"],
     "error: no default for launch.cloud: the project's invoke.yaml has no 'cloud' under launch:"),
    (REAL.split("\nlaunch:")[0] + "\nlaunch: 4\n", {}, ["render"], "error: invoke.yaml: launch: must be a section of keys, not 4"),
    pytest.param(REAL, {"INVOKE_LAUNCH_NODES": "abc"}, ["render", "--variant", "vllm"],
                 "error: bad INVOKE_LAUNCH_NODES 'abc'", marks=pytest.mark.reliability(
                     "bad input", "`INVOKE_LAUNCH_NODES=abc invoke render`",
                     "one `error:`/`hint:` pair naming the variable (not --nodes), exit 1, no Invoke traceback")),
    (REAL, {"INVOKE_LAUNCH_NODES": "abc"}, ["--list"], "error: bad INVOKE_LAUNCH_NODES 'abc'"),
    (REAL, {"INVOKE_LAUNCH_NODES": "0"}, ["render", "--variant", "vllm"], "error: bad INVOKE_LAUNCH_NODES 0"),
    (REAL.replace("nodes: 1", 'nodes: "1"'), {"INVOKE_LAUNCH_NODES": "abc"}, ["render", "--variant", "vllm"],
     "error: bad INVOKE_LAUNCH_NODES 'abc'"),
    (REAL.replace("nodes: 1", "nodes: abc"), {}, ["render", "--variant", "vllm"], "error: bad invoke.yaml launch.nodes 'abc'"),
    (REAL, {"INVOKE_LAUNCH_GPUS": "L40S:x"}, ["render", "--variant", "vllm"], "error: bad INVOKE_LAUNCH_GPUS 'L40S:x'"),
    (REAL, {}, ["render", "--variant", "vllm", "--gpus", "L40S:x"], "error: bad --gpus 'L40S:x'"),
    (REAL.replace('gpus: "L40S:4"', 'gpus: "L40S:4\\n"'), {}, ["render", "--variant", "vllm"],
     "error: bad invoke.yaml launch.gpus 'L40S:4\\n': it contains the control character U+000A"),
    (REAL.replace("cloud: aws", "cloud: mars"), {}, ["render", "--variant", "vllm"],
     "error: invoke.yaml launch.cloud: unknown cloud 'mars'"),
    (REAL, {"INVOKE_IMAGE_VARIANT": "tensorrt"}, ["render"], "error: INVOKE_IMAGE_VARIANT: unknown variant 'tensorrt'"),
    (REAL.replace("variant: vllm", "variant: [vllm]"), {}, ["render"], "error: bad invoke.yaml image.variant: a list"),
    (REAL, {"INVOKE_IMAGE_REPOSITORY": "Bad/Repo:tag"}, ["build", "--variant", "rehearsal"],
     "error: malformed INVOKE_IMAGE_REPOSITORY 'Bad/Repo:tag'"),
    (REAL.replace("compression: zstd", "compression: lz4"), {}, ["build", "--variant", "rehearsal"],
     "error: invoke.yaml build.compression: unknown layer compression 'lz4'"),
]


@pytest.mark.parametrize("text, env, args, start", CASES,
                         ids=[getattr(case, "values", case)[-1].removeprefix("error: ")[:60] for case in CASES])
def test_a_bad_default_is_one_line_naming_its_source(project, text, env, args, start):
    (project / "invoke.yaml").write_text(text)
    one_line(invoke_in(project, args, env), start)
    assert not (project / "skypilot").exists()


def test_a_padded_default_is_written_as_the_flag_would_be(project):
    (project / "invoke.yaml").write_text(REAL.replace('gpus: "L40S:4"', 'gpus: "  L40S:4 "'))
    result = invoke_in(project, ["render", "--variant", "vllm", "--out", "t.yaml"])
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((project / "t.yaml").read_text())["resources"]["accelerators"] == "L40S:4"
    result = invoke_in(project, ["render", "--variant", "vllm", "--gpus", " L40S:4 ", "--out", "f.yaml"])
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((project / "f.yaml").read_text())["resources"]["accelerators"] == "L40S:4"


def test_the_real_invoke_yaml_passes(project):
    (project / "invoke.yaml").write_text(REAL)
    assert invoke_in(project, ["render", "--variant", "vllm", "--out", "t.yaml"]).returncode == 0
    check_project_config(REPO_ROOT, environ={})
    config = yaml.safe_load(REAL)
    assert {f"{section}.{key}" for section, keys in config.items() for key in keys} == set(DEFAULTS)


@FIXED
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8))
def test_any_nodes_variable_is_a_number_of_nodes_or_one_line(value):
    """Whatever INVOKE_LAUNCH_NODES holds: Invoke never gets to cast it unchecked, and the task gets 1..64."""
    variable = env_name("launch.nodes")
    try:
        check_project_config(REPO_ROOT, environ={variable: value})
        nodes = check("launch.nodes", int(value), variable)
    except ValueError:  # not a number at all: then check_project_config must have refused it
        pytest.fail(f"{value!r} passed the import check but Invoke cannot cast it")
    except StackError as err:
        assert err.message.startswith(f"bad {variable} ") and "\n" not in err.message
        return
    assert 1 <= nodes <= 64
