"""Following a CloudFormation operation: its events as progress lines, and why it failed.

While CloudFormation creates, updates or deletes the registry stack, each new
stack event is reported once (oldest first) through skyrl_stack.reporter, and
the wait ends when the stack leaves its *_IN_PROGRESS state. A failed operation
becomes one StackError naming the resource that failed and CloudFormation's
reason (:func:`failure_reason`), with a hint that depends on whether the stack
is left usable.
"""
from __future__ import annotations

import os
import time

from skyrl_stack.errors import StackError
from skyrl_stack.infra.aws_api import aws_call, one_line
from skyrl_stack.reporter import step

POLL_SECONDS = float(os.environ.get("SKYRL_STACK_STACK_POLL_SECONDS", "5"))

SUCCESS = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE", "IMPORT_COMPLETE"}
# A stack whose creation failed holds nothing usable and cannot be updated.
DEAD = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED"}


def failure_reason(events: list[dict]) -> str | None:
    """The root cause among stack events (newest first, as CloudFormation lists them).

    The earliest *_FAILED resource event is the cause; later ones are usually
    "Resource creation cancelled" for siblings rolled back because of it.
    """
    for event in reversed(events):
        if event["ResourceStatus"].endswith("_FAILED") and event.get("LogicalResourceId") != event.get("StackName"):
            return (f"{event['LogicalResourceId']} ({event.get('ResourceType', '?')}) {event['ResourceStatus']}: "
                    f"{one_line(event.get('ResourceStatusReason') or 'no reason given')}")
    for event in reversed(events):
        if event["ResourceStatus"].endswith("_FAILED") or "ROLLBACK" in event["ResourceStatus"]:
            reason = event.get("ResourceStatusReason")
            if reason:
                return f"{event['LogicalResourceId']} {event['ResourceStatus']}: {one_line(reason)}"
    return None


class EventPrinter:
    """Reports each new stack event once, oldest first, as a progress line.

    Events already there when it starts are old news, except for a stack just
    created (``new_stack``): every event of that one is this operation's."""

    def __init__(self, cf, stack_id: str, *, new_stack: bool = False):
        self.cf = cf
        self.stack_id = stack_id
        self.seen = set() if new_stack else {e["EventId"] for e in self._page()}
        self.new: list[dict] = []  # newest first, like the API

    def _page(self) -> list[dict]:
        return aws_call("cannot read stack events", self.cf.describe_stack_events, StackName=self.stack_id)["StackEvents"]

    def poll(self) -> None:
        fresh = [e for e in self._page() if e["EventId"] not in self.seen]
        for event in reversed(fresh):
            self.seen.add(event["EventId"])
            reason = event.get("ResourceStatusReason")
            step(f"{event['LogicalResourceId']} ({event.get('ResourceType', '')}): {event['ResourceStatus']}"
                 + (f" - {one_line(reason)}" if reason else ""))
        self.new = fresh + self.new


def wait_for_stack(cf, printer: EventPrinter, action: str) -> dict:
    """Poll until the stack leaves *_IN_PROGRESS; a StackError naming the failing resource if it failed."""
    while True:
        printer.poll()
        stack = aws_call("cannot read the stack's status", cf.describe_stacks, StackName=printer.stack_id)["Stacks"][0]
        status = stack["StackStatus"]
        if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
            time.sleep(POLL_SECONDS)
            continue
        if status in SUCCESS:
            return stack
        reason = failure_reason(printer.new) or stack.get("StackStatusReason") or "no reason reported"
        hint = ("`invoke infra.down --cloud aws` removes the failed stack; fix the cause, then run infra.up again"
                if status in DEAD else "the stack was rolled back to its previous state; fix the cause and re-run")
        raise StackError(f"{action} of stack {stack['StackName']} failed ({status}): {reason}", hint=hint)


def wait_for_change_set(cf, change_set_id: str) -> dict:
    """Poll until CloudFormation has planned the change set (or found it empty or invalid)."""
    while True:
        described = aws_call("cannot read the change set", cf.describe_change_set, ChangeSetName=change_set_id)
        if described["Status"] in {"CREATE_COMPLETE", "FAILED"}:
            return described
        time.sleep(min(POLL_SECONDS, 2))
