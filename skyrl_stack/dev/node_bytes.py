"""Bytes per node: what a fresh node fetches and writes before the run starts, the image against `setup:`.

`invoke bench --part bytes` prints, for each GPU variant, the image's layers (base included) as the
compressed bytes a node downloads and the unpacked bytes it writes, beside what the seed's `setup:`
step (`uv sync` of the same lock on the cloud's default VM image) downloads and writes. Offline: every
figure comes from a file in the checkout, and each row names its source:

- SkyRL's uv.lock at the pinned commit (tests/data/skyrl-1ed499c): which wheels a variant installs,
  and each wheel's compressed size (`size` in the lock);
- wheel-sizes.json beside it (skyrl_stack/dev/wheel_sizes.py, measured once by range requests): each
  PyPI wheel's unpacked bytes, and PyPI stand-ins for the wheels of PyTorch's index;
- published_sizes.toml (this folder): the CUDA base image's size, quoted with its source;
- rehearsal-layers.json (tests/data): the rehearsal image's layers as built and measured here, which
  calibrate what an image layer adds to its wheels (hash-based .pyc; zstd instead of zip deflate) and
  stand in for the apt and stack layers the GPU images share with it.

Both flows run on the same VM image (SkyPilot's default GPU image: driver, Docker), so neither counts
it. Wheels with no size anywhere here (flash-attn from GitHub, flashinfer's prebuilt wheel) and the
uv-managed Python 3.12 are on both sides alike: named, left out of both totals.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

GPU_VARIANTS = ("vllm", "sglang")
GB = 1e9


@dataclass(frozen=True)
class Row:
    """One thing a node fetches: compressed bytes over the network, unpacked bytes onto its disk."""

    what: str
    compressed: int
    unpacked: int
    source: str
    estimate: bool = False


def _paths() -> dict[str, Path]:
    from skyrl_stack.project import project_root

    data = project_root() / "tests" / "data"
    return {"lock": data / "skyrl-1ed499c", "wheels": data / "skyrl-1ed499c" / "wheel-sizes.json",
            "rehearsal": data / "rehearsal-layers.json", "published": Path(__file__).with_name("published_sizes.toml")}


def _exports(lock_dir: Path) -> tuple[str, dict[str, str]]:
    """SkyRL's lock text and `uv export --frozen` of it per GPU extra (uv decides what an extra installs)."""
    uv = Path(sys.executable).parent / "uv"
    lock_text = gzip.decompress((lock_dir / "uv.lock.gz").read_bytes()).decode()
    with tempfile.TemporaryDirectory() as project:
        (Path(project) / "pyproject.toml").write_bytes((lock_dir / "pyproject.toml").read_bytes())
        (Path(project) / "uv.lock").write_text(lock_text)
        (Path(project) / "skyrl-gym").mkdir()
        exports = {extra: subprocess.run([str(uv if uv.exists() else "uv"), "export", "--frozen", "--no-hashes",
                                          "--no-emit-project", "--extra", extra], cwd=project, capture_output=True,
                                         text=True, check=True).stdout for extra in GPU_VARIANTS}
    return lock_text, exports


def rehearsal_calibration(rehearsal: dict, measured: dict) -> dict:
    """How an image layer compares with the wheels it installs, from the rehearsal image measured here:
    its Python layers (ray + rest) against the rehearsal lock's wheels (compressed and unpacked)."""
    python_layers = [layer for layer in rehearsal["layers"] if layer["role"] == "python"]
    wheels = [measured["wheels"][url] for url in measured["rehearsal"]]
    return {"compressed": sum(l["compressed"] for l in python_layers) / sum(w["bytes"] for w in wheels),
            "unpacked": sum(l["unpacked"] for l in python_layers) / sum(w["unpacked"] for w in wheels)}


def variant_rows(variant: str, lock_text: str, export: str, measured: dict, published: dict,
                 rehearsal: dict) -> tuple[list[Row], list[Row], list[str]]:
    """(the image's rows, the setup step's rows, what neither side counts) for one GPU variant."""
    from skyrl_stack.image import layers

    stand_ins = {name: measured["wheels"][entry["url"]] for name, entry in measured["stand_ins"].items()}
    groups: dict[str, dict] = {g: {"bytes": 0, "unpacked": 0, "packages": 0, "stand_in": []} for g in layers.GROUP_NAMES}
    uncounted = []
    for name, wheel in layers.locked_wheels(export, lock_text):
        group = groups[layers.group_of(name)]
        size = measured["wheels"].get(wheel["url"]) if wheel else None
        if size is None and name in stand_ins:
            size = stand_ins[name]
            group["stand_in"].append(name)
        if size is None:
            uncounted.append(name)
            continue
        if wheel and "size" in wheel and wheel["size"] != size["bytes"]:
            raise ValueError(f"{name}: the lock says {wheel['size']} bytes, the measured wheel {size['bytes']}")
        group["bytes"] += size["bytes"]
        group["unpacked"] += size["unpacked"]
        group["packages"] += 1
    factor = rehearsal_calibration(rehearsal, measured)
    base = published["base"]
    base_compressed = round(base["unpacked"] * base["related_compressed"] / base["related_unpacked"])
    shared = {layer["role"]: layer for layer in rehearsal["layers"] if layer["role"] in ("apt", "uv", "stack")}
    lock_source = "wheel sizes in SkyRL's uv.lock, unpacked from the wheels' zip directories"
    image = [Row(f"base {base['image']}", base_compressed, base["unpacked"],
                 f"{base['unpacked_source']}; compressed: {base['compressed_source']}", estimate=True),
             Row("runtime: apt (SkyPilot's prerequisites, build-essential, ...)", shared["apt"]["compressed"],
                 shared["apt"]["unpacked"], "the rehearsal's apt layer (Debian 12, same package list), measured here",
                 estimate=True),
             Row("uv", shared["uv"]["compressed"], shared["uv"]["unpacked"], "the rehearsal's uv layer, measured here")]
    setup = [Row("uv", measured["wheels"][measured["uv"]]["bytes"], measured["wheels"][measured["uv"]]["unpacked"],
                 "uv's wheel on PyPI, measured")]
    for group, total in groups.items():
        if not total["packages"]:
            continue
        note = f" (PyPI's {', '.join(total['stand_in'])} as stand-in for +cu128)" if total["stand_in"] else ""
        label = f"{group}: {total['packages']} wheels"
        image.append(Row(label, round(total["bytes"] * factor["compressed"]), round(total["unpacked"] * factor["unpacked"]),
                         f"{lock_source}, x {factor['compressed']:.2f} / x {factor['unpacked']:.2f} "
                         f"(the rehearsal's layers against its wheels: zstd, .pyc){note}", estimate=True))
        setup.append(Row(label, total["bytes"], total["unpacked"], lock_source + note, estimate=bool(total["stand_in"])))
    image.append(Row("stack: pip, the smoke suite, scripts, manifest", shared["stack"]["compressed"],
                     shared["stack"]["unpacked"], "the rehearsal's stack layers, measured here", estimate=True))
    return image, setup, sorted(set(uncounted)) + ["Python 3.12.11 (uv-managed)"]


def check_base(published_image: str, source: Path) -> None:
    """The published size is of the base the GPU images are built on ([base] image in pins.toml)."""
    from skyrl_stack.errors import StackError
    from skyrl_stack.image.pins import load_pins

    pinned = load_pins().base_image
    if pinned.split("@", 1)[0] != published_image:
        raise StackError(f"{source.name} gives the size of {published_image}, but pins.toml [base] image is {pinned}",
                         hint=f"quote a published size of {pinned.split('@', 1)[0]} in {source}")


def accounting() -> dict:
    """Per GPU variant: the image's and the setup step's rows and totals (see the module's docstring)."""
    paths = _paths()
    measured = json.loads(paths["wheels"].read_text())
    rehearsal = json.loads(paths["rehearsal"].read_text())
    published = tomllib.loads(paths["published"].read_text())
    check_base(published["base"]["image"], paths["published"])
    lock_text, exports = _exports(paths["lock"])
    out = {}
    for variant in GPU_VARIANTS:
        image, setup, uncounted = variant_rows(variant, lock_text, exports[variant], measured, published, rehearsal)
        totals = {side: {"compressed": sum(r.compressed for r in rows), "unpacked": sum(r.unpacked for r in rows)}
                  for side, rows in (("image", image), ("setup", setup))}
        out[variant] = {"image": [r.__dict__ for r in image], "setup": [r.__dict__ for r in setup],
                        "uncounted": uncounted, "totals": totals}
    out["calibration"] = rehearsal_calibration(rehearsal, measured)
    out["rehearsal_image"] = rehearsal["image"]
    return out


def launch_figures(result: dict) -> dict:
    """What render states per node (skyrl_stack/launch/image_bytes.json): totals per variant, with their source."""
    rehearsal = json.loads(_paths()["rehearsal"].read_text())
    figures = {variant: {"compressed": result[variant]["totals"]["image"]["compressed"],
                         "unpacked": result[variant]["totals"]["image"]["unpacked"],
                         "source": "estimate: invoke bench --part bytes"} for variant in GPU_VARIANTS}
    figures["rehearsal"] = {"compressed": sum(layer["compressed"] for layer in rehearsal["layers"]),
                            "unpacked": sum(layer["unpacked"] for layer in rehearsal["layers"]),
                            "source": "measured: the rehearsal image's layers"}
    return figures


def _gb(value: int) -> str:
    return f"{value / GB:.2f}"


def _label(what: str) -> str:
    """A row's name without its wheel count (which differs per variant)."""
    return what.split(":", 1)[0] if what.endswith(" wheels") else what


def markdown(result: dict, bandwidth_mb_s: float = 125.0) -> str:
    """One table, a column per GPU variant (compressed / unpacked GB), its sources as numbered notes."""
    sources: list[str] = []
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for variant in GPU_VARIANTS:
        for side in ("image", "setup"):
            for row in result[variant][side]:
                if row["source"] not in sources:
                    sources.append(row["source"])
                mark = "~" if row["estimate"] else ""
                cells = rows.setdefault((side, _label(row["what"])), {"source": str(sources.index(row["source"]) + 1)})
                if cells["source"] != str(sources.index(row["source"]) + 1):
                    cells["source"] += f", {sources.index(row['source']) + 1}"
                cells[variant] = f"{mark}{_gb(row['compressed'])} / {mark}{_gb(row['unpacked'])}"
    lines = ["| per node, GB: compressed / unpacked | " + " | ".join(f"{v} image" for v in GPU_VARIANTS) + " | source |",
             "|---|" + "---|" * len(GPU_VARIANTS) + "---|"]
    for side in ("image", "setup"):
        for (row_side, label), cells in rows.items():
            if row_side == side:
                lines.append(f"| {side}: {label} | " + " | ".join(cells.get(v, "-") for v in GPU_VARIANTS)
                             + f" | {cells['source']} |")
        totals = [result[v]["totals"][side] for v in GPU_VARIANTS]
        lines.append(f"| **{side} total** | " + " | ".join(f"**{_gb(t['compressed'])} / {_gb(t['unpacked'])}**"
                                                          for t in totals) + " | |")
    ratio = [result[v]["totals"] for v in GPU_VARIANTS]
    lines.append("| image / setup | " + " | ".join(f"{t['image']['compressed'] / t['setup']['compressed']:.2f}x / "
                                                   f"{t['image']['unpacked'] / t['setup']['unpacked']:.2f}x"
                                                   for t in ratio) + " | |")
    lines.append(f"| download at {bandwidth_mb_s:g} MB/s, image vs setup | " + " | ".join(
        f"{t['image']['compressed'] / 1e6 / bandwidth_mb_s:.0f} s vs {t['setup']['compressed'] / 1e6 / bandwidth_mb_s:.0f} s"
        for t in ratio) + " | |")
    lines.append("")
    lines += [f"{i}. {source}" for i, source in enumerate(sources, 1)]
    uncounted = sorted({name for v in GPU_VARIANTS for name in result[v]["uncounted"]})
    lines += ["", f"~ an estimate. Not counted on either side (the same bytes on both, no size found): "
                  f"{', '.join(uncounted)}. Both flows boot the same VM image, counted by neither."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m skyrl_stack.dev.node_bytes calibrate --image REF`: record the rehearsal image's layers."""
    import argparse

    parser = argparse.ArgumentParser(prog="node_bytes")
    commands = parser.add_subparsers(dest="command", required=True)
    calibrate = commands.add_parser("calibrate", help="measure the built rehearsal image's layers (local engine)")
    calibrate.add_argument("--image", required=True)
    commands.add_parser("table", help="print the per-node byte table")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(markdown(accounting()))
        return 0
    from skyrl_stack.dev.bench import image_layers, layer_history

    layers, steps = image_layers(args.image), layer_history(args.image)
    roles = []
    for index, step in enumerate(steps):
        roles.append("base" if index == 0 else "apt" if "apt-get install" in step else "uv" if "UV_SHA256=" in step
                     else "python" if "install-layer" in step else "stack" if "VARIANT=" in step else "other")
    found: dict[str, dict] = {}
    for role, layer in zip(roles, layers):
        entry = found.setdefault(role, {"role": role, "compressed": 0, "unpacked": 0, "layers": 0})
        entry["compressed"] += layer["bytes"]
        entry["unpacked"] += sum(member.size for member in layer["tar"] if member.isfile())
        entry["layers"] += 1
    digest = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", args.image],
                            capture_output=True, text=True, check=True).stdout.strip()
    _paths()["rehearsal"].write_text(json.dumps({"image": f"{args.image} ({digest})", "how":
                                                 "docker save: layer blob bytes (zstd) and the layer tar's file bytes",
                                                 "layers": list(found.values())}, indent=1) + "\n")
    print(json.dumps(list(found.values()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
