"""Invoke tasks: `invoke build push`, `invoke launch --cloud aws`, `invoke smoke`, ...

Thin by design: each task parses its options and calls one function in the
`skyrl_stack` package, where the logic (and its tests) live. Heavy libraries
(docker, sky, boto3) are imported inside those functions, never here, so
`invoke --list` stays instant. Defaults come from invoke.yaml (override with
INVOKE_* environment variables).
"""
from invoke import Collection, task

from skyrl_stack.cli import reports_errors, split_csv

# --------------------------------------------------------------------------- image


@task(
    help={
        "variant": "vllm | sglang | rehearsal; comma-separated for several (default: invoke.yaml image.variant)",
        "base_image": "override the base image (e.g. a locally made Debian image for the rehearsal)",
        "repository": "image repository, e.g. ghcr.io/me/skyrl-stack (default: invoke.yaml image.repository)",
        "push": "push after a successful build (see `invoke push`)",
        "no_cache": "build without BuildKit's cache",
        "ca_bundle": "CA bundle file passed to the build as a secret (TLS-intercepting proxies)",
        "progress": "buildx progress: auto | plain | tty | quiet",
    }
)
@reports_errors
def build(c, variant=None, base_image=None, repository=None, push=False, no_cache=False, ca_bundle=None, progress=None):
    """Build image variants with docker buildx; writes a build record per variant."""
    from skyrl_stack.build import build_variants

    records = build_variants(
        variants=split_csv(variant or c.image.variant),
        repository=repository or c.image.repository,
        base_image=base_image or None,
        no_cache=no_cache,
        ca_bundle=ca_bundle or c.build.ca_bundle or None,
        progress=progress or c.build.progress,
    )
    if push:
        from skyrl_stack.push import push_variant

        for record in records:
            push_variant(record.variant)


# --------------------------------------------------------------------------- smoke

# --------------------------------------------------------------------------- skypilot

# --------------------------------------------------------------------------- infra

ns = Collection(build)
