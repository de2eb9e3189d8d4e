"""The smoke suite's machinery and CPU-side checks, run here without Docker.

Covers ordering and skip semantics (skipped never counts as passed), the three
report formats agreeing, drift and prerequisite detection, and a real --host
run of the CPU tiers of this machine.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from skyrl_stack.image.pins import load_pins
from skyrl_stack.smoke import environment, report
from skyrl_stack.smoke.main import ALL_CHECKS, parse_gpus, parse_tiers
from skyrl_stack.smoke.skyrl import expand
from skyrl_stack.smoke.suite import TIERS, Check, Context, Fail, Skip, run_checks
from tests.conftest import REPO_ROOT


def _passes(ctx):
    return "fine"


def _fails(ctx):
    raise Fail("broken thing")


def _crashes(ctx):
    raise KeyError("boom")


def _skips(ctx):
    raise Skip("not in this variant")


def test_checks_cover_every_tier_in_order_with_unique_names():
    names = [c.name for c in ALL_CHECKS]
    assert len(names) == len(set(names))
    assert [t for t in dict.fromkeys(c.tier for c in ALL_CHECKS)] == list(TIERS)


def test_statuses_and_blocked_prerequisites():
    cleaned = []
    ctx = Context(host=True, gpus="none")
    ctx.cleanups.append(lambda: cleaned.append(True))
    checks = [
        Check("a.ok", _passes),
        Check("a.bad", _fails),
        Check("a.crash", _crashes),
        Check("a.skip", _skips),
        Check("b.after-bad", _passes, requires=("a.bad",)),
        Check("b.after-skip", _passes, requires=("a.skip",)),
        Check("b.after-ok", _passes, requires=("a.ok",)),
    ]
    results = {r.name: r for r in run_checks(checks, ctx)}
    assert results["a.ok"].status == "passed" and results["a.ok"].detail == "fine"
    assert results["a.bad"].status == "failed" and results["a.bad"].detail == "broken thing"
    assert results["a.crash"].status == "failed" and results["a.crash"].detail.startswith("KeyError")
    assert results["a.skip"].status == "skipped"
    assert results["b.after-bad"].status == "skipped" and results["b.after-bad"].detail == "blocked: a.bad failed"
    # A prerequisite's skip reason carries over, so GPU checks all read "no GPU visible".
    assert results["b.after-skip"].detail == "not in this variant"
    assert results["b.after-ok"].status == "passed"
    assert cleaned == [True]


def test_reports_agree_with_the_summary(tmp_path):
    ctx = Context(host=True, gpus="none")
    results = run_checks([Check("x.ok", _passes), Check("x.bad", _fails), Check("y.skip", _skips)], ctx)
    report.write_reports(tmp_path, results, 1.5, {"variant": None})

    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["ok"] is False and data["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert [(c["name"], c["status"]) for c in data["checks"]] == [("x.ok", "passed"), ("x.bad", "failed"), ("y.skip", "skipped")]

    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["x.bad"].find("failure").get("message") == "broken thing"
    assert cases["y.skip"].find("skipped").get("message") == "not in this variant"
    assert cases["x.ok"].find("failure") is None and cases["x.ok"].find("skipped") is None

    summary = (tmp_path / "summary.txt").read_text()
    assert "FAILED: 1 passed, 1 failed, 1 skipped" in summary
    assert "first failure: x.bad" in summary


def test_package_drift_names_changed_missing_and_extra():
    drift = environment.package_drift({"ray": "2.48.0", "gone": "1"}, {"ray": "2.47.1", "new": "2"})
    assert drift == ["ray 2.48.0 -> 2.47.1", "gone 1 missing", "new 2 not in manifest"]
    assert environment.package_drift({"a": "1"}, {"a": "1"}) == []


def test_missing_prerequisites_names_each_missing_tool():
    present = {"rsync", "curl", "wget", "patch", "sshd", "pip3", "fusermount", "fusermount3", "nc", "gcc", "lspci"}
    assert environment.missing_prerequisites(find=lambda name: name in present or None) == []
    present -= {"rsync", "fusermount3", "lspci"}
    assert environment.missing_prerequisites(find=lambda name: name in present or None) == ["rsync", "fuse3", "pciutils"]


def test_pinned_package_version_ignores_local_build_label():
    assert environment.public_version("2.7.1+cu128") == "2.7.1"


def test_pinned_packages_detect_drift(monkeypatch):
    variant = load_pins().variant("vllm")
    versions = {"ray": "2.48.0", "torch": "2.7.1+cu128", "vllm": "0.10.1.1", "flash-attn": None}
    monkeypatch.setattr(environment, "installed_version", versions.get)
    ctx = Context(host=False, gpus="none", variant=variant)
    with pytest.raises(Fail, match=r"flash-attn not installed \(pinned 2.8.0.post2\)"):
        environment.check_pinned_packages(ctx)
    versions.update({"flash-attn": "2.8.0.post2", "ray": "2.47.1"})
    with pytest.raises(Fail, match="ray 2.47.1 installed, pinned 2.48.0"):
        environment.check_pinned_packages(ctx)


def test_argument_parsing():
    assert parse_gpus("ALL") == "all" and parse_gpus("2") == "2" and parse_gpus("none") == "none"
    for bad in ("0", "-1", "many"):
        with pytest.raises(Exception, match=f"--gpus takes all, none or a positive count, not {bad!r}"):
            parse_gpus(bad)
    assert parse_tiers(["ray,environment"]) == ["environment", "ray"]
    assert parse_tiers(None) == list(TIERS)
    with pytest.raises(Exception, match="unknown tier"):
        parse_tiers(["gpus"])


def test_overrides_expand_skypilot_variables():
    assert expand("trainer.placement.policy_num_nodes=$SKYPILOT_NUM_NODES") == "trainer.placement.policy_num_nodes=1"
    assert expand("x=${SKYPILOT_NUM_GPUS_PER_NODE}") == "x=1"
    assert expand("x=$NOT_A_SET_VARIABLE_XYZ") == "x=$NOT_A_SET_VARIABLE_XYZ"


def test_host_run_of_cpu_tiers_skips_image_checks(tmp_path):
    """A real `python -m skyrl_stack.smoke --host` on this machine (no manifest, no Ray in .venv)."""
    out = subprocess.run(
        [sys.executable, "-m", "skyrl_stack.smoke", "--host", "--tier", "environment,ray",
         "--gpus", "none", "--report", str(tmp_path), "--manifest", str(tmp_path / "absent.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    data = json.loads((tmp_path / "smoke.json").read_text())
    status = {c["name"]: (c["status"], c["detail"]) for c in data["checks"]}
    assert out.returncode == 0, out.stdout + out.stderr
    assert status["environment.manifest"][0] == "skipped" and "no manifest on this host" in status["environment.manifest"][1]
    assert status["environment.skypilot-prereqs"] == ("skipped", "checks the image, not this host (--host)")
    assert status["environment.python"][1].startswith("variant unknown")
    assert data["ok"] is True and data["host"] is True and data["tiers"] == ["environment", "ray"]


def test_host_run_with_a_cpu_variant_skips_its_cuda_checks(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "skyrl_stack.smoke", "--host", "--variant", "rehearsal", "--tier", "cuda",
         "--report", str(tmp_path), "--manifest", str(tmp_path / "absent.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    status = {c["name"]: (c["status"], c["detail"]) for c in json.loads((tmp_path / "smoke.json").read_text())["checks"]}
    assert status["cuda.torch-cuda"] == ("skipped", "not in this variant")
    assert status["cuda.nvcc"] == ("skipped", "not in this variant")


def test_unknown_variant_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "skyrl_stack.smoke", "--host", "--variant", "nope"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown variant 'nope'" in out.stderr


def test_each_tier_cleans_up_before_the_next():
    order = []

    def starts_something(ctx):
        ctx.cleanups.append(lambda: order.append("cleanup"))
        return "started"

    def later(ctx):
        order.append("next tier")
        return "ok"

    run_checks([Check("ray.head", starts_something), Check("engine.x", later)], Context(host=True, gpus="none"))
    assert order == ["cleanup", "next tier"]


def test_the_suite_lists_each_check_once(tmp_path):
    """Issue 10: the suite printed each check as it ran and then again in the summary table, which a
    newcomer read as two runs. The console gets the live lines and one verdict line; the table is summary.txt."""
    result = subprocess.run([sys.executable, "-m", "skyrl_stack.smoke", "--host", "--gpus", "none", "--tier", "environment",
                             "--report", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    checks = json.loads((tmp_path / "smoke.json").read_text())["checks"]
    lines = result.stdout.splitlines()
    assert checks and [sum(c["name"] in line.split() for line in lines) for c in checks] == [1] * len(checks), result.stdout
    verdict = [line for line in (tmp_path / "summary.txt").read_text().splitlines() if line.startswith(("OK:", "FAILED:", "NOTHING CHECKED:"))]
    assert verdict and verdict[0] in lines, result.stdout


def _python310() -> str | None:
    """Ubuntu 22.04's Python: python3.10 on PATH, else pyenv's (this project's CI machines have it)."""
    # (pyenv's shim on PATH fails where no pyenv version selects 3.10: try the interpreter itself too)
    candidates = [shutil.which("python3.10"), *sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
    for found in filter(None, candidates):
        probe = subprocess.run([str(found), "-c", "import sys; assert sys.version_info[:2] == (3, 10)"], capture_output=True)
        if probe.returncode == 0:
            return str(found)
    return None


@pytest.fixture(scope="module")
def python310(tmp_path_factory) -> Path:
    """A fresh Python 3.10 venv with nothing installed (pip, as `python3 -m venv` gives; torch for 3.10
    is a 555 MB wheel plus its CUDA wheels, too much for a test, so the torch checks must say so)."""
    python = _python310()
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no python3.10 (pyenv 3.10.x or python3.10 on PATH): the host run on "
                        "Ubuntu 22.04's Python would go unchecked", pytrace=False)
        pytest.skip("no python3.10 on this machine: the host run on Python 3.10 is not checked here")
    venv = tmp_path_factory.mktemp("py310") / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    return venv / "bin" / "python"


def _host_run_310(python: Path, report_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`python3.10 -m skyrl_stack.smoke --host ...` from a checkout (PYTHONPATH, no install), outside it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run([str(python), "-m", "skyrl_stack.smoke", "--host", "--report", str(report_dir), *args],
                            cwd=report_dir.parent, env={**env, "PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    report_file = report_dir / "smoke.json"
    assert report_file.exists(), result.stdout + result.stderr
    data = json.loads(report_file.read_text())
    assert data["python"].startswith("3.10."), data["python"]
    return result, {c["name"]: c for c in data["checks"]}


def test_host_run_on_python_310_with_nothing_installed(python310, tmp_path):
    """Issue 9 item 5, on a real 3.10: the README's host command runs to its report; the checks that
    need torch are skipped and say why (no variant: nothing says torch must be there)."""
    result, checks = _host_run_310(python310, tmp_path / "plain", "--tier", "cuda,gpu", "--gpus", "all")
    assert "python 3.10." in result.stdout.splitlines()[0]
    for name in ("cuda.torch-cuda", "cuda.torch-libraries"):
        assert (checks[name]["status"], checks[name]["detail"]) == ("skipped", "torch not installed (variant unknown)")
    assert all(c["status"] == "skipped" and c["detail"] for n, c in checks.items() if n.startswith("gpu."))


def test_host_run_on_python_310_loads_the_pins(python310, tmp_path):
    """With --variant the pins load on 3.10 (no tomllib: pip's vendored tomli) and the torch a vllm
    host must have is reported missing by name, not as a crash."""
    result, checks = _host_run_310(python310, tmp_path / "vllm", "--variant", "vllm", "--tier", "cuda", "--gpus", "none")
    data = json.loads((tmp_path / "vllm" / "smoke.json").read_text())
    assert (data["variant"], data["pins_digest"]) == ("vllm", load_pins().digest())
    assert checks["cuda.torch-cuda"]["status"] == "failed"
    assert checks["cuda.torch-cuda"]["detail"] == "torch does not import: No module named 'torch'"
    assert result.returncode == 1


def test_a_variant_whose_pins_do_not_load_is_an_error_not_a_quiet_unknown(tmp_path):
    """--variant names what to expect; a host whose Python cannot read pins.toml (no tomllib, no tomli,
    simulated by hiding them) used to run on as "variant unknown", skipping what the variant needs."""
    code = ("import sys\nfor name in ('tomllib', 'tomli', 'pip._vendor.tomli'): sys.modules[name] = None\n"
            "from skyrl_stack.smoke.main import main\n"
            f"sys.exit(main(['--host', '--variant', 'vllm', '--tier', 'cuda', '--report', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not (tmp_path / "smoke.json").exists(), result.stdout + result.stderr
    assert "error: --variant vllm needs pins.toml, which this Python cannot read" in result.stderr
    assert "Traceback" not in result.stderr
