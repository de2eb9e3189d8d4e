"""Launch-time values that cannot break a node: --env of owned variables, secrets, loggers the image runs.

Held against the real things: SkyPilot's own constants and task code generator
(what it sets and unsets on a node), the real sky.Task a launch hands to
SkyPilot (only skypilot_api._request, the API server, is replaced: see
tests/launch/test_launch.py), SkyRL's uv.lock at the pinned commit
(tests/data/skyrl-1ed499c) and the real `invoke` command line.
"""
from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.launch import launch_env, launcher, options
from skyrl_stack.launch.loggers import LOGGER_PACKAGES, LOGGERS, NOT_IN_IMAGE, check_logger
from skyrl_stack.launch.options import build_spec
from tests.launch.test_launch import passed_smoke, sdk  # noqa: F401 (fixture)
from tests.launch.test_render import _invoke, fake_record, no_skypilot_api_server  # noqa: F401
from tests.support.paths import DATA

FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=150)


# ----------------------------------------------------------------------------- --env of owned variables


@pytest.mark.parametrize("name, owner", [
    ("PATH", "the image"), ("LD_LIBRARY_PATH", "the image"), ("PYTHONPATH", "the image"),
    ("VIRTUAL_ENV", "the image"), ("HOME", "the image"), ("LD_PRELOAD", "the image"),
    ("SKYPILOT_NODE_RANK", "SkyPilot"), ("SKYPILOT_NODE_IPS", "SkyPilot"), ("SKYPILOT_TASK_ID", "SkyPilot"),
    ("SKYPILOT_DOCKER_PASSWORD", "SkyPilot"),
    ("RAY_ADDRESS", "the task's Ray"), ("RAY_RUNTIME_ENV_HOOK", "the task's Ray"),
    ("CUDA_VISIBLE_DEVICES", "the task's Ray"),
])
def test_env_of_an_owned_variable_is_one_line(name, owner):
    with pytest.raises(StackError, match=f"^--env {name} would replace a variable {owner} owns: ") as err:
        options.parse_env([f"{name}=/tmp"])
    assert "\n" not in err.value.message and err.value.hint


@pytest.mark.parametrize("name", ["SKYRL_RAY_JOIN_TIMEOUT", "HF_TOKEN", "NCCL_DEBUG", "RAY_DEDUP_LOGS", "MY_PATH"])
def test_env_of_the_users_own_variables_passes(name):
    assert options.parse_env([f"{name}=1"]) == {name: "1"}


def test_skypilot_prefix_is_skypilots_and_covers_what_it_sets_on_a_node():
    """Every variable SkyPilot's code generator sets for a job carries the prefix we refuse."""
    from sky.backends import task_codegen
    from sky.skylet import constants

    assert constants.SKYPILOT_ENV_VAR_PREFIX == launch_env.SKYPILOT_PREFIX
    set_on_node = {constants.SKYPILOT_NODE_RANK, constants.SKYPILOT_NODE_IPS, constants.SKYPILOT_NUM_NODES,
                   constants.SKYPILOT_NUM_GPUS_PER_NODE, constants.TASK_ID_ENV_VAR, *constants.DOCKER_LOGIN_ENV_VARS}
    assert {name for name in set_on_node if launch_env.owner(name) is None} == set()
    source = Path(task_codegen.__file__).read_text()
    in_codegen = set(re.findall(r"sky_env_vars_dict\['(\w+)'\]", source))
    assert in_codegen and {name for name in in_codegen if launch_env.owner(name) is None} == set()
    # What SkyPilot unsets before every run is not the user's to set either.
    assert set(task_codegen.UNSET_RAY_ENV_VARS) <= set(launch_env.RAY)


def test_the_images_env_is_read_from_the_dockerfile(tmp_path):
    assert launch_env.image_env_names() >= {"VIRTUAL_ENV", "PATH", "LD_LIBRARY_PATH"}
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM x\nENV A=1 \\\n    B="two words"\n  ENV C=3 # note\nRUN echo ENV D=4\n')
    assert launch_env.image_env_names(dockerfile) == {"A", "B", "C"}


@FIXED
@given(st.from_regex(r"SKYPILOT_[A-Z0-9_]{0,12}", fullmatch=True))
def test_any_skypilot_variable_is_refused(name):
    with pytest.raises(StackError, match=f"^--env {name} would replace a variable SkyPilot owns"):
        options.parse_env([f"{name}=x"])


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("name, secret", [
    ("HF_TOKEN", True), ("WANDB_API_KEY", True), ("AWS_SECRET_ACCESS_KEY", True), ("DB_PASSWORD", True),
    ("GITHUB_PAT", True), ("MY_SERVICE_KEY", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("SKYRL_RAY_JOIN_TIMEOUT", False), ("TOKENIZERS_PARALLELISM", False), ("NCCL_DEBUG", False),
    ("MONKEY", False),
])
def test_secret_looking_names(name, secret):
    assert launch_env.is_secret(name) is secret


def test_secret_looking_env_reaches_skypilot_as_a_secret(state_dir, sdk, monkeypatch):  # noqa: F811
    """On the real sky.Task the launch passes: HF_TOKEN is a secret (SkyPilot redacts it), the rest envs."""
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "wandb-key-for-test")
    env = options.parse_env(["HF_TOKEN=hf_secret_value_123", "DB_PASSWORD=pw-456", "SKYRL_RAY_JOIN_TIMEOUT=90"])
    launcher.launch(build_spec("vllm", cloud="aws", sets=["trainer.epochs=1"]), detach=True, env_overrides=env)
    (task,), _ = sdk.calls["launch"]
    assert {"HF_TOKEN", "DB_PASSWORD"} & set(task.envs) == set()
    assert task.secrets["HF_TOKEN"].get_secret_value() == "hf_secret_value_123"
    assert task.secrets["DB_PASSWORD"].get_secret_value() == "pw-456"
    assert task.envs["SKYRL_RAY_JOIN_TIMEOUT"] == "90"
    # What SkyPilot shows of the task (its redacted form: dashboard, logs) holds neither value.
    shown = repr(task._to_yaml_config(redact_secrets=True))
    assert "hf_secret_value_123" not in shown and "pw-456" not in shown
    assert task._to_yaml_config(redact_secrets=True)["secrets"]["HF_TOKEN"] == "<redacted>"


# ----------------------------------------------------------------------------- loggers


# SkyRL's tracking backends at 1ed499c (skyrl_train/utils/tracking.py, Tracking.supported_backends) and the
# package each imports when a job starts (tensorboard: torch.utils.tensorboard needs the tensorboard package).
SKYRL_BACKENDS = {"wandb": "wandb", "mlflow": "mlflow", "swanlab": "swanlab", "tensorboard": "tensorboard",
                  "console": None}
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


@pytest.fixture(scope="module")
def locked_per_extra(tmp_path_factory) -> dict[str, set[str]]:
    """The packages SkyRL's uv.lock at 1ed499c installs for each extra (the export the image's build runs)."""
    project = tmp_path_factory.mktemp("skyrl-train")
    shutil.copy(DATA / "skyrl-1ed499c" / "pyproject.toml", project / "pyproject.toml")
    (project / "uv.lock").write_bytes(gzip.decompress((DATA / "skyrl-1ed499c" / "uv.lock.gz").read_bytes()))
    locked = {}
    for extra in ("vllm", "sglang"):
        out = subprocess.run([UV, "export", "--frozen", "--no-hashes", "--no-emit-project", "--extra", extra],
                             cwd=project, capture_output=True, text=True, check=True).stdout
        locked[extra] = {re.split(r"[=@ ;\[]", line)[0].lower() for line in out.splitlines()
                         if line and not line.startswith(("#", " "))}
    return locked


def test_the_offered_loggers_are_those_whose_package_the_lock_holds_for_every_extra(locked_per_extra):
    runnable = {backend for backend, package in SKYRL_BACKENDS.items()
                if package is None or all(package in pkgs for pkgs in locked_per_extra.values())}
    assert set(LOGGERS) == runnable
    assert LOGGER_PACKAGES == {backend: SKYRL_BACKENDS[backend] for backend in LOGGERS}
    assert set(NOT_IN_IMAGE) == set(SKYRL_BACKENDS) - runnable
    assert "mlflow" not in locked_per_extra["vllm"] | locked_per_extra["sglang"]


@pytest.mark.parametrize("kwargs, message", [
    ({"logger": "mlflow"}, r"^--logger mlflow: SkyRL supports it, but the image cannot run it \(mlflow is not in"),
    ({"sets": ["trainer.logger=swanlab"]}, r"^--set trainer.logger swanlab: SkyRL supports it"),
    ({"logger": "nope"}, r"^unknown --logger 'nope'$"),
])
def test_a_logger_the_image_cannot_run_is_refused(kwargs, message, state_dir):
    fake_record("vllm")
    with pytest.raises(StackError, match=message) as err:
        build_spec("vllm", **kwargs)
    assert err.value.hint == "choose one of: wandb, console, tensorboard"


def test_check_logger_passes_what_the_image_runs():
    assert [check_logger(name) for name in LOGGERS] == list(LOGGERS)


# ----------------------------------------------------------------------------- the real command line


NOTHING = "one `error:`/`hint:` pair, exit 1, nothing rendered or launched"


@pytest.mark.parametrize("args, message", [
    pytest.param(["launch", "--env", "PATH=/tmp"], "error: --env PATH would replace a variable the image owns: ",
                 marks=pytest.mark.reliability("bad input", "`invoke launch --env PATH=/tmp` (a variable the image owns)",
                                               NOTHING)),
    pytest.param(["launch", "--env", "SKYPILOT_NODE_RANK=0"],
                 "error: --env SKYPILOT_NODE_RANK would replace a variable SkyPilot owns",
                 marks=pytest.mark.reliability("bad input", "`invoke launch --env SKYPILOT_NODE_RANK=0`", NOTHING)),
    pytest.param(["render", "--logger", "mlflow"], "error: --logger mlflow: SkyRL supports it, but the image cannot run it",
                 marks=pytest.mark.reliability("bad input", "`invoke render --logger mlflow` (not in SkyRL's lock)",
                                               NOTHING)),
])
def test_invoke_refuses_in_one_line(state_dir, tmp_path, args, message):
    fake_record("vllm")
    result = _invoke([*args, "--variant", "vllm"], tmp_path, state_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 2 and lines[0].startswith(message) and lines[1].startswith("hint: "), result.stderr
    assert not (tmp_path / "skypilot").exists()
