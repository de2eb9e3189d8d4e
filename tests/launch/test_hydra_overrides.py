"""`--set` read as SkyRL reads it: Hydra's own override parser, then SkyRL's own config (launch/hydra_overrides.py).

The oracles are never render's code: Hydra's own parser and quoting (hydra-core in
.venv), the rendered `run:` executed by this machine's bash (the image's steps are
functions that record their argv: the real ones need the GPU image), and SkyRL 0.2.0
itself in .venv-skyrl (scripts/setup-dev.sh: the hash-pinned wheel, hydra-core 1.3.2),
where the smoke suite's skyrl tier code composes the written list onto the config
SkyRL's package carries and runs SkyRL's validate_cfg.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.task_spec import training_overrides
from skyrl_stack.launch.task_yaml import task_config
from skyrl_stack.launch.training_plan import CKPT_GB, DATA_GB, HEADROOM_GB
from tests.launch.test_training_plan import SKYRL_VENV_PYTHON, needs_skyrl_venv
from tests.launch.test_values_are_data import FIXED, VALUE
from tests.support.paths import REPO_ROOT
from tests.test_cli_errors import assert_clean_error, invoke

IMAGE = "ghcr.io/example/skyrl-stack@sha256:" + "5e" * 32
IMAGE_GB = 100  # options.MIN_DISK_GB for a GPU image
MAX_DISK_GB = 65536


@pytest.fixture(autouse=True)
def workspace(state_dir):
    """A fresh workspace: SkyRL's config is taken into it (from .venv-skyrl), as on a first render."""
    return state_dir.parent


def spec_for(*sets: str, nodes: int = 1, gpus: str = "L40S:4"):
    return build_spec("vllm", cloud="aws", gpus=gpus, nodes=nodes, image=IMAGE, sets=list(sets))


def parse(override: str):
    """Hydra's own reading of one override: (key, value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides([override])
    return parsed.key_or_group, parsed.value()


def skyrl_train_argv(spec) -> list[str]:
    """The arguments the rendered `run:` passes to skyrl-train, as bash gives them (head node, the task's envs)."""
    config = yaml.safe_load(yaml.safe_dump(task_config(spec)))
    # Every other image script the run: calls (skyrl-phase, skyrl-ckpt-guard, ... docker/scripts/bin) does
    # nothing here but drain what is piped into it; skyrl-train prints its arguments.
    others = sorted(p.name for p in (REPO_ROOT / "docker" / "scripts" / "bin").iterdir() if p.name != "skyrl-train")
    stubs = "".join(f"{name}() {{ cat >/dev/null; }}\n" for name in others)
    stubs += 'skyrl-train() { printf "%s\\0" "$@"; }\n'
    env = {**config["envs"], "SKYPILOT_NODE_RANK": "0", "PATH": os.environ["PATH"]}
    result = subprocess.run(["bash", "-c", stubs + config["run"]], env=env, capture_output=True, check=True,
                            stdin=subprocess.DEVNULL)
    return result.stdout.decode().split("\0")[:-1]


def assert_one_line(err) -> None:
    assert "\n" not in err.value.message and "\r" not in err.value.message, err.value.message
    assert err.value.hint and "\n" not in err.value.hint


# ----------------------------------------------------------------------------- the cases

@pytest.mark.reliability("bad input", "`invoke render --set trainer.epochz=1` / `--set trainer=1` / "
                         "`--set ++trainer.train_batch_size=1000`",
                         "one `error:`/`hint:` pair naming the key, exit 1, nothing written")
def test_render_refuses_the_done_when_sets_in_one_line(state_dir):
    cases = {
        "trainer.epochz=1": "bad --set trainer.epochz=1: SkyRL's config has no key trainer.epochz",
        "trainer=1": "bad --set trainer=1: trainer is a section of SkyRL's config",
        "++trainer.train_batch_size=1000": "bad --set ++trainer.train_batch_size=1000: Hydra's ++ prefix",
    }
    for item, cause in cases.items():
        result = invoke("render", "--variant", "vllm", "--image", IMAGE, "--no-validate", "--set", item)
        assert_clean_error(result, cause)
    assert "did you mean trainer.epochs?" in invoke("render", "--variant", "vllm", "--image", IMAGE,
                                                    "--set", "trainer.epochz=1").stderr
    assert not (state_dir.parent / "skypilot").exists()


REFUSED = {
    # keys SkyRL's config lacks, or where it holds a section, not a value
    "trainer.epochz=1": r"SkyRL's config has no key trainer\.epochz$",
    "notakey=1": r"SkyRL's config has no key notakey$",
    "trainer=1": r"trainer is a section of SkyRL's config \(\d+ keys\), not a value$",
    "trainer.policy.deepspeed_config=1": r"trainer\.policy\.deepspeed_config is a section",  # a ${...} reference to one
    "generator.engine_init_kwargs.max_model_len=4096": r"SkyRL's config has no key generator\.engine_init_kwargs\.max",
    # Hydra's prefixes: + on a key SkyRL has (Hydra would refuse it on the node), ++ and ~ (past render's checks)
    "++trainer.train_batch_size=1000": r"Hydra's \+\+ prefix adds or overrides a key, past render's checks",
    "+trainer.train_batch_size=1000": r"Hydra's \+ prefix adds a new key",
    "+trainer.extra=3": r"Hydra's \+ prefix adds a new key",
    "~trainer.epochs=1": r"Hydra's ~ prefix deletes a key",
    # stack-facts.md: values Hydra's grammar cannot read unquoted
    "trainer.run_name=a b=c": r"Hydra's override grammar cannot read the value unquoted$",
    "trainer.run_name=x!": r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=x: y # z": r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=$(touch f)": r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=`id`": r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=a;b": r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=it's": r"Hydra.s override grammar cannot read the value unquoted$",
    'trainer.run_name="unbalanced': r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=é": r"Hydra.s override grammar cannot read the value unquoted$",
    "trainer.run_name=日本": r"Hydra.s override grammar cannot read the value unquoted$",
    # interpolations, quoted or not (Hydra resolves them inside quoted strings too)
    "trainer.run_name=${trainer.seed}": r"\$\{\.\.\.\} is an interpolation",
    "trainer.run_name='${oc.env:HOME}'": r"\$\{\.\.\.\} is an interpolation",
    "trainer.epochs=${trainer.seed}": r"\$\{\.\.\.\} is an interpolation",
    # OmegaConf's marker for a missing value: composes, then SkyRL's first read of it raises
    "trainer.run_name=???": r"\?\?\? is OmegaConf's marker for a missing value$",
    "generator.sampling_params.stop=[a, ???]": r"\?\?\? is OmegaConf's marker",
    # sweeps (SkyRL's entry point runs once)
    "trainer.epochs=1,2": r"Hydra reads it as a sweep",
    "trainer.epochs=range(3)": r"Hydra reads it as a sweep",
    # the kind SkyRL's default has
    "trainer.epochs=abc": r"SkyRL's trainer\.epochs is a whole number \(1 in its config\), Hydra reads 'abc' as a string$",
    "trainer.epochs=1.5": r"SkyRL's trainer\.epochs is a whole number",
    "trainer.epochs=true": r"SkyRL's trainer\.epochs is a whole number",
    "trainer.eval_before_train=yes": r"SkyRL's trainer\.eval_before_train is true or false \(true in its config\)",
    "trainer.policy.optimizer_config.lr=nan": r"SkyRL's trainer\.policy\.optimizer_config\.lr is a finite number",
    "trainer.policy.optimizer_config.lr=fast": r"SkyRL's trainer\.policy\.optimizer_config\.lr is a number",
    "trainer.run_name=[a]": r"SkyRL's trainer\.run_name is a string \('test_run' in its config\), Hydra reads '\[a\]' as a list",
    "trainer.policy.optimizer_config.adam_betas=0.9": r"SkyRL's trainer\.policy\.optimizer_config\.adam_betas is a list",
    # keys the plan derives from the shape and --bucket
    "trainer.placement.colocate_all=false": r"render derives trainer\.placement\.colocate_all from --nodes and --gpus",
    "trainer.placement.policy_num_nodes=4": r"render derives",
    "generator.num_inference_engines=8": r"render derives generator\.num_inference_engines",
    "generator.inference_engine_data_parallel_size=2": r"render derives",
    "trainer.policy.sequence_parallel_size=2": r"render derives",
    "trainer.ckpt_path=/elsewhere": r"render derives trainer\.ckpt_path from --bucket",
    # sizes derived from the schedule stay positive (the disk never below the image)
    "trainer.epochs=-5": r"a negative number of epochs$",
    "trainer.epochs=-1000": r"a negative number of epochs$",
    "generator.inference_engine_tensor_parallel_size=3": r"it must divide the 4 GPU\(s\) per node$",
}


@pytest.mark.parametrize("item", sorted(REFUSED))
def test_a_set_skyrl_would_refuse_or_misread_is_refused_in_one_line(item):
    with pytest.raises(StackError, match=rf"^bad --set {re.escape(item)}: {REFUSED[item]}") as err:
        spec_for(item)
    assert_one_line(err)


def test_a_key_that_is_not_hydras_is_refused_before_hydra():
    with pytest.raises(StackError, match=r"^bad --set 'a b=c'$"):
        spec_for("a b=c")


def test_a_list_that_does_not_compose_onto_skyrls_config_is_one_line_naming_the_key():
    """The last check before writing: the task's whole list, composed as the image's skyrl tier composes it."""
    from skyrl_stack.launch.hydra_overrides import check_composes

    with pytest.raises(StackError, match=r"^SkyRL's ppo_base_config \(SkyRL 1ed499cce4df\) does not compose with the "
                                         r"task's overrides: Could not override 'trainer\.epochz'\.$") as err:
        check_composes(training_overrides(spec_for()) + ["trainer.epochz=1"])
    assert_one_line(err)
    check_composes(training_overrides(spec_for()))  # render's own list does


def test_a_huge_schedule_keeping_every_checkpoint_is_refused_not_sized_past_any_disk():
    with pytest.raises(StackError, match=r"^the vllm plan needs \d+ GB per node .* more than the largest disk"):
        spec_for("trainer.epochs=1000000", "trainer.max_ckpts_to_keep=-1")


# ----------------------------------------------------------------------------- what is accepted, as Hydra reads it

GRAMMAR_CASES = ["a b=c", "x!", "x: y # z", "$(touch f)", "`id`", "a;b", "it's", '"q', "é", "日本", "back\\'slash"]


@pytest.mark.parametrize("text", GRAMMAR_CASES)
def test_the_hints_quoted_form_is_accepted_and_read_back_as_exactly_the_text(text):
    with pytest.raises(StackError, match="cannot read the value unquoted") as err:
        spec_for(f"trainer.run_name={text}")
    hinted = shlex.split(err.value.hint.removeprefix("quote it for Hydra: --set "))
    assert len(hinted) == 1
    written = [arg for arg in skyrl_train_argv(spec_for(hinted[0])) if arg.startswith("trainer.run_name=")]
    assert [parse(arg) for arg in written] == [("trainer.run_name", text)]


def test_a_free_form_section_takes_skyrls_own_plus_form():
    """ppo_base_config.yaml: "To specify an engine arg in the CLI override, use the format:
    +generator.engine_init_kwargs.arg_name=value"; nothing render checks lives there."""
    with pytest.raises(StackError, match="generator.engine_init_kwargs.max_model_len") as err:
        spec_for("generator.engine_init_kwargs.max_model_len=4096")
    assert err.value.hint == "add it with SkyRL's form: --set +generator.engine_init_kwargs.max_model_len=VALUE"
    argv = skyrl_train_argv(spec_for("+generator.engine_init_kwargs.max_model_len=4096"))
    assert argv[-1] == "+generator.engine_init_kwargs.max_model_len=4096"


def test_a_fraction_fits_a_whole_number_default_that_skyrl_uses_as_one():
    argv = skyrl_train_argv(spec_for("trainer.policy.model.lora.dropout=0.1"))
    assert parse(argv[-1]) == ("trainer.policy.model.lora.dropout", 0.1)


def test_the_tensor_parallel_size_re_derives_the_engine_count():
    overrides = dict(item.split("=", 1) for item in training_overrides(
        spec_for("generator.inference_engine_tensor_parallel_size=2", nodes=2)))
    assert overrides["generator.num_inference_engines"] == "4"  # 2 nodes x 4 GPUs / TP 2: colocate_all holds
    assert overrides["generator.inference_engine_tensor_parallel_size"] == "2"


# Keys of each kind SkyRL's config has (its default in brackets): what arbitrary values meet.
KINDS = ["trainer.run_name",  # 'test_run'
         "trainer.eval_interval",  # 5
         "trainer.policy.optimizer_config.lr",  # 1e-06
         "trainer.eval_before_train",  # true
         "generator.sampling_params.stop",  # null: anything
         "trainer.policy.optimizer_config.adam_betas",  # [0.9, 0.999]
         "+generator.engine_init_kwargs.max_model_len"]  # free-form
HYDRA_LOOKING = st.sampled_from(["1", "-3", "1_000", "+5", "007", "1.5", "1e-3", "inf", "true", "False", "null", "",
                                 "[1, 2]", "[a, 'b c']", "[]", "{a: 1}", "{}", "'x'", '"y"', "1,2", "a b", " spaced ",
                                 "\\,", "a\\ b", "'it\\'s'", "choice(1,2)", "x@y", "/abs/path", "?*|%", "???",
                                 "[true, null]", "[[1], {a: b}]", "0.9", "-0.0"])
TEXT = st.one_of(VALUE, HYDRA_LOOKING, st.integers().map(str), st.floats().map(repr))


def collect_cases(count: int = 150) -> tuple[list[dict], int]:
    """Arbitrary --set values on keys of every kind: each is refused in one line, or rendered; for the
    rendered ones, the argv bash gives skyrl-train and what Hydra reads for the key (render's view)."""
    accepted, refused = [], 0

    @given(key=st.sampled_from(KINDS), text=TEXT)
    @FIXED
    def draw(key, text):
        nonlocal refused
        item = f"{key}={text}"
        try:
            spec = spec_for(item)
        except StackError as exc:
            assert "\n" not in exc.message and exc.hint, exc.message
            assert exc.message.startswith(("bad --set ", "unknown logger")), exc.message
            refused += 1
            return
        argv = skyrl_train_argv(spec)
        assert argv == training_overrides(spec)  # one literal argument each, through the YAML and bash
        written = [arg for arg in argv if parse(arg)[0] == key.lstrip("+")]
        assert len(written) == 1
        assert parse(written[0]) == parse(f"{key}={text.strip()}")  # exactly what the user's override says
        accepted.append({"set": f"{key}={text.strip()}", "argv": argv})

    draw()
    return accepted, refused


ORACLE = """
import json, math, sys
from hydra.core.override_parser.overrides_parser import OverridesParser
from skyrl_stack.smoke.skyrl import compose, skyrl_config_dir
parser = OverridesParser.create()
verdicts = []
for case in json.load(sys.stdin):
    (intended,) = parser.parse_overrides([case["set"]])
    written = [o for o in parser.parse_overrides(case["argv"]) if o.key_or_group == intended.key_or_group]
    same = len(written) == 1 and repr(written[0].value()) == repr(intended.value())
    try:
        compose(skyrl_config_dir(), case["argv"])
        composed = None
    except Exception as exc:
        composed = f"{type(exc).__name__}: {exc}"
    verdicts.append({"same": same, "composed": composed})
print(json.dumps(verdicts))
"""


def skyrl_venv(script: str, payload) -> list:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    result = subprocess.run([str(SKYRL_VENV_PYTHON), "-c", script], input=json.dumps(payload), capture_output=True,
                            text=True, env=dict(env, PYTHONPATH=str(REPO_ROOT)), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_skyrl_venv
def test_every_accepted_set_parses_to_its_value_and_composes_in_skyrls_own_environment():
    """Property: any value on any kind of key is refused in one line, or written so that Hydra reads exactly the
    user's key and value from the argv skyrl-train gets; and that argv composes onto SkyRL's own config."""
    accepted, refused = collect_cases()
    assert len(accepted) >= 20 and refused >= 20  # both sides were exercised
    verdicts = skyrl_venv(ORACLE, accepted)
    wrong = [(case["set"], v) for case, v in zip(accepted, verdicts) if not v["same"] or v["composed"]]
    assert not wrong


VALIDATE = """
import json, sys
from skyrl_stack.smoke.skyrl import compose, skyrl_config_dir, validate
from skyrl_stack.smoke.suite import Fail
out = []
for overrides in json.load(sys.stdin):
    try:
        out.append(["accepted", validate(skyrl_config_dir(), overrides)])
    except Fail as exc:
        out.append(["refused", str(exc)])
    except Exception as exc:
        out.append(["crashed", f"{type(exc).__name__}: {exc}"])
print(json.dumps(out))
"""


@needs_skyrl_venv
def test_skyrl_itself_fails_on_what_render_refuses_and_validates_what_it_re_derives():
    """Why render refuses these, shown with SkyRL's own compose and validate_cfg: each slips past Hydra's
    composition (SkyRL's config is plain YAML, no types) or past render's batch checks, and fails on the node;
    the re-derived engine count for a tensor-parallel size of 2 is one SkyRL accepts."""
    base = training_overrides(spec_for())
    cases = {
        "++trainer.train_batch_size=1000": base + ["++trainer.train_batch_size=1000"],  # 1000 % 256: past the checks
        "trainer=1": base + ["trainer=1"],
        "trainer.placement.policy_num_nodes=2": base + ["trainer.placement.policy_num_nodes=2"],
        "tensor parallel 2, re-derived": training_overrides(spec_for("generator.inference_engine_tensor_parallel_size=2",
                                                                     nodes=2)),
    }
    verdicts = dict(zip(cases, skyrl_venv(VALIDATE, list(cases.values()))))
    assert verdicts["++trainer.train_batch_size=1000"][0] == "refused"
    assert "train_batch_size 1000 should be divisible by policy_mini_batch_size 256" in \
        verdicts["++trainer.train_batch_size=1000"][1]
    assert verdicts["trainer=1"][0] in ("refused", "crashed")
    assert verdicts["trainer.placement.policy_num_nodes=2"][0] == "refused"
    assert verdicts["tensor parallel 2, re-derived"] == ["accepted", verdicts["tensor parallel 2, re-derived"][1]]
    assert "2 x 4 GPUs" in verdicts["tensor parallel 2, re-derived"][1]


@given(epochs=st.integers(-10**6, 10**7), keep=st.integers(-3, 50), interval=st.integers(-5, 200))
@FIXED
def test_every_derived_disk_holds_the_image_and_fits_a_real_disk(epochs, keep, interval):
    sets = [f"trainer.epochs={epochs}", f"trainer.max_ckpts_to_keep={keep}", f"trainer.ckpt_interval={interval}"]
    try:
        spec = spec_for(*sets)
    except StackError as exc:
        assert "\n" not in exc.message and exc.hint
        assert epochs < 0 or keep == 0 or "more than the largest disk" in exc.message, exc.message
        return
    assert IMAGE_GB + DATA_GB + HEADROOM_GB <= spec.disk_size <= MAX_DISK_GB
    assert (spec.disk_size - IMAGE_GB - DATA_GB - HEADROOM_GB) % CKPT_GB == 0
