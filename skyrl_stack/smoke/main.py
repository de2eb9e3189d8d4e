"""`python -m skyrl_stack.smoke`: run the smoke suite here (inside an image, or on a host with --host).

Exit status: 0 when no check failed, 1 when one did, 2 for bad arguments.
Skipped checks never count as passed; they only do not fail the run.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack.image.manifest import MANIFEST_PATH
from skyrl_stack.smoke import cuda, environment, gpu, inference, raycluster, report, skyrl
from skyrl_stack.smoke.suite import FAILED, TIERS, Context, run_checks

ALL_CHECKS = environment.CHECKS + cuda.CHECKS + gpu.CHECKS + raycluster.CHECKS + inference.CHECKS + skyrl.CHECKS
assert [c.tier for c in ALL_CHECKS] == sorted((c.tier for c in ALL_CHECKS), key=TIERS.index), "checks out of tier order"


def parse_gpus(value: str) -> str:
    value = value.strip().lower()
    if value in ("all", "none") or (value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(f"--gpus takes all, none or a positive count, not {value!r}")


def parse_tiers(values: list[str] | None) -> list[str]:
    chosen = [t for v in values or [] for t in v.replace(",", " ").split()]
    unknown = [t for t in chosen if t not in TIERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown tier(s) {', '.join(unknown)}; tiers: {', '.join(TIERS)}")
    return [t for t in TIERS if t in chosen] if chosen else list(TIERS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyrl-smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", action="append", help=f"tiers to run, comma-separated or repeated ({', '.join(TIERS)}); default all")
    parser.add_argument("--gpus", type=parse_gpus, default="all", help="all (whatever is visible), none, or the count expected")
    parser.add_argument("--report", type=Path, help="write smoke.json, junit.xml and summary.txt to this directory")
    parser.add_argument("--variant", help="variant to check against (default: the image manifest's)")
    parser.add_argument("--expect-pins-digest", metavar="DIGEST",
                        help="pins digest the caller expects the image to hold (`invoke smoke` passes its build record's)")
    parser.add_argument("--host", action="store_true", help="running on a machine, not in our image: image-only checks are skipped")
    parser.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help=argparse.SUPPRESS)
    parser.add_argument("--overrides-file", type=Path,
                        help="JSON list of the training command's Hydra overrides (written by `invoke smoke`)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    return parser


def make_context(args) -> Context:
    """Pins, variant and manifest as far as this machine has them; a host may have none."""
    ctx = Context(host=args.host, gpus=args.gpus, expected_pins_digest=args.expect_pins_digest)
    try:
        from skyrl_stack.image.pins import load_pins

        ctx.pins = load_pins()
    except Exception as exc:  # e.g. Python < 3.11 (no tomllib) on a bare GPU host
        ctx.pins = None
        ctx.cache["pins_error"] = str(exc)
    try:
        ctx.manifest = json.loads(args.manifest.read_text())
    except FileNotFoundError:
        ctx.manifest_error = f"{args.manifest} not found"
    except (OSError, ValueError) as exc:
        ctx.manifest_error = f"{args.manifest} unreadable: {exc}"
    if args.variant and ctx.pins is None:  # running on as "variant unknown" would skip what it needs
        raise ValueError(f"--variant {args.variant} needs pins.toml, which this Python cannot read: "
                         f"{ctx.cache['pins_error']}")
    name = args.variant or (ctx.manifest or {}).get("variant")
    if name and ctx.pins is not None:
        ctx.variant = ctx.pins.variant(name)
    if args.overrides_file:
        ctx.overrides = [str(o) for o in json.loads(args.overrides_file.read_text())]
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        tiers = parse_tiers(args.tier)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    checks = [c for c in ALL_CHECKS if c.tier in tiers]
    if args.list:
        for check in checks:
            print(check.name)
        return 0
    try:
        ctx = make_context(args)
    except Exception as exc:  # unknown --variant, unreadable overrides file
        parser.error(getattr(exc, "message", None) or str(exc))

    started_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = "host" if args.host else "image"
    print(f"skyrl smoke: variant {ctx.variant.name if ctx.variant else 'unknown'} on {where}, "
          f"python {platform.python_version()}, tiers {','.join(tiers)}, --gpus {args.gpus}", flush=True)
    started = time.monotonic()
    results = run_checks(checks, ctx, on_result=lambda r: print(report.progress_line(r), flush=True))
    seconds = time.monotonic() - started
    # Each check was printed as it ran: the console ends with the verdict only (the
    # whole table again read as a second run); the table goes to summary.txt.
    print("\n".join(report.verdict_lines(results, seconds)), flush=True)
    if args.report:
        meta = {
            "variant": ctx.variant.name if ctx.variant else None,
            "host": args.host,
            "gpus": args.gpus,
            "gpus_visible": ctx.cache.get("visible_gpus"),
            "tiers": tiers,
            "python": platform.python_version(),
            "pins_digest": ctx.pins.digest() if ctx.pins else None,
            "started_at": started_at,
        }
        paths = report.write_reports(args.report, results, seconds, meta)
        print(f"reports: {', '.join(str(p) for p in paths)}")
    return 1 if any(r.status == FAILED for r in results) else 0
