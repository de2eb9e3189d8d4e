"""infra/skypilot/config.yaml against SkyPilot's own config schema (offline, no API server)."""
from __future__ import annotations

import pytest
import yaml

from tests.support.paths import REPO_ROOT

CONFIG = REPO_ROOT / "infra" / "skypilot" / "config.yaml"


def validate_skypilot_config(config: dict) -> None:
    """Raise if SkyPilot (the installed version) would reject this config layer."""
    from sky.utils import common_utils, schemas

    common_utils.validate_schema(config, schemas.get_config_schema(), "Invalid config YAML: ")


def test_config_layer_passes_skypilot_schema():
    config = yaml.safe_load(CONFIG.read_text())
    validate_skypilot_config(config)
    # SkyPilot's list form, first match wins: controllers get a profile that can launch, every other
    # cluster the node profile; infra.skypilot-config fills both in (applied by SkyPilot: test_node_identity).
    assert config["aws"]["remote_identity"] == [{"sky-jobs-controller-*": "SKYRL_STACK_CONTROLLER_PROFILE"},
                                                {"sky-serve-controller-*": "SKYRL_STACK_CONTROLLER_PROFILE"},
                                                {"*": "SKYRL_STACK_INSTANCE_PROFILE"}]
    assert "--ipc=host" in config["docker"]["run_options"]


def test_skypilots_loader_reads_the_layer_as_a_project_config(tmp_path, monkeypatch):
    """sky/skypilot_config.py loads it as SkyPilot's client does (SKYPILOT_PROJECT_CONFIG over ~/.sky/config.yaml)."""
    from sky import skypilot_config

    (tmp_path / ".sky").mkdir()
    (tmp_path / ".sky" / "config.yaml").write_text("aws:\n  use_internal_ips: true\n")  # the user's own
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SKYPILOT_PROJECT_CONFIG", str(CONFIG))
    try:
        skypilot_config.reload_config()
        assert skypilot_config.get_nested(("aws", "remote_identity"), None)[-1] == {"*": "SKYRL_STACK_INSTANCE_PROFILE"}
        assert skypilot_config.get_nested(("aws", "use_internal_ips"), None) is True  # the user's config is kept
    finally:
        monkeypatch.undo()
        skypilot_config.reload_config()


def test_schema_check_can_fail():
    """The check above means something: a misspelt key is rejected by SkyPilot's schema."""
    config = yaml.safe_load(CONFIG.read_text())
    config["aws"]["remote_identiy"] = config["aws"].pop("remote_identity")
    with pytest.raises(ValueError, match="remote_identiy"):
        validate_skypilot_config(config)


def test_a_stack_from_before_the_controller_profile_is_asked_to_update(state_dir):
    """Outputs recorded from an older stack (no controller profile): one line saying how to update it."""
    import json

    from skyrl_stack.errors import StackError
    from skyrl_stack.infra.skypilot_config import write_skypilot_config

    (state_dir / "infra").mkdir(parents=True)
    (state_dir / "infra" / "aws-us-west-2.json").write_text(json.dumps({
        "cloud": "aws", "region": "us-west-2", "stack_name": "skyrl-stack-registry",
        "outputs": {"RepositoryUri": "123456789012.dkr.ecr.us-west-2.amazonaws.com/skyrl-stack",
                    "InstanceProfileName": "node-profile", "InstanceProfileArn": "arn:aws:iam::1:instance-profile/n"}}))
    with pytest.raises(StackError, match=r"^stack skyrl-stack-registry in us-west-2 lacks the outputs "
                                         r"ControllerInstanceProfileName$") as refused:
        write_skypilot_config("us-west-2")
    assert refused.value.hint == "update it: invoke infra.up --cloud aws --region us-west-2"
    assert not (state_dir / "infra" / "skypilot-aws-us-west-2.yaml").exists()
