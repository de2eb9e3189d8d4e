"""Build records on disk: what push, smoke, render and launch read back."""
from __future__ import annotations

import json

from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.records import BuildRecord, build_record_path, load_build_record

SHA = "sha256:" + "cd" * 32


def test_a_push_recorded_before_the_rename_reads_as_smoke_gate_skipped(state_dir):
    """Records pushed before --skip-smoke-gate had one name said pushed.gate_overridden; they read under
    the one name (smoke_gate_skipped), so a reader of the record never needs both."""
    pins = load_pins()
    BuildRecord(variant="rehearsal", repository="ghcr.io/me/app", digest=SHA, tags=[], pins_digest=pins.digest(),
                pins=pins.raw, source_date_epoch=0, base_image="b", built_at="t", build_seconds=1).save()
    path = build_record_path("rehearsal")
    data = json.loads(path.read_text())
    data["pushed"] = {"ref": f"ghcr.io/me/app@{SHA}", "gate_overridden": True, "human_tags": True}
    path.write_text(json.dumps(data))
    pushed = load_build_record("rehearsal").pushed
    assert pushed["smoke_gate_skipped"] is True and "gate_overridden" not in pushed
