"""Build records: what `invoke build` produced, read by push, smoke, render and launch.

One JSON file per variant under the state directory (``.skyrl-stack/`` beside
``tasks.py``, or ``$SKYRL_STACK_STATE_DIR``). Later tasks read the record instead
of re-deriving refs or digests, so the YAML that launches is the image that was
built and tested.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skyrl_stack.errors import StackError


def state_dir() -> Path:
    return Path(os.environ.get("SKYRL_STACK_STATE_DIR", ".skyrl-stack")).resolve()


def write_json_atomic(path: Path, data: dict) -> None:
    """Write via a temp file and rename, so a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


@dataclass
class BuildRecord:
    variant: str
    repository: str  # e.g. 127.0.0.1:5000/skyrl-stack
    digest: str  # sha256:... of the image manifest (what a registry will report)
    tags: list[str]  # full refs: descriptive tag first, then the pins-hash tag
    pins_digest: str
    pins: dict
    source_date_epoch: int
    base_image: str
    built_at: str  # wall clock of the build, for humans; never inside the image
    build_seconds: float
    pushed: dict = field(default_factory=dict)  # filled by `invoke push`

    @property
    def ref(self) -> str:
        """The local image reference by digest."""
        return f"{self.repository}@{self.digest}"

    @property
    def pushed_ref(self) -> str | None:
        return self.pushed.get("ref")

    def save(self) -> Path:
        path = build_record_path(self.variant)
        write_json_atomic(path, asdict(self))
        return path


def build_record_path(variant: str) -> Path:
    return state_dir() / "builds" / f"{variant}.json"


def load_build_record(variant: str) -> BuildRecord:
    path = build_record_path(variant)
    if not path.exists():
        raise StackError(
            f"no build record for variant {variant!r} ({path})",
            hint=f"run: invoke build --variant {variant}",
        )
    try:
        data = json.loads(path.read_text())
        return BuildRecord(**data)
    except (ValueError, TypeError) as exc:
        raise StackError(
            f"build record {path} is unreadable: {exc}",
            hint=f"rebuild it: invoke build --variant {variant}",
        ) from exc
