"""Build records: what `invoke build` produced, read by push, smoke, render and launch.

One JSON file per variant under the state directory (``.skyrl-stack/`` beside
``tasks.py``, or in ``$SKYRL_STACK_WORKSPACE``: see skyrl_stack/project.py). Later tasks read the record instead
of re-deriving refs or digests, so the YAML that launches is the image that was
built and tested.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.refs import check_digest, parse_reference, validate_repository
from skyrl_stack.project import shown, workspace


def state_dir() -> Path:
    return workspace() / ".skyrl-stack"


@contextlib.contextmanager
def workspace_write(path: Path, hint: str | None = None):
    """Writes under `path` fail in one line, not a traceback: a full disk, a read-only
    mount, no permission, a parent that is a file (every OSError is the filesystem's answer)."""
    try:
        yield
    except OSError as exc:
        raise StackError(
            f"cannot write {shown(path)}: {exc.strerror or exc}",
            hint=hint or (f"free space on or make writable the workspace {shown(workspace())} (or set "
                          "SKYRL_STACK_WORKSPACE to another folder); what was written there before is intact"),
        ) from None


def write_text_atomic(path: Path, text: str, hint: str | None = None) -> None:
    """Write via a temp file and rename, so a crash or a full disk never leaves half a file
    (the old one stays); a failure is one line (workspace_write, with `hint`)."""
    path = Path(path)
    with workspace_write(path, hint):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; nothing written this way is secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


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
    layers: dict = field(default_factory=dict)  # compressed layer digest -> size; empty since builds export into the engine store (it exposes no manifest)
    fingerprint: str = ""  # hash of every build input (build.input_fingerprint)
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
        pushed = data.get("pushed") or {}
        if "gate_overridden" in pushed:  # the name records had before --skip-smoke-gate's one name
            pushed["smoke_gate_skipped"] = pushed.pop("gate_overridden")
        record = BuildRecord(**data)
    except (ValueError, TypeError) as exc:
        raise StackError(
            f"build record {path} is unreadable: {exc}",
            hint=f"rebuild it: invoke build --variant {variant}",
        ) from exc
    _check_references(record, path)
    return record


def _check_references(record: BuildRecord, path: Path) -> None:
    """The record's references go into tags, pushes and image_id: check them by the grammar on the way in."""
    try:
        validate_repository(record.repository, what=f"repository in {path}")
        check_digest(record.digest, where=f"in {path}")
        if record.pushed_ref:
            parse_reference(record.pushed_ref, what=f"pushed reference in {path}")
    except StackError as exc:
        raise StackError(exc.message, hint=f"rebuild it: invoke build --variant {record.variant}") from None
