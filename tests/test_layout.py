"""The layout the README's Architecture section promises, checked on the code itself (issue 12).

- The library never imports the CLI layer (skyrl_stack/cli.py) or Invoke: progress goes through
  skyrl_stack/reporter.py, errors through StackError.
- What the image carries (named in docker/Dockerfile) imports only the standard library and other
  in-image modules, so the suite runs in every variant and on a bare GPU host; the host-side smoke
  runner and gate stay out of it.
- Each subpackage says what it owns; no module grows past 400 lines.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.support.layout import image_modules
from tests.support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "skyrl_stack"
CLI_LAYER = {"skyrl_stack.cli", "invoke"}
SUBPACKAGES = ("image", "launch", "smoke", "infra", "dev")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, at_import_time: bool = False) -> set[str]:
    """Every module path imports, at the top or inside a function (lazy imports count too);
    with at_import_time, only what importing the module runs (not the bodies of functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in (_import_time_nodes(tree) if at_import_time else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _import_time_nodes(tree: ast.AST):
    """The statements run when the module is imported: everything but function bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        yield from _import_time_nodes(node)


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "cli.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_the_library_does_not_import_the_cli_layer(path):
    reached = {name for name in imports_of(path) if name.split(".")[0] == "invoke" or name.startswith("skyrl_stack.cli")}
    assert not reached, f"{path.relative_to(REPO_ROOT)} imports the CLI layer: {sorted(reached)}"


def test_the_import_check_sees_a_cli_import(tmp_path):
    """The check above can fail: a module with a lazy import of the CLI's glue is caught."""
    module = tmp_path / "leaky.py"
    module.write_text("def f():\n    from skyrl_stack.cli import reports_errors\n    return reports_errors\n")
    assert "skyrl_stack.cli" in imports_of(module)


def test_in_image_modules_import_only_the_standard_library_and_each_other():
    shipped = image_modules()
    shipped_names = {_module_name(REPO_ROOT / f) for f in shipped if f.endswith(".py")}
    problems = []
    for file in shipped:
        if not file.endswith(".py"):
            continue
        for name in imports_of(REPO_ROOT / file, at_import_time=True):
            top = name.split(".")[0]
            if top == "skyrl_stack":
                # `from pkg import module` names a module; `from module import function` names a function.
                if name not in shipped_names and name.rpartition(".")[0] not in shipped_names:
                    problems.append(f"{file} imports {name}, which the image does not carry")
            elif top not in sys.stdlib_module_names:
                problems.append(f"{file} imports {name} at import time, not in the standard library")
    assert problems == []


def test_in_image_modules_import_lazily_only_what_the_image_carries():
    """A function-level import of the project's own module runs in the image too (pins.py loads
    image/pins_meaning.py when it checks the pins): the Dockerfile's file list must carry it, or the smoke
    suite fails there with ModuleNotFoundError. The import-time check above does not see these."""
    shipped = image_modules()
    shipped_names = {_module_name(REPO_ROOT / f) for f in shipped if f.endswith(".py")}
    missing = sorted(f"{file} imports {name}" for file in shipped if file.endswith(".py")
                     for name in imports_of(REPO_ROOT / file)
                     if name.split(".")[0] == "skyrl_stack" and name not in shipped_names
                     and name.rpartition(".")[0] not in shipped_names)
    assert missing == []
    assert "skyrl_stack.image.pins_meaning" in shipped_names


def test_the_image_import_check_sees_a_third_party_import_at_import_time(tmp_path):
    """The check above can fail: torch at the top of a module is seen, torch inside a check is not."""
    module = tmp_path / "check.py"
    module.write_text("import json\nimport torch\n\ndef check():\n    import vllm\n")
    assert imports_of(module, at_import_time=True) == {"json", "torch"}


def test_host_side_smoke_modules_stay_out_of_the_image():
    shipped = set(image_modules())
    assert "skyrl_stack/smoke/suite.py" in shipped  # the parse found the list
    assert {"skyrl_stack/smoke/runner.py", "skyrl_stack/smoke/gate.py"}.isdisjoint(shipped)


def test_every_in_image_module_exists():
    missing = [f for f in image_modules() if not (REPO_ROOT / f).is_file()]
    assert missing == []


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_says_what_it_owns(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 10, f"skyrl_stack/{name}/__init__.py needs a docstring saying what it owns"



def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(REPO_ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_image_step_does_not_depend_on_the_launch_step():
    """The flow runs pins -> build -> smoke -> push -> render -> launch: image/ may not import launch/
    (launch reads the image's records, never the other way)."""
    reached = {f"{path.relative_to(REPO_ROOT)}: {name}" for path in sorted((PACKAGE / "image").rglob("*.py"))
               for name in imports_of(path) if name.startswith("skyrl_stack.launch")}
    assert reached == set()
