"""Run a rendered task through SkyPilot's managed-jobs path offline; print what it made of it as JSON.

`python -m tests.support.managed_path TASK.yaml` in a process whose HOME holds
the catalog rows (SkyPilot fixes its catalog directory at import, so this
runs in its own process). Every step is SkyPilot 0.14.1's own code, in the
order sky/jobs/server/core.py _launch and the controller use it:
schema, Task parser, DAG conversion and validate() (catalog-backed),
fill_default_config_in_dag_for_job_launch, the YAML the controller gets and
its reload, AWS's feature check with spot, and the recovery executor the
controller builds from the reloaded task (sky/jobs/recovery_strategy.py
StrategyExecutor.make) asked whether it restarts after failures.
"""
from __future__ import annotations

import asyncio
import copy
import json
import sys

import yaml


def main(path: str) -> dict:
    import sky
    from sky import backends, clouds
    from sky.jobs import recovery_strategy
    from sky.utils import common_utils, dag_utils, schemas

    config = yaml.safe_load(open(path))
    common_utils.validate_schema(copy.deepcopy(config), schemas.get_task_schema(), "Invalid task YAML: ")
    blanks = [(k, "x") for k, v in (config.get("secrets") or {}).items() if v is None]
    task = sky.Task.from_yaml_config(copy.deepcopy(config), secrets_overrides=blanks or None)
    dag = dag_utils.convert_entrypoint_to_dag(task)
    dag.validate()
    dag_utils.fill_default_config_in_dag_for_job_launch(dag)
    reloaded = dag_utils.load_chain_dag_from_yaml_str(dag_utils.dump_dag_to_yaml_str(dag)).tasks[0]
    (resources,) = reloaded.resources
    features = resources.get_required_cloud_features() | reloaded.get_required_cloud_features()
    resources.cloud.check_features_are_supported(resources, features, region=resources.region)

    async def restarts(exit_codes: list[int], failures: int) -> list[bool]:
        executor = recovery_strategy.StrategyExecutor.make(
            "c", backends.CloudVmRayBackend(), reloaded, 1, 0, None, set(), asyncio.Lock(), asyncio.Condition())
        return [executor.should_restart_on_failure(exit_codes=exit_codes) for _ in range(failures)]

    return {
        "use_spot": resources.use_spot,
        "job_recovery": resources.job_recovery,
        "spot_feature_checked": clouds.CloudImplementationFeatures.SPOT_INSTANCE in features,
        "cloud": str(resources.cloud),
        "run": reloaded.run,
        "file_mounts": {k: v.source for k, v in reloaded.storage_mounts.items()},
        # A 2-node failure: the head's driver exits 1, SkyPilot cancels the other node (137).
        "restarts_after_1_137": asyncio.run(restarts([1, 137], 5)),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str))
