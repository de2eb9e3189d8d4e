"""`invoke launch --cloud local --managed`: SkyPilot's managed-jobs controller, on local containers.

What it models, from SkyPilot 0.14.1's own code:
- `sky/jobs/controller.py` (the monitoring loop of a task): a job that
  succeeded ends the managed job; when it did not, the controller looks at the
  cluster. Not UP (a node is gone: preempted or failed; for a multi-node job a
  lost worker makes the head's job fail with the cluster no longer UP) is always
  recovered, and counts against no limit. A job that failed on an UP cluster is
  a user-program failure: after a 5 s grace (`asyncio.sleep(5)` before the
  status check) it is restarted only if the recovery policy says so.
- `sky/jobs/recovery_strategy.py`: the policy is the task's
  `resources.job_recovery` (`StrategyExecutor.make`: a strategy name, or a dict
  with `strategy`, `max_restarts_on_errors` (default 0) and
  `recover_on_exit_codes` (an int or a list)); `should_restart_on_failure`: an
  exit code in `recover_on_exit_codes` restarts without counting, otherwise the
  restart count goes up and must stay within `max_restarts_on_errors`. Every
  recovery of the default strategy (EAGER_NEXT_REGION, like FAILOVER after a
  failed relaunch) terminates the cluster and launches a new one: here every
  node container is removed and new ones start, so node disks (and a cached
  mount's not-yet-uploaded files) are lost, the bucket directory stays, and
  `run:` runs again from the top with the same SKYPILOT_TASK_ID (one id for every attempt).
- `--preempt NODE@SECONDS` kills that node's container SECONDS after the
  managed job started (a spot preemption: the VM is gone at once, nothing is
  flushed); one that comes due while the cluster is being replaced lands as
  soon as the next one is up.
Not modelled: the 15 s status poll (sky/jobs/utils.py JOB_STATUS_CHECK_GAP_SECONDS):
locally a lost node ends the job at once (local_cluster cancels the other
nodes, as SkyPilot's job does), and the controller looks right after; and
provisioning, region failover and the controller's own VM.

The output names each recovery, why, and the step the next attempt resumed
from (read from the job's own log line: SkyRL's "Resuming from global_step: N"
or the rehearsal job's "resumed from global_step_N").
"""
from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field

from skyrl_stack.errors import StackError
from skyrl_stack.launch import local_cluster

USER_FAILURE_GRACE_S = 5  # controller.py: asyncio.sleep(5) before telling a preemption from a job failure
DEFAULT_STRATEGY = "EAGER_NEXT_REGION"  # recovery_strategy.py: type_register(name='EAGER_NEXT_REGION', default=True)
_PREEMPT = re.compile(r"^node(?P<rank>[0-9]+)@(?P<seconds>[0-9]+(?:\.[0-9]+)?)$")
# A resume as SkyRL logs it (trainer.py load_checkpoints) or as the rehearsal job does.
_RESUMED = re.compile(r"(?:Resuming from global_step: |resumed from global_step_)(?P<step>[0-9]+)")
_FRESH = re.compile(r"No checkpoint found, starting training from scratch|no checkpoint found, starting", re.I)
_TRAINED = re.compile(r"rehearsal job: step (?P<step>[0-9]+)/[0-9]+ trained")
_SAVED = re.compile(r"rehearsal job: saved checkpoint global_step_(?P<step>[0-9]+)")


@dataclass(frozen=True)
class Preemption:
    rank: int
    seconds: float

    @property
    def label(self) -> str:
        return f"node{self.rank}@{self.seconds:g}"


def parse_preempt(values, nodes: int) -> list[Preemption]:
    """--preempt node1@20 (repeatable): the node by its rank, SECONDS after the managed job started."""
    preemptions = []
    for value in values or ():
        match = _PREEMPT.fullmatch(str(value).strip())
        if not match or float(match["seconds"]) <= 0:
            raise StackError(f"bad --preempt {value!r}",
                             hint="use NODE@SECONDS, e.g. --preempt node1@20 (node0 is the head; seconds after the start)")
        if int(match["rank"]) >= nodes:
            raise StackError(f"bad --preempt {value!r}: the cluster has node0..node{nodes - 1}",
                             hint=f"name a node below node{nodes}, or add --nodes")
        preemptions.append(Preemption(int(match["rank"]), float(match["seconds"])))
    return sorted(preemptions, key=lambda p: p.seconds)


@dataclass
class RecoveryPolicy:
    """A task's `resources.job_recovery`, as StrategyExecutor.make reads it and should_restart_on_failure applies it."""

    strategy: str = DEFAULT_STRATEGY
    max_restarts_on_errors: int = 0
    recover_on_exit_codes: list[int] | None = None
    restart_cnt_on_failure: int = 0

    @classmethod
    def from_task(cls, config: dict) -> RecoveryPolicy:
        recovery = (config.get("resources") or {}).get("job_recovery")
        if isinstance(recovery, dict):
            codes = recovery.get("recover_on_exit_codes")
            codes = [codes] if isinstance(codes, int) else ([int(c) for c in codes] if isinstance(codes, list) else None)
            return cls(recovery.get("strategy") or DEFAULT_STRATEGY, int(recovery.get("max_restarts_on_errors", 0)), codes)
        return cls(recovery or DEFAULT_STRATEGY)

    def should_restart_on_failure(self, exit_codes: list[int] | None) -> bool:
        """recovery_strategy.StrategyExecutor.should_restart_on_failure, line for line."""
        if exit_codes and self.recover_on_exit_codes:
            if any(code in self.recover_on_exit_codes for code in exit_codes):
                return True
        self.restart_cnt_on_failure += 1
        return self.restart_cnt_on_failure <= self.max_restarts_on_errors

    def describe(self) -> str:
        codes = ", ".join(map(str, self.recover_on_exit_codes or [])) or "none"
        return (f"strategy {self.strategy}, max_restarts_on_errors {self.max_restarts_on_errors}, "
                f"recover_on_exit_codes {codes}; a preemption (cluster not UP) is always recovered")


@dataclass
class Attempt:
    """One launch of the cluster: what the controller learns about it."""

    number: int
    started_s: float = 0.0
    resumed_from: int | None = None  # None: not said; 0: a fresh start
    last_trained: int | None = None
    last_saved: int | None = None
    first_step_s: float | None = None  # when its first step was trained, seconds after the managed job started
    preempted: list[str] = field(default_factory=list)
    cluster_up: bool = True
    lost: list[str] = field(default_factory=list)


class _Watch:
    """The job's output, passed through, with the lines the controller reads (resume step, steps trained)."""

    def __init__(self, stream, attempt: Attempt, clock):
        self.stream, self.attempt, self.pending, self.clock = stream, attempt, "", clock

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if (match := _RESUMED.search(line)) is not None:
                self.attempt.resumed_from = int(match["step"])
            elif _FRESH.search(line) and self.attempt.resumed_from is None:
                self.attempt.resumed_from = 0
            elif (match := _TRAINED.search(line)) is not None:
                self.attempt.last_trained = int(match["step"])
                if self.attempt.first_step_s is None:
                    self.attempt.first_step_s = self.clock()
            elif (match := _SAVED.search(line)) is not None:
                self.attempt.last_saved = int(match["step"])

    def flush(self) -> None:
        self.stream.flush()


class Controller:
    """Runs the job until it succeeds or the recovery policy gives up; the managed job's exit code."""

    def __init__(self, job: local_cluster.LocalRun, policy: RecoveryPolicy, preemptions: list[Preemption],
                 stream=None, run_label: str = ""):
        self.job, self.policy, self.stream = job, policy, stream or sys.stdout
        self.pending = list(preemptions)
        self.run_label = run_label
        self.lock = threading.Lock()
        self.containers: list | None = None  # the current attempt's nodes while they are up
        self.attempt: Attempt | None = None
        self.start = time.monotonic()
        self.done = threading.Event()
        # One SKYPILOT_TASK_ID for every attempt: SkyPilot's controller keeps it across recoveries.
        self.task_id = local_cluster.new_task_id(job)

    def say(self, message: str) -> None:
        self.stream.write(f"(jobs controller) {message}\n")
        self.stream.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    # local_cluster.run's hooks ------------------------------------------------------------------
    def started(self, containers) -> None:
        with self.lock:
            self.containers = containers
            self.attempt.started_s = self.elapsed()

    def finished(self, containers) -> None:
        from docker.errors import DockerException

        with self.lock:
            self.containers = None
        for rank, container in enumerate(containers):
            try:
                container.reload()
                running = container.status == "running"
            except DockerException:
                running = False
            if not running:
                self.attempt.lost.append(f"node{rank}")
        self.attempt.cluster_up = not self.attempt.lost

    # preemptions ---------------------------------------------------------------------------------
    def preempt(self, rank: int, label: str) -> bool:
        """Kill node `rank` of the cluster that is up now (a spot preemption); False if none is up."""
        from docker.errors import DockerException

        with self.lock:
            if self.containers is None:
                return False
            self.say(f"preempting node{rank} at {self.elapsed():.0f}s ({label}): "
                     "its container is killed, with what its disk held")
            try:
                self.containers[rank].kill()
                self.attempt.preempted.append(label)
            except DockerException as exc:
                self.say(f"{label}: node{rank} was already gone ({exc.__class__.__name__})")
            return True

    def _preempter(self) -> None:
        """Each --preempt when it comes due (or once a cluster is up, if it came due between two)."""
        while self.pending and not self.done.is_set():
            due = self.pending[0]
            wait = due.seconds - self.elapsed()
            if wait > 0:
                self.done.wait(min(wait, 0.5))
            elif self.preempt(due.rank, f"--preempt {due.label}"):
                self.pending.pop(0)
            else:
                self.done.wait(0.2)

    def run(self) -> int:
        self.say(f"managed job{self.run_label}: {self.job.nodes} node(s); recovery policy: {self.policy.describe()}")
        if self.pending:
            self.say("preemptions to inject: " + ", ".join(p.label for p in self.pending))
        preempter = threading.Thread(target=self._preempter, daemon=True)
        preempter.start()
        self.attempts: list[Attempt] = []
        attempts = self.attempts
        try:
            while True:
                self.attempt = Attempt(len(attempts) + 1)
                attempts.append(self.attempt)
                if self.attempt.number > 1:
                    self.say(f"recovery {self.attempt.number - 1}: launching every node again "
                             f"({self.policy.strategy}: the old cluster is terminated, node disks and all); "
                             "`run:` starts again from the top")
                code = local_cluster.run(self.job, stream=_Watch(self.stream, self.attempt, self.elapsed), hooks=self,
                                         task_id=self.task_id)
                outcome = self._decide(code)
                if outcome is not None:
                    self._summary(attempts, outcome)
                    return outcome
        finally:
            self.done.set()

    def _decide(self, code: int) -> int | None:
        """The controller's verdict on an attempt: an exit code to end with, or None to recover."""
        attempt = self.attempt
        if code == 0 and attempt.cluster_up:
            return 0
        if not attempt.cluster_up:
            why = f"preempted by {', '.join(attempt.preempted)}" if attempt.preempted else "lost"
            self.say(f"the cluster is not UP at {self.elapsed():.0f}s ({', '.join(attempt.lost)} gone: {why}); "
                     "recovering (a preemption is always recovered)")
            return None
        time.sleep(USER_FAILURE_GRACE_S)
        if self.policy.should_restart_on_failure([code]):
            if self.policy.recover_on_exit_codes and code in self.policy.recover_on_exit_codes:
                detail = f"exit code {code} matched recover_on_exit_codes {self.policy.recover_on_exit_codes}"
            else:
                detail = (f"restart {self.policy.restart_cnt_on_failure} of {self.policy.max_restarts_on_errors} "
                          "on errors (max_restarts_on_errors)")
            self.say(f"the job exited with code {code} on an UP cluster (user program failure); restarting: {detail}")
            return None
        self.say(f"the job exited with code {code} on an UP cluster (user program failure); not retried "
                 f"(max_restarts_on_errors {self.policy.max_restarts_on_errors}): FAILED")
        return code

    def _summary(self, attempts: list[Attempt], code: int) -> None:
        recoveries = len(attempts) - 1
        verdict = "SUCCEEDED" if code == 0 else f"FAILED (exit code {code})"
        self.say(f"managed job {verdict} after {recoveries} recover{'y' if recoveries == 1 else 'ies'}, "
                 f"{self.elapsed():.0f}s in all")
        for number, attempt in enumerate(attempts):
            start = ("resumed from global_step_" + str(attempt.resumed_from) if attempt.resumed_from
                     else "started from step 0 (no checkpoint yet)" if attempt.resumed_from == 0 else "start not reported")
            end = f"preempted ({', '.join(attempt.preempted)})" if attempt.preempted else (
                "lost a node" if not attempt.cluster_up else "ran to its end")
            reached = (f", first step trained at {attempt.first_step_s:.0f}s, last step trained {attempt.last_trained}"
                       if attempt.last_trained is not None else "")
            redone = ""
            if number > 0 and attempt.resumed_from is not None and attempts[number - 1].last_trained is not None:
                redone = f"; redid {max(attempts[number - 1].last_trained - attempt.resumed_from, 0)} step(s)"
            self.say(f"  attempt {attempt.number} at {attempt.started_s:.0f}s: {start}{redone}{reached}; {end}")


def run_managed(job: local_cluster.LocalRun, config: dict, preemptions: list[Preemption], run_label: str = "",
                stream=None) -> int:
    """The managed job on local containers: its exit code once it succeeded or the policy gave up."""
    return Controller(job, RecoveryPolicy.from_task(config), preemptions, stream=stream, run_label=run_label).run()


def prepare_local_run(spec, preempt) -> list[Preemption]:
    """Before anything is rendered or started: the --preempt list, and the run's folder in the local bucket
    (run_paths.check_run_path: a new run refuses one that holds checkpoints, --resume needs one that does);
    creates the bucket directory."""
    from skyrl_stack.launch import local_bucket
    from skyrl_stack.launch.run_paths import check_run_path

    preemptions = parse_preempt(preempt, spec.nodes)
    if spec.spot:
        raise StackError("--spot does not apply to --cloud local: there is no spot capacity to ask for",
                         hint="--preempt NODE@SECONDS (with --managed) rehearses what a spot preemption does")
    if preemptions and not spec.managed:
        raise StackError("--preempt rehearses a managed job's recovery, and this launch is not managed",
                         hint="add --managed --bucket /abs/dir")
    if spec.bucket and "://" in spec.bucket:
        raise StackError(f"--cloud local mounts a host directory as its bucket, not {spec.bucket}",
                         hint="use --bucket /abs/dir (e.g. $PWD/.skyrl-stack/local-bucket)")
    if spec.bucket:
        check_run_path(spec)  # a new run in a folder with checkpoints, or a --resume with none
        local_bucket.prepare({"": spec.bucket})
    return preemptions
