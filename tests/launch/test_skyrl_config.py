"""Where render's copy of SkyRL's config comes from (launch/skyrl_config.py): the pinned wheel, verified per file.

Checked against the wheel itself: the RECORD of skyrl-train 0.2.0 as installed in
.venv-skyrl (pip --require-hashes, scripts/setup-dev.sh), the hash the requirements
file pins, and one real download through pip from the package index.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import subprocess
import sys

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image.pins import load_pins
from skyrl_stack.launch import skyrl_config
from skyrl_stack.launch.skyrl_config import CONFIG_FILES, PACKAGE_DIR, SKYRL_COMMIT, WHEEL_SHA256
from tests.launch.test_training_plan import needs_skyrl_venv
from tests.support.paths import REPO_ROOT


def installed_record() -> dict[str, str]:
    """skyrl_train/config/*.yaml -> sha256 hex, from the installed wheel's own RECORD."""
    (record,) = (REPO_ROOT / ".venv-skyrl").glob("lib/python3*/site-packages/skyrl_train-0.2.0.dist-info/RECORD")
    files = {}
    for line in record.read_text().splitlines():
        path, digest, _ = line.rsplit(",", 2)
        if path.startswith(f"{PACKAGE_DIR}/") and path.endswith(".yaml"):
            algorithm, _, value = digest.partition("=")
            assert algorithm == "sha256"
            files[path.removeprefix(f"{PACKAGE_DIR}/")] = base64.urlsafe_b64decode(value + "==").hex()
    return files


@needs_skyrl_venv
def test_the_pinned_files_are_the_wheels_config_exactly():
    assert installed_record() == CONFIG_FILES  # every YAML file of the config, no more, no fewer


def test_the_pin_is_the_requirements_files_wheel_and_pins_tomls_commit():
    requirements = (REPO_ROOT / "scripts" / "skyrl-validate-requirements.txt").read_text()
    assert re.search(rf"skyrl-train==0\.2\.0 \\\s+--hash=sha256:{WHEEL_SHA256}", requirements)
    assert load_pins().skyrl_commit == SKYRL_COMMIT


@needs_skyrl_venv
def test_a_fresh_workspace_takes_it_from_the_checkouts_skyrl_venv_and_replaces_an_altered_copy(state_dir):
    folder = skyrl_config.config_dir()
    assert folder == skyrl_config.cache_dir() and folder.is_relative_to(state_dir)
    for rel, sha in CONFIG_FILES.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == sha
    (folder / "ppo_base_config.yaml").write_text("trainer:\n  epochz: 1\n")  # altered: never used as is
    assert skyrl_config.config_dir() == folder
    assert hashlib.sha256((folder / "ppo_base_config.yaml").read_bytes()).hexdigest() == CONFIG_FILES["ppo_base_config.yaml"]


def test_a_wheel_that_is_not_the_pinned_one_is_refused_in_one_line(state_dir, tmp_path):
    fake = tmp_path / "skyrl_train-0.2.0-py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(StackError, match=r"is not the pinned skyrl-train==0\.2\.0 wheel \(sha256 [0-9a-f]{12}, want d20317886a37\)$"):
        skyrl_config.from_wheel(fake)
    assert not skyrl_config.cache_dir().exists()


def test_without_a_skyrl_venv_the_pinned_wheel_is_downloaded_by_pip_from_the_package_index(state_dir, tmp_path,
                                                                                           monkeypatch):
    """A user who pip-installed skyrl-stack has no .venv-skyrl: the first render fetches the wheel (real pip,
    real index, --require-hashes), and an offline machine can be given the wheel file instead."""
    monkeypatch.setattr(skyrl_config, "_checkout_skyrl_venv", lambda: None)
    steps = []
    from skyrl_stack.reporter import report_to

    with report_to(steps.append):
        folder = skyrl_config.config_dir()
    assert steps == ["fetching SkyRL's config (the skyrl-train==0.2.0 wheel, sha256 d20317886a37) once, for the --set checks"]
    assert all(hashlib.sha256((folder / rel).read_bytes()).hexdigest() == sha for rel, sha in CONFIG_FILES.items())
    wheel = skyrl_config._download_wheel(tmp_path)
    other = tmp_path / "other-workspace"
    result = subprocess.run([sys.executable, "-m", "skyrl_stack.launch.skyrl_config", str(wheel)], cwd=REPO_ROOT,
                            env={**os.environ, "SKYRL_STACK_WORKSPACE": str(other)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(other / ".skyrl-stack" / "skyrl-config" / f"skyrl-train-0.2.0-{WHEEL_SHA256[:12]}")


def test_a_pins_file_at_another_skyrl_commit_is_refused_in_one_line(monkeypatch):
    pins = load_pins()
    other = dataclasses.replace(pins, raw={**pins.raw, "skyrl": {**pins.raw["skyrl"], "commit": "0df41af5" + "0" * 32}})
    monkeypatch.setattr("skyrl_stack.image.pins.load_pins", lambda: other)
    with pytest.raises(StackError, match=r"^pins\.toml pins SkyRL 0df41af50000, but render checks --set against "
                                         r"SkyRL 1ed499cce4df's config$"):
        skyrl_config.config_dir()
