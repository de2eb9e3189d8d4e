"""Load the pins (``pins.toml``), the single source of truth for image inputs.

Everything that needs a version, a digest or a commit asks this module; nothing
else parses ``pins.toml``. Kept to the standard library, and to Python 3.10,
because it also runs inside the image (the manifest writer and the smoke suite
import it) and on a bare GPU host (`python3 -m skyrl_stack.smoke --host` with
Ubuntu 22.04's Python 3.10, which has no ``tomllib``).

The file is checked against :data:`SCHEMA` on load, so a missing, misspelled or
ill-typed key is one ``error:`` line naming the key and the file, never a
KeyError deep inside a build.

No version lives in two places: what a variant is expected to hold
(:attr:`Variant.expect`) is assembled from ``[ray] version``, ``[base] cuda``,
``[skyrl.expect]`` and the variant's own ``expect`` table, and
:attr:`Variant.pin_keys` names the pin each expectation comes from, so a check
that finds a disagreement can say which line of ``pins.toml`` to change.
"""
from __future__ import annotations

import hashlib
import json
import re
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
    # SkyRL's optional-dependency extra (skyrl-train's pyproject), None for an image without
    # SkyRL. SkyRL names its extras after the inference engine, which is also its config's
    # generator.backend: the one value stands for all three (no second name in the code).
    skyrl_extra: str | None = None
    lock: str | None = None
    expect: dict[str, str] = field(default_factory=dict)
    # expectation -> the pin it comes from, e.g. "ray" -> "[ray] version"
    pin_keys: dict[str, str] = field(default_factory=dict)
    # package -> the SkyRL extra whose locked prebuilt wheel of it this variant installs (layers.py prebuilt)
    prebuilt: dict[str, str] = field(default_factory=dict)

    @property
    def has_skyrl(self) -> bool:
        return self.skyrl_extra is not None

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])


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
    def dockerfile_frontend(self) -> str:
        """The GPU targets' Dockerfile frontend image, by digest (build argument BUILDKIT_SYNTAX)."""
        return self.raw["build"]["dockerfile_frontend"]

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
    def skyrl_expect(self) -> dict[str, str]:
        """Versions SkyRL's lock gives every SkyRL variant (e.g. torch, flash-attn)."""
        return dict(self.raw["skyrl"].get("expect", {}))

    @property
    def ray_ports(self) -> dict[str, int]:
        """Our Ray's other ports by name; skyrl-ray-up passes each as `--<name with dashes>-port`."""
        return {name: int(port) for name, port in self.raw["ray"]["ports"].items()}

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
    def skyrl_patches(self) -> dict[str, str]:
        """Patches of SkyRL's checkout in the order they apply: name (docker/patches/<name>.patch) -> sha256."""
        return dict(self.raw["skyrl"].get("patches", {}))

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
        # Assembled from the one place each version lives (see the module docstring).
        expect: dict[str, str] = {"ray": self.ray}
        pin_keys = {"ray": "[ray] version"}
        if spec.get("gpu", False):
            expect["torch_cuda"], pin_keys["torch_cuda"] = self.cuda, "[base] cuda"
        if spec.get("skyrl_extra") is not None:
            for package, version in self.skyrl_expect.items():
                expect[package], pin_keys[package] = version, f"[skyrl.expect] {package}"
        for package, version in spec.get("expect", {}).items():
            expect[package], pin_keys[package] = version, f"[variants.{name}.expect] {package}"
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
            expect=dict(sorted(expect.items())),
            pin_keys=pin_keys,
            prebuilt=dict(sorted(spec.get("prebuilt", {}).items())),
        )

    def digest(self) -> str:
        """A short, stable hash of every pin: names the exact content an image holds."""
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        if len(self.skyrl_patches) > 1:
            # sort_keys forgets the order [skyrl.patches] apply in, which is part of what the image holds
            # (SKYRL_PATCHES); with one patch there is no order, and the digest stays what it was.
            canonical += json.dumps(list(self.skyrl_patches))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- schema
# A table is a dict of key -> Key; Table(of=...) is a table whose keys are free
# (names chosen by the user) and whose values all have one type.


@dataclass(frozen=True)
class Key:
    type: object  # str | int | bool | a dict schema | Table
    required: bool = True
    why: str = ""  # said when the key is refused (e.g. where the value lives instead)
    check: object = None  # value -> the problem with it, or None (run once the type is right)


def _image_by_digest(value: str) -> str | None:
    """An image reference by the distribution grammar (refs.parse_reference), pinned by its digest.

    refs.py is standard library and 3.10 too; the image carries it beside this file (the stack stage).
    """
    from skyrl_stack.image.refs import ReferenceError, parse_reference

    try:
        reference = parse_reference(value)
    except ReferenceError as problem:
        return problem.message
    return None if reference.digest else f"image {value!r} is not pinned by digest (append @sha256:<64 hex>)"


@dataclass(frozen=True)
class Table:
    of: object  # the type of every value
    reserved: tuple = ()  # (key, reason) pairs refused in this table


def _patch_names_and_digests(patches: dict) -> str | None:
    """[skyrl.patches]: each name is a file name (docker/patches/<name>.patch), each value a sha256."""
    for name, digest in patches.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            return f"{name!r} is not a patch file name (letters, digits, '.', '_', '-')"
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            return f"{name}: {digest!r} is not a sha256 (64 lowercase hex digits)"
    return None


# skyrl-ray-up passes each as `ray start --<name with dashes>-port` (min/max_worker: the worker range).
RAY_PORT_NAMES = ("dashboard", "dashboard_agent_listen", "dashboard_agent_grpc", "ray_client_server", "node_manager",
                  "object_manager", "metrics_export", "runtime_env_agent", "min_worker", "max_worker")
_EXPECT = Table(of=str, reserved=(
    ("ray", "Ray's version lives in [ray] version"),
    ("torch_cuda", "the CUDA version lives in [base] cuda"),
))
_VARIANT = {
    "target": Key(str),
    "description": Key(str),
    "gpu": Key(bool),
    "skyrl_extra": Key(str, required=False),
    "python": Key(str, required=False),
    "base_image": Key(str, required=False),
    "apt_snapshot": Key(str, required=False),
    "lock": Key(str, required=False),
    "expect": Key(_EXPECT, required=False),
    "prebuilt": Key(Table(of=str), required=False),
}
SCHEMA = {
    "build": Key({"dockerfile_frontend": Key(str, check=_image_by_digest)}),
    "base": Key({"image": Key(str), "cuda": Key(str), "platform": Key(str), "apt_snapshot": Key(str)}),
    "python": Key({"version": Key(str), "uv": Key(str), "uv_sha256": Key(str)}),
    # [ray.ports]: every port our Ray opens besides `port`, each required: one left
    # out would fall back to Ray's default, which may be SkyPilot's (tests/launch/test_ray_ports.py).
    "ray": Key({"version": Key(str), "port": Key(int), "ports": Key({name: Key(int) for name in RAY_PORT_NAMES})}),
    "skyrl": Key({
        "repo": Key(str), "ref": Key(str), "commit": Key(str), "commit_time": Key(str), "subdir": Key(str),
        "expect": Key(_EXPECT, required=False),
        "patches": Key(Table(of=str), required=False, check=_patch_names_and_digests),
    }),
    "skypilot": Key({"tested": Key(str)}),
    "variants": Key(Table(of=_VARIANT)),
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def schema_errors(raw: dict, schema: dict = SCHEMA, where: tuple = ()) -> list[str]:
    """Every way `raw` departs from the schema, each as '[table] key: problem'."""
    problems = []
    for name, value in raw.items():
        if name not in schema:
            problems.append(f"{_name(where, name)}: unknown key (expected one of: {', '.join(sorted(schema))})")
            continue
        found = _value_errors(value, schema[name].type, where + (name,))
        if not found and schema[name].check is not None and (problem := schema[name].check(value)):
            found = [f"{_name(where, name)}: {problem}"]
        problems += found
    for name, key in schema.items():
        if key.required and name not in raw:
            problems.append(f"{_name(where, name)}: missing")
    return problems


def _value_errors(value, expected, where: tuple) -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(value, dict):
            return [f"{_name(where[:-1], where[-1])}: must be a table, not {_shown(value)}"]
        return schema_errors(value, expected, where)
    if isinstance(expected, Table):
        if not isinstance(value, dict):
            return [f"{_name(where[:-1], where[-1])}: must be a table, not {_shown(value)}"]
        reserved = dict(expected.reserved)
        problems = []
        for name, item in value.items():
            if name in reserved:
                problems.append(f"{_name(where, name)}: not allowed here ({reserved[name]})")
            else:
                problems += _value_errors(item, expected.of, where + (name,))
        return problems
    # bool is an int in Python; a port of `true` is still wrong.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return [f"{_name(where[:-1], where[-1])}: must be {_TYPE_NAMES[expected]}, not {_shown(value)}"]
    return []


def _name(table: tuple, key: str) -> str:
    return f"[{'.'.join(table)}] {key}" if table else f"[{key}]"


def _shown(value) -> str:
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {json.dumps(value, default=str)}"


def _toml():
    """tomllib (Python 3.11+), else tomli; Python 3.10 hosts have tomli at least inside pip."""
    try:
        import tomllib  # novermin (guarded: 3.10 falls through to tomli)
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            try:
                from pip._vendor import tomli as tomllib  # pip >= 21.2 vendors it
            except ModuleNotFoundError:
                raise StackError("cannot read pins.toml: this Python has no TOML reader",
                                 hint="use Python >= 3.11, or pip install tomli") from None
    return tomllib


@lru_cache(maxsize=None)
def _load(path: Path) -> Pins:
    tomllib = _toml()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StackError(f"cannot read pins file {path}: {exc}") from exc
    problems = schema_errors(raw)
    hint = "fix that key; the schema is SCHEMA in skyrl_stack/image/pins.py"
    if not problems:  # well typed: then what the values mean (ports, extras, per-variant keys)
        from skyrl_stack.image.pins_meaning import meaning_errors

        problems = meaning_errors(raw)
        hint = "fix that key; skyrl_stack/image/pins_meaning.py says what each must be"
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StackError(f"pins file {path}: {problems[0]}{more}", hint=hint)
    return Pins(raw)


def load_pins(path: Path | None = None) -> Pins:
    return _load(Path(path) if path else PINS_FILE)
