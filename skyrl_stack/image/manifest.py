"""The manifest inside the image: every pin plus what was actually installed.

Written once at build time (``python -m skyrl_stack.image.manifest write``) to
``/opt/skyrl-stack/manifest.json``; the smoke suite reads it back to catch drift
between what the pins promise and what the environment holds. Standard library
only, and deterministic (sorted, no timestamps), so the layer is reproducible.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from skyrl_stack.image.lock_check import normalise
from skyrl_stack.image.pins import load_pins

MANIFEST_PATH = Path("/opt/skyrl-stack/manifest.json")


def installed_packages() -> dict[str, str]:
    """Normalised distribution name -> version for the running interpreter."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found[normalise(name)] = dist.version
    return dict(sorted(found.items()))


def uv_version() -> str | None:
    uv = shutil.which("uv")
    if not uv:
        return None
    out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split()[1] if out.returncode == 0 and out.stdout else None


def build_manifest(variant_name: str) -> dict:
    pins = load_pins()
    variant = pins.variant(variant_name)
    return {
        "schema": 1,
        "variant": variant.name,
        "pins_digest": pins.digest(),
        "pins": pins.raw,
        "python": platform.python_version(),
        "uv": uv_version(),
        "packages": installed_packages(),
    }


def read_manifest(path: Path = MANIFEST_PATH) -> dict:
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyrl_stack.image.manifest")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write the manifest of this environment")
    write.add_argument("--variant", required=True)
    write.add_argument("--out", type=Path, default=MANIFEST_PATH)
    sub.add_parser("show", help="print the manifest of this image")
    args = parser.parse_args(argv)
    if args.command == "write":
        manifest = build_manifest(args.variant)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"manifest: {len(manifest['packages'])} packages, python {manifest['python']} -> {args.out}")
    else:
        sys.stdout.write(MANIFEST_PATH.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
