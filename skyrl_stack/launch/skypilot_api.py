"""Requests to SkyPilot's API server through its Python SDK, and their failures as one line.

Every request goes through _request: sky.launch / status / down / optimize
return a request id that sky.stream_and_get resolves; sky.tail_logs streams
and returns the job's exit code itself. It is the one seam the tests replace
(no API server or cloud can be reached on a test machine). A failure becomes a
StackError whose hint is chosen by SkyPilot's exception class
(sky/exceptions.py, SkyPilot 0.14.1), never by its name as a string.
SkyPilot is imported only inside the functions.
"""
from __future__ import annotations

import os
import re

from skyrl_stack.errors import StackError

# SkyPilot colours its messages (colorama); a one-line error shows none of that.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def sky_sdk():
    """The `sky` package for a request (SkyPilot's debug output off unless asked for)."""
    from skyrl_stack.launch.skypilot_import import require_sky

    os.environ.setdefault("SKYPILOT_DEBUG", "0")
    return require_sky()


def api(name: str, /, *args, cloud: str | None = None, **kwargs):
    """A request to SkyPilot's API server; its failures become one line (see _explain)."""
    try:
        return _request(name, *args, **kwargs)
    except Exception as exc:  # SkyPilot's own exception types; re-raised as one line
        if isinstance(exc, StackError):
            raise
        error = _explain(exc, cloud)
        if name.startswith("jobs.") and error.hint == CLUSTERS_HINT:
            # A managed-jobs request: SkyPilot raises ClusterNotUpError when no jobs controller is up
            # ("No in-progress managed jobs"); the clusters are not what the user asked about.
            error = StackError(error.message, hint=JOBS_HINT)
        raise error from None


CLUSTERS_HINT = "`invoke status` lists the clusters and their state"
JOBS_HINT = "`invoke jobs.status` lists the managed jobs and their state (`invoke launch --managed` submits one)"


def _request(name: str, /, *args, **kwargs):
    """Every request to SkyPilot's API server goes through here (the seam tests replace)."""
    sky = sky_sdk()
    function = sky
    for part in name.split("."):  # "launch", or a managed-jobs request: "jobs.launch", "jobs.queue_v2", ...
        function = getattr(function, part)
    result = function(*args, **kwargs)
    # tail_logs (sky.tail_logs, sky.jobs.tail_logs) streams and returns the exit code itself.
    return result if name.rpartition(".")[2] == "tail_logs" else sky.stream_and_get(result)


def _explain(exc: Exception, cloud: str | None) -> StackError:
    """One clear line for a SkyPilot failure, the hint chosen by the exception's class."""
    from sky import exceptions as sky_errors

    text = _ANSI.sub("", " ".join(str(exc).split())) or type(exc).__name__
    where = cloud or "the cloud"
    check = f"`sky check {cloud}`" if cloud else "`sky check`"
    if isinstance(exc, sky_errors.ApiServerConnectionError):
        return StackError(f"cannot reach the SkyPilot API server: {text}",
                          hint="start it with `sky api start` (or unset SKYPILOT_DISABLE_LOCAL_API_SERVER)")
    if type(exc) is RuntimeError and _local_api_server_disabled():  # not its subclasses (ApiServer*Error)
        # sky/server/common.py check_local_api_server_enabled_or_raise raises a plain
        # RuntimeError; the state it guards is checked here instead of its words.
        return StackError(f"no SkyPilot API server: {text}",
                          hint="`sky api login -e ENDPOINT` for a remote one, or unset "
                               "SKYPILOT_DISABLE_LOCAL_API_SERVER to let SkyPilot start a local one")
    if isinstance(exc, sky_errors.ApiServerAuthenticationError):
        return StackError(f"the SkyPilot API server wants a login: {text}", hint="log in with `sky api login`")
    if isinstance(exc, (sky_errors.NoCloudAccessError, sky_errors.CloudUserIdentityError,
                        sky_errors.InvalidCloudCredentials, sky_errors.InvalidCloudConfigs)):
        return StackError(f"SkyPilot cannot launch on {where}: {text}",
                          hint=f"run {check} to see which credentials are missing")
    if isinstance(exc, sky_errors.ResourcesUnavailableError):
        return _explain_unavailable(exc, text, where, check)
    if isinstance(exc, (sky_errors.ClusterDoesNotExist, sky_errors.ClusterNotUpError)):
        return StackError(f"SkyPilot: {text}", hint=CLUSTERS_HINT)
    if isinstance(exc, sky_errors.NotSupportedError):
        return StackError(f"SkyPilot does not support this on {where}: {text}",
                          hint="choose another cloud with --cloud, or drop the option it names")
    return StackError(f"SkyPilot failed: {text}", hint="see `sky api logs` for details")


def _local_api_server_disabled() -> bool:
    """SkyPilot would start a local API server but is told not to (SkyPilot 0.14.1)."""
    from sky.server import common as server_common
    from sky.utils import env_options

    return bool(env_options.Options.DISABLE_LOCAL_API_SERVER.get()) and server_common.is_api_server_local()


def _explain_unavailable(exc, text: str, where: str, check: str) -> StackError:
    """ResourcesUnavailableError has three causes that need different advice: no capacity
    right now (the provisioner raises it with a failover history), a cloud that is not
    enabled, or a request no enabled cloud offers (accelerator count, image, region).
    The last two come from sky/optimizer.py without any field that tells them apart; the
    fallback is the phrase of _check_specified_clouds ("... which is not enabled")."""
    if exc.failover_history:
        return StackError(f"no capacity on {where} for the task: {text}",
                          hint="try another region or zone (--cloud CLOUD/REGION), fewer nodes, or retry later")
    if "not enabled" in text:
        return StackError(f"SkyPilot cannot launch on {where}: {text}",
                          hint=f"run {check} to see which credentials are missing")
    return StackError(f"no {where} resources match the task: {text}",
                      hint="check --gpus (name and count per node, `sky gpus list --all`), --memory and the image")
