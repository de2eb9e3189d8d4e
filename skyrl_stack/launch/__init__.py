"""The launch: task spec -> training plan -> SkyPilot task YAML -> a cluster.

- ``task_spec.py``: what a user asks for (cloud, nodes, GPUs, variant...), bounded and checked.
- ``training_plan.py``: batch sizes SkyRL's own ``validate_cfg`` accepts for that shape.
- ``accelerators.py``, ``cloud_features.py``: SkyPilot's catalog and per-cloud feature checks.
- ``options.py``: the options of render/launch/logs checked, into one TaskSpec (``build_spec``).
- ``render.py``: ``invoke render``; the YAML is ``task_yaml.py`` (its ``run:``: ``run_script.py``;
  image and registry login: ``registry_access.py``), checked by SkyPilot itself (``validation.py``);
  ``examples.py``: skypilot/examples/.
- ``launcher.py``: ``invoke launch`` (after ``preflight.py``: secrets, smoke gate, SkyRL's plan check);
  ``clusters.py``: ``invoke status / logs / down``; both through ``skypilot_api.py`` (SkyPilot's SDK).
- ``local_cluster.py``, ``skylet.py``, ``skypilot_container.py``: ``--cloud local``, a rehearsal
  that treats the job as SkyPilot does (its container contract, its skylet's job lifecycle);
  ``local_runs.py``: those runs on the engine (owner, stale or not, removal).
- ``skypilot_import.py``: importing SkyPilot without making ``invoke render`` slow.
"""
