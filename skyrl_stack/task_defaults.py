"""The tasks' defaults from Invoke's config (invoke.yaml, INVOKE_* variables), checked like the flags they stand for.

Invoke merges its config levels in this order, later winning
(invoke/config.py Config.merge): defaults, collection, system file
(/etc/invoke.yaml), user file (~/.invoke.yaml), the project file beside
tasks.py (invoke.yaml | .yml | .json, the first found), INVOKE_* variables,
the runtime file (-f). An INVOKE_* variable counts only for a key some file
already has, and is cast to the type that file gave it
(invoke/env.py Environment._cast: `int("abc")` raises).

So a broken project file, a section that is not a table, or INVOKE_LAUNCH_NODES=abc
(with `nodes: 1` in the file) would end in Invoke's traceback before any
task runs: check_project_config runs when tasks.py is imported and makes each one
line. Then every default a task takes goes through the check its flag gets,
and its error names where the value came from (`INVOKE_LAUNCH_NODES`,
`invoke.yaml launch.gpus`), never a flag the user did not type (default()).

No Invoke import here (the library never imports the CLI layer): the config is read duck-typed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from skyrl_stack.errors import StackError, first_line

# Invoke's project file names, in the order it tries them (invoke/config.py Config._file_suffixes;
# invoke.py is Python, run by Invoke itself, and not read here).
PROJECT_FILES = ("invoke.yaml", "invoke.yml", "invoke.json")
ENV_PREFIX = "INVOKE_"
# Invoke's config levels that hold data from a source, highest priority first, with that source's file path.
_LEVELS = (("_runtime", "_runtime_path"), ("_env", None), ("_project", "_project_path"), ("_user", "_user_path"),
           ("_system", "_system_path"))


@dataclass(frozen=True)
class Default:
    kind: type  # str or int: what the flag takes
    example: str  # what a good value looks like (for the hint)
    check: object = None  # (value, source) -> the value the task uses; raises StackError naming the source
    required: bool = True


def _gpus(value, source):
    from skyrl_stack.launch.task_spec import parse_accelerator

    parse_accelerator(value, option=source)
    return value.strip()  # a padded value is the same request; the YAML gets it without the padding


def _nodes(value, source):
    from skyrl_stack.launch.task_spec import parse_nodes

    return parse_nodes(value, option=source)


def _cloud(value, source):
    from skyrl_stack.launch.task_spec import parse_cloud

    try:
        parse_cloud(value)
    except StackError as err:
        raise StackError(f"{source}: {err.message}", hint=err.hint) from None
    return value.strip()


def _variant(value, source):
    from skyrl_stack.image.pins import load_pins

    try:
        for name in value.replace(",", " ").split() or [value]:  # build and push take several (cli.split_csv)
            load_pins().variant(name)
    except StackError as err:
        raise StackError(f"{source}: {err.message}", hint=err.hint) from None
    return value.strip()


def _repository(value, source):
    from skyrl_stack.image.refs import validate_repository

    return validate_repository(value.strip(), what=source)  # "malformed INVOKE_IMAGE_REPOSITORY '...'"


def _compression(value, source):
    from skyrl_stack.image.bake import validate_compression

    try:
        return validate_compression(value.strip())
    except StackError as err:
        raise StackError(f"{source}: {err.message}", hint=err.hint) from None


# Every default a task reads, by its key in invoke.yaml.
DEFAULTS = {
    "image.repository": Default(str, "127.0.0.1:5000/skyrl-stack or ghcr.io/me/skyrl-stack", _repository),
    "image.variant": Default(str, "vllm", _variant),
    "build.ca_bundle": Default(str, '"" (none) or /etc/ssl/certs/ca-certificates.crt'),
    "build.progress": Default(str, "auto"),
    "build.compression": Default(str, "zstd", _compression),
    "launch.cloud": Default(str, "aws", _cloud),
    "launch.gpus": Default(str, '"L40S:4"', _gpus),
    "launch.nodes": Default(int, "1", _nodes),
}


def env_name(key: str) -> str:
    """The variable Invoke reads for a key: INVOKE_ + the key path, upper case, dots as underscores."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def _lookup(data, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def source_of(config, key: str) -> str:
    """Where Invoke's merged value of `key` came from, as the user would name it."""
    for level, path_attr in _LEVELS:
        _, found = _lookup(getattr(config, level, None) or {}, key)
        if found:
            if level == "_env":
                return env_name(key)
            return f"{_shown(getattr(config, path_attr, None) or 'the Invoke config')} {key}"
    return f"the Invoke config {key}"


def _shown(path) -> str:
    from skyrl_stack.project import shown

    return shown(Path(path)) if os.path.isabs(str(path)) else str(path)


def default(c, key: str):
    """The checked default of `key` from the task's context `c`: one line naming its source if it is bad."""
    spec = DEFAULTS[key]
    value, found = _lookup(_as_dict(c.config), key)
    if not found:
        section = key.split(".")[0]
        raise StackError(f"no default for {key}: the project's invoke.yaml has no {key.split('.')[1]!r} under "
                         f"{section}:", hint=f"add `{section}:` with `{key.split('.')[1]}: {spec.example}` "
                                                     "to invoke.yaml, or pass the option")
    return check(key, value, source_of(c.config, key))


def check(key: str, value, source: str):
    """The check the key's flag gets, its errors naming `source`; returns the value the task uses."""
    from skyrl_stack.launch.task_spec import refuse_control_characters

    spec = DEFAULTS[key]
    if isinstance(value, (dict, list)) or value is None:
        raise StackError(f"bad {source}: {_kind(value)}, not a single value",
                         hint=f"set it to one value, e.g. {key.split('.')[1]}: {spec.example}")
    if isinstance(value, bool):  # YAML's yes/no/true: never a value these options take
        raise StackError(f"bad {source} {value!r}", hint=f"e.g. {key.split('.')[1]}: {spec.example}")
    value = str(value) if spec.kind is str else value
    refuse_control_characters(source, value)
    return spec.check(value, source) if spec.check else value


def _kind(value) -> str:
    return {dict: "a table", list: "a list", type(None): "empty"}[type(value)]


def _as_dict(config) -> dict:
    """Invoke's merged config as plain dicts (its DataProxy is a Mapping)."""
    if hasattr(config, "keys"):
        return {key: _as_dict(config[key]) for key in config.keys()}
    return config


# ---------------------------------------------------------------------------- at import of tasks.py


def check_project_config(project_dir, environ=None) -> None:
    """What would make Invoke itself fail with a traceback, as one line (run when tasks.py is imported)."""
    environ = os.environ if environ is None else environ
    path = next((Path(project_dir) / name for name in PROJECT_FILES if (Path(project_dir) / name).is_file()), None)
    if path is None:
        return
    data = _load(path)
    for section, value in data.items():
        if isinstance(value, dict):
            continue
        if any(key.startswith(f"{section}.") for key in DEFAULTS):
            raise StackError(f"{path.name}: {section}: must be a section of keys, not {json.dumps(value, default=str)}",
                             hint=f"write it as `{section}:` followed by indented `key: value` lines (see README)")
    for key in DEFAULTS:
        value, found = _lookup(data, key)
        variable = env_name(key)
        if not found or variable not in environ:
            continue
        if isinstance(value, (dict, list)):  # Invoke refuses to cast a variable into these (UncastableEnvVar)
            check(key, value, f"{path.name} {key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                type(value)(environ[variable])  # what Invoke's Environment._cast does
            except ValueError:
                check(key, environ[variable], variable)  # the flag's check, naming the variable
                raise StackError(f"bad {variable} {environ[variable]!r}: {path.name} has {key}: {value}, so it must "
                                 f"be a {type(value).__name__}", hint=f"e.g. {variable}={value}") from None


def _load(path: Path) -> dict:
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # Invoke's own reader (invoke/config.py Config._load_yaml: yaml.safe_load)

            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StackError(f"cannot read {path.name}: {first_line(exc)}", hint=f"fix {path}") from None
    except Exception as exc:  # yaml.YAMLError: imported lazily, so caught by its base here
        if type(exc).__module__.split(".")[0] != "yaml":
            raise
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise StackError(f"{path.name} is not valid YAML{where}: {problem}", hint=f"fix {path}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StackError(f"{path.name}: must be sections of keys (image:, build:, launch:), not {_kind_of(data)}",
                         hint=f"fix {path}; see README")
    return data


def _kind_of(value) -> str:
    return "a list" if isinstance(value, list) else f"{type(value).__name__} {json.dumps(value, default=str)}"
