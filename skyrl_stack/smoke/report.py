"""The suite's three outputs: a summary table, a JSON report and JUnit XML. One set of counts feeds all three."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from skyrl_stack.smoke.suite import FAILED, PASSED, SKIPPED, Result

JSON_NAME = "smoke.json"
JUNIT_NAME = "junit.xml"
SUMMARY_NAME = "summary.txt"


def counts(results: list[Result]) -> dict[str, int]:
    return {status: sum(1 for r in results if r.status == status) for status in (PASSED, FAILED, SKIPPED)}


def progress_line(result: Result) -> str:
    return f"  {result.status.upper():7} {result.name:34} {result.seconds:7.2f}s  {result.detail}"


def summary_table(results: list[Result], seconds: float) -> str:
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':{width}}  {'status':7}  {'time':>7}  detail", "-" * (width + 40)]
    for r in results:
        detail = r.detail if r.status == PASSED else f"{r.status}: {r.detail}"
        lines.append(f"{r.name:{width}}  {r.status:7}  {r.seconds:6.2f}s  {detail}")
    lines.append("-" * (width + 40))
    return "\n".join(lines + verdict_lines(results, seconds))


def verdict_lines(results: list[Result], seconds: float) -> list[str]:
    """The run's verdict: the table's last lines, and what the console shows after the live lines."""
    n = counts(results)
    # Skipped is never passed: a run where everything skipped proves nothing and says so.
    verdict = "FAILED" if n[FAILED] else ("OK" if n[PASSED] else "NOTHING CHECKED")
    lines = [f"{verdict}: {n[PASSED]} passed, {n[FAILED]} failed, {n[SKIPPED]} skipped in {seconds:.1f}s"]
    failed = [r.name for r in results if r.status == FAILED]
    if failed:
        lines.append(f"first failure: {failed[0]} (later failures may follow from it)")
    return lines


def json_report(results: list[Result], seconds: float, meta: dict) -> dict:
    n = counts(results)
    return dict(meta, schema=1, ok=n[FAILED] == 0, seconds=round(seconds, 2), counts=n,
                checks=[r.as_dict() for r in results])


def junit_xml(results: list[Result], seconds: float) -> str:
    n = counts(results)
    root = ET.Element("testsuites", name="skyrl-smoke", tests=str(len(results)), failures=str(n[FAILED]),
                      skipped=str(n[SKIPPED]), errors="0", time=f"{seconds:.2f}")
    for tier in dict.fromkeys(r.tier for r in results):
        members = [r for r in results if r.tier == tier]
        m = counts(members)
        suite = ET.SubElement(root, "testsuite", name=f"smoke.{tier}", tests=str(len(members)),
                              failures=str(m[FAILED]), skipped=str(m[SKIPPED]), errors="0",
                              time=f"{sum(r.seconds for r in members):.2f}")
        for r in members:
            case = ET.SubElement(suite, "testcase", classname=f"smoke.{tier}", name=r.name, time=f"{r.seconds:.2f}")
            if r.status == FAILED:
                ET.SubElement(case, "failure", message=r.detail).text = r.detail
            elif r.status == SKIPPED:
                ET.SubElement(case, "skipped", message=r.detail)
            else:
                ET.SubElement(case, "system-out").text = r.detail
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(directory: Path, results: list[Result], seconds: float, meta: dict) -> list[Path]:
    """Write smoke.json, junit.xml and summary.txt; hand them to SKYRL_SMOKE_REPORT_OWNER (uid:gid) if set."""
    directory.mkdir(parents=True, exist_ok=True)
    outputs = {
        JSON_NAME: json.dumps(json_report(results, seconds, meta), indent=2) + "\n",
        JUNIT_NAME: junit_xml(results, seconds),
        SUMMARY_NAME: summary_table(results, seconds) + "\n",
    }
    owner = os.environ.get("SKYRL_SMOKE_REPORT_OWNER")
    paths = []
    for name, text in outputs.items():
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        if owner:
            # The container runs as root; the mounted report belongs to whoever ran `invoke smoke`.
            uid, gid = (int(x) for x in owner.split(":"))
            os.chown(path, uid, gid)
        paths.append(path)
    return paths
