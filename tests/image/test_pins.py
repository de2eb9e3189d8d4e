"""Pins are inputs: the schema of pins.toml, and the checks of the locks against the pins.

The GPU-variant check runs here exactly as the Dockerfile's skyrl-lock-check
stage runs it (`uv export --frozen` with uv 0.8.22, piped into
skyrl_stack/image/lock_check.py run as a script) against SkyRL's real uv.lock at the
pinned commit (tests/data/skyrl-1ed499c, see SOURCE.md there).
"""
from __future__ import annotations

import copy
import gzip
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.image import pins as pins_module
from skyrl_stack.image import rehearsal_lock
from skyrl_stack.image.lock_check import expectations, locked_versions
from skyrl_stack.image.pins import PINS_FILE, Pins, load_pins, schema_errors

from tests.support.layout import image_modules
from tests.support.paths import DATA, REPO_ROOT
SKYRL_LOCK = DATA / "skyrl-1ed499c"
LOCK_CHECK = REPO_ROOT / "skyrl_stack" / "image" / "lock_check.py"
# The export the skyrl-lock-check stage runs (asserted to be in the Dockerfile below).
EXPORT = "uv export --frozen --no-hashes --no-emit-project --extra"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def real_raw() -> dict:
    return tomllib.loads(PINS_FILE.read_text())


def write_pins(tmp_path: Path, raw: dict) -> Path:
    """A pins file from a dict (TOML written by hand: the stdlib has no writer)."""
    lines = []

    def table(prefix: str, data: dict) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
        lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in scalars.items())
        for key, value in data.items():
            if isinstance(value, dict):
                table(f"{prefix}.{json.dumps(key)}", value)

    for name, value in raw.items():
        table(json.dumps(name), value)
    path = tmp_path / "pins.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- schema


def test_real_pins_pass_the_schema_and_each_version_lives_once():
    raw = real_raw()
    assert schema_errors(raw) == []
    vllm = load_pins().variant("vllm")
    assert vllm.expect == {"flash-attn": "2.8.0.post2", "ray": "2.48.0", "torch": "2.7.1", "torch_cuda": "12.8",
                           "vllm": "0.10.1.1"}
    assert vllm.pin_keys["ray"] == "[ray] version" and vllm.pin_keys["torch_cuda"] == "[base] cuda"
    assert vllm.pin_keys["vllm"] == "[variants.vllm.expect] vllm"
    # Ray's version is written once in the file (it used to be in every expect table too).
    assert len(re.findall(r'"2\.48\.0"', PINS_FILE.read_text())) == 1


def _leaf_keys(raw: dict, where: tuple = ()) -> list[tuple]:
    found = []
    for key, value in raw.items():
        if isinstance(value, dict) and key not in ("expect", "prebuilt", "patches"):
            found += _leaf_keys(value, where + (key,))
        else:
            found.append(where + (key,))
    return found


REQUIRED = [k for k in _leaf_keys(real_raw()) if k[-1] not in ("skyrl_extra", "python", "base_image", "apt_snapshot",
                                                                  "lock", "expect", "prebuilt", "patches")
            or k == ("base", "apt_snapshot")]


@pytest.mark.parametrize("path", REQUIRED, ids=lambda p: ".".join(p))
def test_a_missing_key_is_one_line_naming_key_and_file(tmp_path, path):
    raw = real_raw()
    node = raw
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    pins_file = write_pins(tmp_path, raw)
    with pytest.raises(StackError, match=re.escape(f"pins file {pins_file}: ")) as info:
        load_pins(pins_file)
    table = ".".join(path[:-1])
    assert f"[{table}] {path[-1]}: missing" in info.value.message
    assert "\n" not in info.value.render().split("\nhint:")[0]


def test_misspelled_and_ill_typed_keys(tmp_path):
    raw = real_raw()
    raw["ray"]["versoin"] = raw["ray"].pop("version")
    with pytest.raises(StackError, match=r"\[ray\] versoin: unknown key \(expected one of: port, ports, version\)"):
        load_pins(write_pins(tmp_path, raw))
    raw = real_raw()
    raw["ray"]["port"] = "6479"
    assert schema_errors(raw) == ['[ray] port: must be an integer, not str "6479"']
    raw = real_raw()
    raw["variants"]["vllm"]["gpu"] = "yes"
    assert schema_errors(raw) == ['[variants.vllm] gpu: must be true or false, not str "yes"']
    raw = real_raw()
    raw["ray"]["port"] = True  # a bool is an int to Python, not to the schema
    assert schema_errors(raw) == ["[ray] port: must be an integer, not bool true"]


def test_a_version_cannot_be_written_twice():
    raw = real_raw()
    raw["variants"]["vllm"]["expect"]["ray"] = "2.48.0"
    assert schema_errors(raw) == ["[variants.vllm.expect] ray: not allowed here (Ray's version lives in [ray] version)"]


@pytest.mark.parametrize("value, problem", [
    ("docker/dockerfile:1.19", "image 'docker/dockerfile:1.19' is not pinned by digest"),
    ("docker/dockerfile:1.19@sha256:b6afd424", "malformed digest 'sha256:b6afd424'"),
    ("Docker/Dockerfile:1.19", "repository names must be lowercase"),
])
def test_the_dockerfile_frontend_must_be_an_image_pinned_by_digest(tmp_path, value, problem):
    """[build] dockerfile_frontend goes to BuildKit as BUILDKIT_SYNTAX: a tag alone would let the frontend move
    under the build. Checked by the reference grammar (refs.parse_reference) when the file is read."""
    raw = real_raw()
    raw["build"]["dockerfile_frontend"] = value
    with pytest.raises(StackError, match=re.escape(problem)) as info:
        load_pins(write_pins(tmp_path, raw))
    assert info.value.message.startswith(f"pins file {tmp_path / 'pins.toml'}: [build] dockerfile_frontend: ")
    assert "\n" not in info.value.message


def test_ray_ports_are_all_named_and_typed():
    """Each of our Ray's ports is required by name: a typo or a missing one would leave Ray's default in place."""
    raw = real_raw()
    assert schema_errors(raw) == []
    raw["ray"]["ports"]["dashboard"] = "20265"
    raw["ray"]["ports"]["dashbord"] = 20265
    del raw["ray"]["ports"]["min_worker"]
    errors = schema_errors(raw)
    assert '[ray.ports] dashboard: must be an integer, not str "20265"' in errors
    assert any(e.startswith("[ray.ports] dashbord: unknown key") for e in errors)
    assert "[ray.ports] min_worker: missing" in errors and len(errors) == 3


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["base", "python", "ray", "skyrl", "skypilot"]),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
       st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2)))
def test_any_unknown_key_is_named(table, key, value):
    raw = real_raw()
    if key in raw[table]:
        return
    raw[table][key] = value
    assert schema_errors(raw) == [f"[{table}] {key}: unknown key (expected one of: "
                                  + ", ".join(sorted(pins_module.SCHEMA[table].type)) + ")"]


def test_the_package_ships_the_pins_file():
    """An installed skyrl_stack (a wheel) must carry pins.toml beside pins.py, or load_pins fails there:
    pyproject's package-data names it the way setuptools reads it (paths relative to the package)."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    shipped = {path for pattern in config["tool"]["setuptools"]["package-data"]["skyrl_stack"]
               for path in (REPO_ROOT / "skyrl_stack").glob(pattern)}
    assert PINS_FILE.resolve() in {path.resolve() for path in shipped}


def test_the_package_ships_every_data_file_the_code_reads():
    """Every tracked file under skyrl_stack/ that is not Python is read beside its module (pins.toml,
    dev/published_sizes.toml, launch/image_bytes.json: `invoke render`'s pull plan), so a wheel (a plain
    `pip install`, not the editable install CI uses) must carry each: a missing one is a FileNotFoundError
    traceback at render."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    shipped = {path.resolve() for pattern in config["tool"]["setuptools"]["package-data"]["skyrl_stack"]
               for path in (REPO_ROOT / "skyrl_stack").glob(pattern)}
    tracked = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "skyrl_stack"], capture_output=True, text=True,
                             check=True).stdout.split()
    data = {(REPO_ROOT / name).resolve() for name in tracked if not name.endswith(".py")}
    assert data and data <= shipped, sorted(str(path) for path in data - shipped)


def test_pins_load_on_python_310_without_tomllib():
    """Ubuntu 22.04's python3 (3.10) has no tomllib; pins.py falls back to pip's vendored tomli.
    Simulated by hiding tomllib (no 3.10 interpreter here; vermin checks the syntax below)."""
    code = ("import sys; sys.modules['tomllib'] = None; sys.modules['tomli'] = None\n"
            "from skyrl_stack.image.pins import load_pins; print(load_pins().variant('vllm').expect['torch_cuda'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "12.8"


def test_host_run_modules_need_no_python_newer_than_310():
    """What runs on a bare GPU host and inside the build with the base's python3 (Ubuntu 22.04: 3.10)."""
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    assert vermin, "vermin (a dev dependency) is not installed"
    # What the image carries, as the Dockerfile names it, and the scripts the build runs with the base's python3.
    files = [f for f in image_modules() if f.endswith(".py")] + ["skyrl_stack/image/layers.py"]
    out = subprocess.run([vermin, "--target=3.10-", "--violations", "--no-tips", "--eval-annotations",
                          "--backport", "typing", *files], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


# ----------------------------------------------------------------------------- SkyRL's lock (GPU variants)


@pytest.fixture(scope="module")
def skyrl_project(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("skyrl-train")
    shutil.copy(SKYRL_LOCK / "pyproject.toml", path / "pyproject.toml")
    (path / "uv.lock").write_bytes(gzip.decompress((SKYRL_LOCK / "uv.lock.gz").read_bytes()))
    return path


def early_check(project: Path, variant, python: str = sys.executable) -> subprocess.CompletedProcess:
    """The skyrl-lock-check stage: uv export of SkyRL's lock, piped into lock_check.py run as a script."""
    assert UV, "uv (a dev dependency, pinned 0.8.22) is not installed"
    export = subprocess.run([UV, *EXPORT.split()[1:], variant.skyrl_extra], cwd=project, capture_output=True,
                            text=True, check=True)
    return subprocess.run([python, str(LOCK_CHECK), "--expect", json.dumps(expectations(variant)),
                           "--source", "SkyRL's uv.lock at 1ed499c"], input=export.stdout,
                          capture_output=True, text=True, check=False)


def test_dockerfile_runs_this_check():
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    stage = dockerfile.split("AS skyrl-lock-check", 1)[1].split("\nFROM ", 1)[0]
    assert EXPORT in stage and "python3 /opt/skyrl-build/lock_check.py --expect" in stage
    venv = "\n".join(line for line in dockerfile.split("AS venv-skyrl", 1)[1].splitlines()
                     if not line.lstrip().startswith("#"))  # instructions only: comments name install-layer too
    # The checked export enters through a bind mount of the check stage (`--mount=type=bind,from=skyrl-lock-check`,
    # then cp: no COPY, see the Dockerfile's SHELL), so the install cannot start before the check has passed.
    assert venv.index("from=skyrl-lock-check") < venv.index("install-layer "), "the check must gate the install"


def test_uv_is_the_pinned_one():
    out = subprocess.run([UV, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == load_pins().uv


@pytest.mark.parametrize("name", ["vllm", "sglang"])
def test_pins_agree_with_skyrls_lock(skyrl_project, name):
    result = early_check(skyrl_project, load_pins().variant(name))
    assert result.returncode == 0, result.stderr
    assert "pins agree with SkyRL's uv.lock at 1ed499c" in result.stdout


@pytest.mark.parametrize("table, key, value, message", [
    ("ray", "version", "2.49.0", 'pin [ray] version = "2.49.0" disagrees with SkyRL\'s uv.lock at 1ed499c: it locks ray 2.48.0'),
    ("base", "cuda", "12.6", 'pin [base] cuda = "12.6" disagrees with SkyRL\'s uv.lock at 1ed499c: its torch is built for CUDA 12.8'),
    ("skyrl.expect", "flash-attn", "2.7.4", "pin [skyrl.expect] flash-attn = \"2.7.4\" disagrees with SkyRL's uv.lock at "
                                            "1ed499c: it locks flash-attn 2.8.0.post2+cu12torch2.7cxx11abiFALSE"),
    ("variants.vllm.expect", "vllm", "0.11.0", 'pin [variants.vllm.expect] vllm = "0.11.0" disagrees with SkyRL\'s '
                                               "uv.lock at 1ed499c: it locks vllm 0.10.1.1"),
])
def test_a_pin_the_lock_does_not_honour_fails_naming_the_pin(skyrl_project, table, key, value, message):
    raw = copy.deepcopy(real_raw())
    node = raw
    for part in table.split("."):
        node = node[part]
    node[key] = value
    result = early_check(skyrl_project, Pins(raw).variant("vllm"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"error: {message}"


def test_lock_versions_from_urls_and_markers():
    locked = locked_versions(
        "torch==2.7.1+cu128\n"
        "    # via vllm\n"
        "-e ./skyrl-gym\n"
        "flash-attn @ https://example.org/flash_attn-2.8.0.post2+cu12torch2.7-cp312-cp312-linux_x86_64.whl\n"
        "torchvision==0.22.1 ; platform_machine == 'aarch64'\n"
        "torchvision==0.22.1+cu128 ; platform_machine != 'aarch64'\n"
        "Flash_Infer-Python @ https://example.org/flashinfer_python-0.2.6.post1%2Bcu128torch2.7-cp39-abi3-linux_x86_64.whl\n"
        "ray==2.48.0 \\\n    --hash=sha256:00\n"
    )
    assert locked == {"torch": {"2.7.1+cu128"}, "flash-attn": {"2.8.0.post2+cu12torch2.7"},
                      "torchvision": {"0.22.1", "0.22.1+cu128"}, "flash-infer-python": {"0.2.6.post1+cu128torch2.7"},
                      "ray": {"2.48.0"}}


# ----------------------------------------------------------------------------- the rehearsal lock


def test_rehearsal_lock_agrees_with_pins_and_is_made_from_them():
    variant = load_pins().variant("rehearsal")
    rehearsal_lock.check(variant)
    assert rehearsal_lock.requirements(variant) == "ray==2.48.0\n"


def test_build_fails_in_its_first_second_naming_the_pin(tmp_path, monkeypatch, state_dir):
    """Done-when of issue 9: a Ray pin the lock does not install fails `invoke build` before BuildKit starts."""
    from skyrl_stack.image.build import build_variants

    raw = real_raw()
    raw["ray"]["version"] = "2.49.0"
    monkeypatch.setattr(pins_module, "PINS_FILE", write_pins(tmp_path, raw))
    with pytest.raises(StackError, match=re.escape('pin [ray] version = "2.49.0" disagrees with '
                                                   "docker/rehearsal/requirements.lock: it locks ray 2.48.0")):
        build_variants(["rehearsal"], "127.0.0.1:5000/never-built")
    assert not (state_dir / "build" / "bake.json").exists()


def test_broken_pins_file_is_one_line_from_the_cli(tmp_path):
    """Through `invoke build` as a user runs it: error + hint, no traceback."""
    raw = real_raw()
    del raw["python"]["uv"]
    broken = write_pins(tmp_path, raw)
    code = ("import sys; from skyrl_stack.image import pins; from pathlib import Path; pins.PINS_FILE = Path(sys.argv[1]);"
            "from invoke.main import program; program.run(['invoke', 'build', '--variant', 'rehearsal'])")
    out = subprocess.run([sys.executable, "-c", code, str(broken)], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=False)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[0] == f"error: pins file {broken}: [python] uv: missing"
    assert "Traceback" not in out.stderr


def test_the_pins_digest_names_the_order_the_patches_apply_in():
    """[skyrl.patches] apply in file order (SKYRL_PATCHES), so two orders are two images: the pins digest (and the
    pins tag) must differ, while a single patch keeps the digest it always had."""
    from skyrl_stack.image.pins import Pins, load_pins

    raw = copy.deepcopy(load_pins().raw)
    one = dict(raw["skyrl"]["patches"])
    assert Pins(copy.deepcopy(raw)).digest() == load_pins().digest() and len(one) == 1
    first, second = (copy.deepcopy(raw) for _ in range(2))
    first["skyrl"]["patches"] = {**one, "b-second": "b" * 64}
    second["skyrl"]["patches"] = {"b-second": "b" * 64, **one}
    assert list(Pins(first).skyrl_patches) != list(Pins(second).skyrl_patches)
    assert Pins(first).digest() != Pins(second).digest()
