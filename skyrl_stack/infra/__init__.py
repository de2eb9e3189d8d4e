"""The infra: the registry and permissions the pipeline needs (``invoke infra.*``).

- ``aws_stack.py``: the CloudFormation stack of infra/aws/registry.yaml (ECR, roles): deploy,
  delete, and its recorded outputs that push and render read.
- ``stack_events.py``: following a CloudFormation operation (progress lines, the failing resource).
- ``aws_api.py``: AWS access shared by both: region, credentials, one call with its errors worded.
- ``skypilot_config.py``: the SkyPilot config layer filled in with the stack's instance profile.
- ``ecr.py``: ECR logins: a docker auth_config from the stack's repository.
"""
