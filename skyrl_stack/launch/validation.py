"""SkyPilot's own checks on a rendered task, offline: what is written is what SkyPilot parsed.

- validate: SkyPilot's task schema, its Task parser (null secrets given a
  stand-in, as `sky launch --secret NAME` fills them) and its cloud's feature
  check (cloud_features.py), never starting SkyPilot's API server.
- check_spec_accelerator: the --gpus name against SkyPilot's accelerator catalog
  (accelerators.py), where the catalog is on this machine.
"""
from __future__ import annotations

import copy
import os
import sys
from contextlib import contextmanager

from skyrl_stack.errors import StackError
from skyrl_stack.launch import cloud_features
from skyrl_stack.launch.task_spec import LOCAL, TaskSpec, parse_accelerator


@contextmanager
def _no_local_api_server():
    """SKYPILOT_DISABLE_LOCAL_API_SERVER=1 while validating, restored after.

    Validation is offline and must never start SkyPilot's API server; but a
    launch in the same process afterwards needs SkyPilot free to start it, so
    the variable must not outlive the check.
    """
    key = "SKYPILOT_DISABLE_LOCAL_API_SERVER"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def validate(config: dict, managed: bool = False) -> None:
    """Check the task with SkyPilot's own schema, Task parser and its cloud's feature check (offline);
    managed: also the path `sky jobs launch` takes with it (validate_managed)."""
    with _no_local_api_server():
        task = _validate(config)
        if managed:
            validate_managed(task)


def validate_managed(task) -> None:
    """What SkyPilot's managed-jobs launch does with the task before a controller runs it, offline.

    sky/jobs/server/core.py _launch: convert_entrypoint_to_dag, dag.validate(),
    fill_default_config_in_dag_for_job_launch (the job_recovery defaults), and
    the DAG written as YAML for the controller, which loads it again
    (dump_dag_to_yaml / load_chain_dag_from_yaml, sky/jobs/controller.py). The
    reloaded task must still carry the recovery policy and spot request.
    dag.validate() checks each Resources against SkyPilot's catalog, so it runs
    where the catalog is on this machine (render never downloads it; see
    accelerators.py); elsewhere a warning says it did not.
    """
    from sky.utils import dag_utils

    from skyrl_stack.launch.accelerators import catalog_path

    try:
        dag = dag_utils.convert_entrypoint_to_dag(task)
        if os.path.exists(catalog_path()):
            dag.validate()
        else:
            print(f"warning: SkyPilot's dag.validate() not run: its catalog is not on this machine ({catalog_path()})",
                  file=sys.stderr)
        dag_utils.fill_default_config_in_dag_for_job_launch(dag)
        reloaded = dag_utils.load_chain_dag_from_yaml_str(dag_utils.dump_dag_to_yaml_str(dag))
    except Exception as exc:  # SkyPilot raises ValueError and its own exception types
        message = " ".join(str(exc).split())
        raise StackError(f"SkyPilot's managed-jobs launch rejects the task: {message}",
                         hint="fix the option named above and render again") from None
    before = [(r.use_spot, r.job_recovery) for r in dag.tasks[0].resources]
    after = [(r.use_spot, r.job_recovery) for r in reloaded.tasks[0].resources]
    if before != after:  # the controller would run another policy than the one rendered
        raise StackError(f"the managed job's resources change through SkyPilot's controller reload: {before} -> {after}",
                         hint="report this with the rendered file (SkyPilot version mismatch?)")


def _validate(config: dict):
    from skyrl_stack.launch.skypilot_import import require_sky

    sky = require_sky(or_else="or --no-validate")
    from sky.utils import common_utils, schemas

    try:
        common_utils.validate_schema(copy.deepcopy(config), schemas.get_task_schema(), "Invalid task YAML: ")
        # Null secrets are filled at launch (`sky launch --secret NAME`); give
        # them a stand-in the same way, so the check covers the launch path.
        blanks = [(k, "<given-at-launch>") for k, v in (config.get("secrets") or {}).items() if v is None]
        task = sky.Task.from_yaml_config(copy.deepcopy(config), secrets_overrides=blanks or None)
    except Exception as exc:  # SkyPilot raises ValueError and its own exception types
        message = " ".join(str(exc).split())
        raise StackError(f"SkyPilot rejects the task: {message}", hint="fix the option named above and render again") from None
    cloud_features.check(task)
    return task


def check_spec_accelerator(spec: TaskSpec) -> None:
    """The accelerator name against SkyPilot's catalog where it is on this machine, else a warning line."""
    if not spec.gpus or spec.cloud == LOCAL:  # a local cluster uses this machine's GPUs, whatever their name
        return
    from skyrl_stack.launch.accelerators import check_accelerator

    warning = check_accelerator(parse_accelerator(spec.gpus)[0], spec.cloud)
    if warning:
        print(warning, file=sys.stderr)
