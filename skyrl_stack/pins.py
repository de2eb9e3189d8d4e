"""Load the pins (``pins.toml``), the single source of truth for image inputs.

Everything that needs a version, a digest or a commit asks this module; nothing
else parses ``pins.toml``. Kept to the standard library because it also runs
inside the image (the manifest writer and the smoke suite import it).
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from skyrl_stack.errors import StackError

PINS_FILE = Path(__file__).with_name("pins.toml")


@dataclass(frozen=True)
class Variant:
    """One image variant: a Dockerfile target plus what it is expected to hold."""

    name: str
    target: str
    description: str
    gpu: bool
    python: str
    base_image: str
    apt_snapshot: str
    skyrl_extra: str | None = None
    lock: str | None = None
    expect: dict[str, str] = field(default_factory=dict)

    @property
    def has_skyrl(self) -> bool:
        return self.skyrl_extra is not None

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def inference_backend(self) -> str | None:
        """The SkyRL ``generator.backend`` this image can serve, if any."""
        return self.skyrl_extra


@dataclass(frozen=True)
class Pins:
    raw: dict

    @property
    def base_image(self) -> str:
        return self.raw["base"]["image"]

    @property
    def cuda(self) -> str:
        return self.raw["base"]["cuda"]

    @property
    def platform(self) -> str:
        return self.raw["base"]["platform"]

    @property
    def python(self) -> str:
        return self.raw["python"]["version"]

    @property
    def uv(self) -> str:
        return self.raw["python"]["uv"]

    @property
    def uv_sha256(self) -> str:
        return self.raw["python"]["uv_sha256"]

    @property
    def ray(self) -> str:
        return self.raw["ray"]["version"]

    @property
    def ray_port(self) -> int:
        return int(self.raw["ray"]["port"])

    @property
    def ray_ports(self) -> dict[str, int]:
        """Our Ray's other ports by name; skyrl-ray-up passes each as `--<name with dashes>-port`."""
        return {name: int(port) for name, port in self.raw["ray"].get("ports", {}).items()}

    @property
    def skyrl_repo(self) -> str:
        return self.raw["skyrl"]["repo"]

    @property
    def skyrl_ref(self) -> str:
        return self.raw["skyrl"]["ref"]

    @property
    def skyrl_commit(self) -> str:
        return self.raw["skyrl"]["commit"]

    @property
    def skyrl_subdir(self) -> str:
        return self.raw["skyrl"]["subdir"]

    @property
    def skypilot_tested(self) -> str:
        return self.raw["skypilot"]["tested"]

    @property
    def source_date_epoch(self) -> int:
        """Build timestamp for every file and the image config.

        Derived from the pins (the pinned SkyRL commit's own time), never from
        the clock, so two builds of the same pins produce the same digest.
        """
        stamp = self.raw["skyrl"]["commit_time"].replace("Z", "+00:00")
        return int(datetime.fromisoformat(stamp).timestamp())

    @property
    def variant_names(self) -> list[str]:
        return list(self.raw["variants"])

    def variant(self, name: str) -> Variant:
        spec = self.raw["variants"].get(name)
        if spec is None:
            raise StackError(
                f"unknown variant {name!r}",
                hint=f"choose one of: {', '.join(self.variant_names)}",
            )
        return Variant(
            name=name,
            target=spec["target"],
            description=spec["description"],
            gpu=bool(spec.get("gpu", False)),
            python=spec.get("python", self.python),
            base_image=spec.get("base_image", self.base_image),
            apt_snapshot=spec.get("apt_snapshot", self.raw["base"].get("apt_snapshot", "")),
            skyrl_extra=spec.get("skyrl_extra"),
            lock=spec.get("lock"),
            expect=dict(spec.get("expect", {})),
        )

    def digest(self) -> str:
        """A short, stable hash of every pin: names the exact content an image holds."""
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@lru_cache(maxsize=None)
def _load(path: Path) -> Pins:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StackError(f"cannot read pins file {path}: {exc}") from exc
    return Pins(raw)


def load_pins(path: Path | None = None) -> Pins:
    return _load(Path(path) if path else PINS_FILE)
