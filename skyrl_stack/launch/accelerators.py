"""Accelerator names checked against SkyPilot's accelerator registry, offline.

SkyPilot knows accelerators from its catalog file common/accelerators.csv
(columns AcceleratorName, Clouds), which sky/utils/accelerator_registry.py
reads and which SkyPilot downloads on first use. Checking must not reach the
network (render is offline), so the check uses the catalog only when SkyPilot
already has it on this machine; otherwise it says so in a warning instead of
staying silent. SkyPilot is imported inside the function.
"""
from __future__ import annotations

import csv
import difflib
import os

from skyrl_stack.errors import StackError

CATALOG = "common/accelerators.csv"


def catalog_path() -> str:
    """Where SkyPilot keeps the accelerator catalog (sky/catalog/common.py get_catalog_path)."""
    from skyrl_stack.launch.skypilot_import import require_sky

    require_sky(or_else="or --no-validate")  # the whole package loads first anyway; this way at the lower cost
    from sky.catalog import common

    return common.get_catalog_path(CATALOG)


def check_accelerator(name: str, cloud: str | None, path: str | None = None) -> str | None:
    """Refuse a name SkyPilot's catalog does not know (or that the chosen cloud does not offer).

    Returns a warning line when the name could not be checked, None when it passed.
    The rules follow accelerator_registry.canonicalize_accelerator_name: names
    compare case-insensitively; 'tpu-*' names are SkyPilot's own and always
    pass; on Kubernetes (or with no cloud chosen) a name outside the catalog may
    be a custom node label, so it gets a warning, not an error.
    """
    if name.lower().startswith("tpu-"):
        return None
    path = path or catalog_path()
    if not os.path.exists(path):
        return (f"warning: accelerator {name!r} not checked: SkyPilot's accelerator catalog is not on this machine "
                f"({path}; SkyPilot downloads it on first online use)")
    with open(path, newline="") as fh:
        rows = {row["AcceleratorName"].lower(): row for row in csv.DictReader(fh)}
    row = rows.get(name.lower())
    if row is None:
        if cloud in (None, "kubernetes"):
            return f"warning: accelerator {name!r} is not in SkyPilot's catalog; fine only if it is a custom Kubernetes GPU label"
        close = difflib.get_close_matches(name.lower(), list(rows), n=3, cutoff=0.5)
        suggestion = f"did you mean {', '.join(rows[c]['AcceleratorName'] for c in close)}? " if close else ""
        raise StackError(f"unknown accelerator {name!r}: not in SkyPilot's accelerator catalog",
                         hint=f"{suggestion}`sky show-gpus` lists the names SkyPilot knows")
    offered = [c.strip(" '\"").lower() for c in row["Clouds"].strip("[]").split(",")]
    if cloud and cloud != "kubernetes" and cloud not in offered:
        raise StackError(f"accelerator {row['AcceleratorName']} is not offered on {cloud} (SkyPilot's catalog)",
                         hint=f"it is offered on: {', '.join(offered)}; choose another --gpus or --cloud")
    return None
