"""The launch: task spec -> training plan -> SkyPilot task YAML -> a cluster.

- ``task_spec.py``: what a user asks for (cloud, nodes, GPUs, variant...), bounded and checked.
- ``training_plan.py``: batch sizes SkyRL's own ``validate_cfg`` accepts for that shape.
- ``accelerators.py``, ``cloud_features.py``: SkyPilot's catalog and per-cloud feature checks.
- ``render.py``: ``invoke render`` (the YAML, validated by SkyPilot's own parser).
- ``sdk.py``: ``invoke launch / status / logs / down`` through SkyPilot's SDK.
- ``local_cluster.py``, ``skylet.py``, ``skypilot_container.py``: ``--cloud local``, a rehearsal
  that treats the job as SkyPilot does (its container contract, its skylet's job lifecycle).
- ``skypilot_import.py``: importing SkyPilot without making ``invoke render`` slow.
"""
