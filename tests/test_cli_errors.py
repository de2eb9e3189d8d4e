"""Bad input through the real `invoke` command line: one clear error, a hint, non-zero exit, nothing done."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def invoke(*args, env=None, timeout=120):
    merged = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=merged, timeout=timeout)


def assert_clean_error(result, cause):
    _keep_output(result)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and cause in lines[errors[0]], result.stderr
    assert lines[errors[0] + 1].startswith("hint: ") and errors[0] + 2 == len(lines), result.stderr
    assert "Traceback" not in result.stderr


def _keep_output(result) -> None:
    """With SKYRL_STACK_CAPTURE_DIR set, keep each bad-input run's output for `grep -rn Traceback`."""
    folder = os.environ.get("SKYRL_STACK_CAPTURE_DIR")
    if folder:
        test = os.environ.get("PYTEST_CURRENT_TEST", "invoke").split(" ")[0].split("::")[-1]
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in test)[:120]
        with open(os.path.join(folder, f"{name}.txt"), "w") as out:
            out.write(f"$ {' '.join(result.args)}\nexit {result.returncode}\n{result.stdout}{result.stderr}")


def test_invoke_list_imports_no_heavy_library():
    """`invoke --list` must stay instant: docker, sky, boto3 and hydra load only inside the tasks that need them."""
    probe = ("import sys\nfrom invoke.main import program\n"
             "try:\n    program.run(['invoke', '--list'], exit=False)\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in ('docker', 'sky', 'boto3', 'botocore', 'requests', 'hydra', 'omegaconf') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert "build" in result.stdout and "push" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.reliability("bad input", "`invoke build --variant tensorrt`", "one `error:`/`hint:` pair, exit 1, nothing built")
def test_unknown_variant(state_dir):
    assert_clean_error(invoke("build", "--variant", "tensorrt"), "unknown variant 'tensorrt'")
    assert not (state_dir / "builds").exists()


@pytest.mark.reliability("bad input", "`invoke build --repository Bad/Repo:tag`", "one `error:`/`hint:` pair, exit 1, nothing built")
def test_malformed_repository(state_dir):
    assert_clean_error(invoke("build", "--variant", "rehearsal", "--repository", "Bad/Repo:tag"),
                       "malformed image repository")
    assert not (state_dir / "builds").exists()


@pytest.mark.reliability("bad input", "`invoke build --ca-bundle /nonexistent.pem`", "one `error:`/`hint:` pair, exit 1")
def test_missing_ca_bundle(state_dir):
    assert_clean_error(invoke("build", "--variant", "rehearsal", "--ca-bundle", "/nonexistent.pem"),
                       "CA bundle not found")


@pytest.mark.reliability("fault", "`invoke build` / `invoke push` with no Docker daemon", "`error: cannot reach the Docker daemon`, exit 1")
@pytest.mark.parametrize("task", [["build", "--variant", "rehearsal"], ["push", "--variant", "rehearsal"]])
def test_docker_daemon_not_running(task, state_dir, tmp_path):
    if task[0] == "push":  # push needs a record to get as far as the engine
        from skyrl_stack.image.pins import load_pins
        from skyrl_stack.image.records import BuildRecord

        BuildRecord(variant="rehearsal", repository="127.0.0.1:5000/x", digest="sha256:" + "0" * 64, tags=[],
                    pins_digest="x", pins=load_pins().raw, source_date_epoch=0, base_image="b", built_at="t",
                    build_seconds=1).save()
        task = task + ["--skip-smoke-gate"]
    result = invoke(*task, env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock", "SKYRL_STACK_WORKSPACE": str(state_dir.parent)})
    assert_clean_error(result, "cannot reach the Docker daemon")


@pytest.mark.reliability("bad input", "`invoke render --out DIR` where DIR is a directory", "one `error:`/`hint:` pair, exit 1, nothing written")
def test_render_out_is_a_directory(tmp_path):
    image = "127.0.0.1:5000/skyrl-stack@sha256:" + "a" * 64
    result = invoke("render", "--variant", "rehearsal", "--image", image, "--out", str(tmp_path))
    assert_clean_error(result, f"--out {tmp_path} is a directory")
    assert list(tmp_path.iterdir()) == [] and not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))


def test_invoke_lint_passes_on_the_project():
    """The real `invoke lint` (hadolint, cfn-lint, GitHub's workflow schema) over the checked-in files."""
    result = invoke("lint")
    assert result.returncode == 0, result.stderr
    assert "lint: all clean" in result.stderr


@pytest.mark.reliability("bad input", "`invoke test --suite everything`", "one `error:`/`hint:` pair, exit 1")
def test_unknown_test_suite():
    assert_clean_error(invoke("test", "--suite", "everything"), "unknown test suite 'everything'")


@pytest.mark.reliability("fault", "`invoke status` / `invoke logs` with no SkyPilot API server (local one disabled)",
                         "`error: no SkyPilot API server`, hint `sky api login -e ENDPOINT`, exit 1")
@pytest.mark.parametrize("task", [["status"], ["logs", "--cluster", "c1"]])
def test_no_skypilot_api_server(task):
    """The real `invoke` and SkyPilot, nothing replaced: SkyPilot raises a plain RuntimeError here."""
    result = invoke(*task, env={"SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"})
    assert_clean_error(result, "no SkyPilot API server")
    assert "sky api login -e ENDPOINT" in result.stderr


@pytest.mark.reliability("fault", "`invoke status` with an API server endpoint that does not answer",
                         "`error: cannot reach the SkyPilot API server`, hint `sky api start`, exit 1")
def test_skypilot_api_server_not_answering():
    from tests.support.registry import free_port

    result = invoke("status", env={"SKYPILOT_API_SERVER_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert_clean_error(result, "cannot reach the SkyPilot API server")


def test_readme_reliability_table_is_generated():
    """README's table is what scripts/reliability_table.py makes from the tests' marks, nothing by hand."""
    result = subprocess.run([sys.executable, "scripts/reliability_table.py", "--check"], cwd=REPO_ROOT,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert result.returncode == 0, result.stderr
