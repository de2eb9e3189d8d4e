""".github/workflows/image.yml: valid for GitHub, and every `invoke` call in it exists with those options."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPO_ROOT
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "image.yml"
INVOKE = str(Path(sys.executable).with_name("invoke"))


def test_workflow_validates_against_githubs_schema():
    # check-jsonschema vendors GitHub's published workflow schema (offline).
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                             str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def invoke_calls(workflow: dict) -> list[tuple[str, list[str]]]:
    """(task, [--option, ...]) for every `invoke <task> ...` in the workflow's run: steps."""
    calls = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            script = step.get("run")
            if not script:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "X", script)  # expressions are opaque values here
            for line in script.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                for i, word in enumerate(words):
                    if word == "invoke" or word.endswith("/invoke"):
                        task, *rest = words[i + 1:]
                        options = []
                        for arg in rest:
                            if arg in {"&&", "||", ";", "|"}:
                                break
                            if arg.startswith("--"):
                                options.append(arg.split("=", 1)[0])
                        calls.append((task, options))
    return calls


@lru_cache(maxsize=None)
def listed_tasks() -> frozenset[str]:
    """Task names as `invoke --list` prints them (two-space indent, name first; wrapped help lines are deeper)."""
    out = subprocess.run([INVOKE, "--list", "--list-format=flat"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    return frozenset(m.group(1) for m in re.finditer(r"^  (\S+)", out, re.M))


def task_options(task: str) -> str:
    return subprocess.run([INVOKE, "--help", task], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


CALLS = invoke_calls(yaml.safe_load(WORKFLOW.read_text()))


def test_workflow_calls_invoke_tasks():
    names = {task for task, _ in CALLS}
    assert {"build", "push", "smoke", "render"} <= names  # the pipeline is made of the user's tasks


@pytest.mark.parametrize("task,options", CALLS, ids=[f"{t} {' '.join(o)}" for t, o in CALLS])
def test_every_invoke_call_exists(task, options):
    assert task in listed_tasks(), f"`invoke {task}` is not in `invoke --list`"
    help_text = task_options(task)
    missing = [opt for opt in options if not re.search(rf"(^|\s|,){re.escape(opt)}[=\s\[]", help_text, re.M)]
    assert not missing, f"`invoke {task}` has no option(s) {missing}"


WORKFLOW_DATA = yaml.safe_load(WORKFLOW.read_text())


def test_zizmor_reports_no_high_finding():
    """zizmor (GitHub Actions security linter, offline audits): unpinned actions, cache poisoning, credentials."""
    zizmor = str(Path(sys.executable).with_name("zizmor"))
    result = subprocess.run([zizmor, "--offline", "--format", "json", str(WORKFLOW)], capture_output=True, text=True)
    findings = json.loads(result.stdout)
    high = [(f["ident"], f["locations"][0]["concrete"]["location"]["start_point"]["row"] + 1)
            for f in findings if f["determinations"]["severity"] == "High"]
    assert high == []


def test_every_action_is_pinned_by_full_sha_with_its_version():
    lines = [line.strip() for line in WORKFLOW.read_text().splitlines() if re.match(r"\s*-?\s*uses:", line)]
    assert lines
    for line in lines:
        assert re.fullmatch(r"-?\s*uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+(\.\d+){1,2}", line), line


def test_human_tags_move_only_after_the_gpu_job_passes():
    jobs = WORKFLOW_DATA["jobs"]
    gpu = jobs["gpu-smoke"]
    assert gpu["needs"] == "release" and "vars.GPU_RUNNER_LABEL != ''" in gpu["if"]
    assert "vars.GPU_RUNNER_LABEL" in gpu["runs-on"]
    runs = [step.get("run", "") for step in gpu["steps"]]
    smoke = next(i for i, r in enumerate(runs) if "invoke smoke" in r)
    promote = next(i for i, r in enumerate(runs) if "invoke promote" in r)
    assert smoke < promote and "--gpus all" in runs[smoke] and "--tier" not in runs[smoke]  # the full suite
    # The release job's push runs after a CPU-only smoke, so the gate keeps its human tags back.
    release_runs = " ".join(step.get("run", "") for step in jobs["release"]["steps"])
    assert "--gpus none" in release_runs and "invoke promote" not in release_runs
    # No GPU runner: a job that says so visibly.
    notice = jobs["gpu-smoke-unavailable"]
    assert "vars.GPU_RUNNER_LABEL == ''" in notice["if"]
    assert "::warning" in notice["steps"][0]["run"]


def _named_tasks() -> list[str]:
    """Every task the README or a message of the library tells users to run, as `invoke NAME`."""
    texts = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "skyrl_stack").rglob("*.py")), *sorted((REPO_ROOT / "skyrl_stack").rglob("*.toml"))]
    return sorted({m.group(1) for path in texts for m in re.finditer(r"`invoke ([a-z][a-z0-9.-]*[a-z0-9])", path.read_text())})


@pytest.mark.parametrize("task", _named_tasks())
def test_every_task_users_are_told_to_run_exists(task):
    """A hint or a README line that names `invoke X` must name a task `invoke --list` has
    (`invoke lock-rehearsal` was defined in tasks.py but left out of its collection)."""
    listed = listed_tasks()
    collection = any(name.startswith(f"{task}.") for name in listed)  # `invoke infra.*`
    assert task in listed or collection, f"`invoke {task}` is named for users but is not in `invoke --list`"
