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
    assert config["aws"]["remote_identity"] == "SKYRL_STACK_INSTANCE_PROFILE"  # filled by infra.skypilot-config
    assert "--ipc=host" in config["docker"]["run_options"]


def test_schema_check_can_fail():
    """The check above means something: a misspelt key is rejected by SkyPilot's schema."""
    config = yaml.safe_load(CONFIG.read_text())
    config["aws"]["remote_identiy"] = config["aws"].pop("remote_identity")
    with pytest.raises(ValueError, match="remote_identiy"):
        validate_skypilot_config(config)
