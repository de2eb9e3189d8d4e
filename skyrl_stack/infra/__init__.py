"""The infra: the registry and permissions the pipeline needs (``invoke infra.*``).

- ``aws_stack.py``: the CloudFormation stack of infra/aws/registry.yaml (ECR, roles, outputs).
- ``ecr.py``: ECR registries: recognising them and logging in with the stack's outputs.
"""
