"""The faults, and the runner that puts one fault in the middle of a stream and accounts for every frame.

A scenario: produce every frame (the log holds them all before the fault), start the consumers, wait until
a fraction of the frames is handled, inject the fault, wait until every frame has a result or a dead letter
(or the deadline passes), let replays settle, stop the consumers, count. It passes when frames in =
distinct results out on the results topic and in the object store, nothing is lost or wrongly
dead-lettered, the fault really hit mid-stream, and no consumer exited on its own. Duplicates (replays
after a fault) are counted and reported, not failed: delivery is at-least-once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from inctrl.dev.reliability.consumers import ConsumerGroup, ConsumerProcesses, describe_exits
from inctrl.dev.reliability.ledger import ProgressWatch, StreamFrame, Tally, count_outcomes, produce
from services.protocol.outcomes import DecodedFrame, InspectFn, InspectionOutcome, Retryable
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 0.2
# Process start (imports) plus a group join with the 6 s session timeout, with room on a loaded machine.
_JOIN_TIMEOUT_S = 45.0


@dataclass
class FaultContext:
    """What a fault may act on, and waits that keep supervising the consumers meanwhile."""

    group: ConsumerGroup
    stack: LocalStack
    frame_ids: frozenset[str]
    deadline: float
    progress: ProgressWatch

    def handled(self) -> int:
        return len(self.progress.handled() & self.frame_ids)

    def wait_handled(self, count: int) -> int:
        """Wait until at least `count` frames have a result or a dead letter (or the deadline); returns the count."""
        while (done := self.handled()) < count and time.monotonic() < self.deadline:
            self.group.supervise()
            time.sleep(_PROGRESS_INTERVAL_S)
        return done

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until condition() holds (at most timeout_s, never past the deadline), supervising meanwhile."""
        until = min(self.deadline, time.monotonic() + timeout_s)
        while not (met := condition()) and time.monotonic() < until:
            self.group.supervise()
            time.sleep(_PROGRESS_INTERVAL_S)
        return met

    def hold(self, seconds: float) -> None:
        """Let `seconds` pass, restarting members that exit meanwhile."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.group.supervise()
            time.sleep(min(_PROGRESS_INTERVAL_S, max(0.0, until - time.monotonic())))


class Fault(Protocol):
    """One fault: injected once `trigger` of the frames are handled."""

    trigger: float

    def describe(self) -> str: ...
    def inject(self, context: FaultContext) -> None: ...


@dataclass(frozen=True)
class ConsumerKill:
    """SIGKILL the first consumer process mid-stream; a restarted one (a new pod) finishes the stream."""

    trigger: float = 0.3

    def describe(self) -> str:
        return f"SIGKILL of the consumer process after {self.trigger:.0%} of the frames, then a new process"

    def inject(self, context: FaultContext) -> None:
        if not isinstance(context.group, ConsumerProcesses):
            raise TypeError("ConsumerKill needs consumer processes")
        context.group.kill(0)


@dataclass(frozen=True)
class Rebalance:
    """A second consumer joins the group mid-stream; once it holds partitions, the first leaves (SIGTERM).

    The leave waits for the join's rebalance to finish: Tansu leaves the remaining member without an
    assignment when the group leader leaves while a rebalance is still in progress (reproduced with two
    plain kafka-python consumers), a broker fault real Kafka does not have.
    """

    trigger: float = 0.25
    leave_at: float = 0.55

    def describe(self) -> str:
        return f"a consumer joins after {self.trigger:.0%} of the frames, the first leaves after {self.leave_at:.0%}"

    def inject(self, context: FaultContext) -> None:
        if not isinstance(context.group, ConsumerProcesses):
            raise TypeError("Rebalance needs consumer processes")
        group = context.group
        joined = group.start()
        # A member whose log level hides the assignment line is given the time a join takes at most.
        context.wait_until(lambda: group.holds_partitions(joined), timeout_s=_JOIN_TIMEOUT_S)
        context.wait_handled(int(self.leave_at * len(context.frame_ids)))
        group.leave(0)


@dataclass(frozen=True)
class BrokerRestart:
    """Stop the broker (its log in the S3 storage engine), keep it down, start it again."""

    down_s: float = 3.0
    crash: bool = False
    trigger: float = 0.3

    def describe(self) -> str:
        how = "SIGKILL" if self.crash else "SIGTERM"
        return f"broker ({how}) down for {self.down_s:g} s after {self.trigger:.0%} of the frames"

    def inject(self, context: FaultContext) -> None:
        if context.stack.kafka_storage != "s3":
            raise ValueError("a broker restart loses an in-memory log; start the stack with kafka_storage='s3'")
        context.stack.stop_kafka(crash=self.crash)
        context.hold(self.down_s)
        context.stack.start_kafka()


@dataclass(frozen=True)
class S3Outage:
    """Stop the S3 server for down_s seconds mid-stream, then start it again on the same data."""

    down_s: float = 60.0
    trigger: float = 0.3

    def describe(self) -> str:
        return f"S3 server down for {self.down_s:g} s after {self.trigger:.0%} of the frames"

    def inject(self, context: FaultContext) -> None:
        context.stack.stop_s3()
        context.hold(self.down_s)
        context.stack.start_s3()


@dataclass(frozen=True)
class ReplicaKill:
    """ray.kill every replica of one Serve deployment mid-stream, again after each `every` more frames.

    Several kills raise the odds that one lands inside a batch (the consumers' replay and retry counts in
    the report's notes tell whether one did); the Serve controller starts a new replica each time.
    """

    app_name: str
    deployment: str = "pool"
    trigger: float = 0.3
    kills: int = 3
    every: float = 0.15

    def describe(self) -> str:
        return (f"ray.kill of the {self.deployment!r} Serve replica after {self.trigger:.0%} of the frames, "
                f"{self.kills} times, {self.every:.0%} of the frames apart")  # fmt: skip

    def inject(self, context: FaultContext) -> None:
        for kill in range(self.kills):
            if kill:
                context.wait_handled(int((self.trigger + kill * self.every) * len(context.frame_ids)))
            # The replica of the previous kill may still be starting: wait for it to exist.
            if not context.wait_until(lambda: bool(kill_serve_replicas(self.app_name, self.deployment)), 60.0):
                raise RuntimeError(f"no replica of {self.app_name}#{self.deployment} found to kill")


def kill_serve_replicas(app_name: str, deployment: str) -> list[str]:
    """Kill the replica actors of one deployment (no Ray restart: the Serve controller replaces them)."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    killed = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            killed.append(actor["name"])
    logger.info("serve replicas killed", extra={"replicas": killed})
    return killed


class NeverAnswers:
    """An inspect callable around a real one, where one frame id never gets an answer.

    Its batch-mates go to the real callable; the poisoned frame is held for timeout_s and then comes back
    Retryable, as a per-frame deadline in the client or the ingress reports a frame that never answered.
    `attempts` counts how often the consumer offered it.
    """

    def __init__(self, inner: InspectFn, frame_id: str, timeout_s: float = 2.0) -> None:
        self._inner = inner
        self.frame_id = frame_id
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self.attempts = 0
        self.inner_failures: Counter[str] = Counter()

    def _note(self, failure: str) -> None:
        """Failures of the real callable for the batch-mates: the report shows them (they are not the fault)."""
        with self._lock:
            self.inner_failures[failure[:200]] += 1

    def __call__(self, frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        others = [frame for frame in frames if frame.request.frame_id != self.frame_id]
        try:
            outcomes = list(self._inner(others)) if others else []
        except Exception as error:
            self._note(f"{type(error).__name__}: {error}")
            raise
        for outcome in outcomes:
            if isinstance(outcome, Retryable):
                self._note(f"Retryable: {outcome.detail}")
        answered = iter(outcomes)
        poisoned = len(others) < len(frames)
        if poisoned:
            with self._lock:
                self.attempts += 1
            time.sleep(self._timeout_s)
        timeout = Retryable(f"frame {self.frame_id}: no answer within {self._timeout_s:g} s")
        return [timeout if frame.request.frame_id == self.frame_id else next(answered) for frame in frames]


@dataclass(frozen=True)
class PoisonFrame:
    """One frame that always times out (see NeverAnswers): dead-lettered alone, the stream goes on."""

    never_answers: NeverAnswers
    trigger: float = 0.0

    def describe(self) -> str:
        return f"frame {self.never_answers.frame_id} never answers (each try times out)"

    def inject(self, context: FaultContext) -> None:
        """Nothing to do: the inspect callable holds the fault."""


class ScenarioReport(BaseModel):
    """One scenario's outcome: the tally plus how the fault and the consumers went."""

    model_config = ConfigDict(frozen=True)

    scenario: str
    fault: str
    consumer: str
    tally: Tally
    handled_at_fault: int | None
    finished: bool
    consumer_exits: list[str]
    seconds: float
    notes: list[str] = []

    @property
    def mid_stream(self) -> bool:
        """None: the fault is there from the first frame on (a poison frame)."""
        return self.handled_at_fault is None or 0 < self.handled_at_fault < self.tally.frames_in

    @property
    def passed(self) -> bool:
        return self.finished and self.tally.exact and not self.consumer_exits and self.mid_stream

    def failures(self) -> list[str]:
        """Why it did not pass, one phrase each (empty when it passed)."""
        tally, why = self.tally, []
        if not self.finished:
            why.append("not every frame was handled before the deadline")
        if tally.lost:
            why.append(f"{tally.lost} frames lost")
        if tally.wrongly_dead_lettered:
            why.append(f"{tally.wrongly_dead_lettered} frames wrongly dead-lettered")
        if tally.expected_dead_lettered != tally.expected_dead:
            why.append(f"{tally.expected_dead - tally.expected_dead_lettered} poison frames not dead-lettered")
        owed = tally.frames_in - tally.expected_dead
        if tally.distinct_results != owed:
            why.append(f"{tally.distinct_results} distinct result events for {owed} frames")
        if tally.stored_results != owed:
            why.append(f"{tally.stored_results} result.json objects for {owed} frames")
        if self.consumer_exits:
            why.append(f"{len(self.consumer_exits)} consumer exits")
        if not self.mid_stream:
            why.append(f"the fault did not hit mid-stream ({self.handled_at_fault} frames handled at the time)")
        return why


def run_scenario(
    scenario: str,
    fault: Fault,
    group: ConsumerGroup,
    stack: LocalStack,
    settings: ServiceSettings,
    store: ObjectStore,
    frames: Sequence[StreamFrame],
    expect_dead: Collection[str] = (),
    deadline_s: float = 300.0,
    settle_s: float = 3.0,
) -> ScenarioReport:
    """Run one scenario (see the module docstring); the consumers are always stopped before the count."""
    started = time.monotonic()
    produce(settings, frames)
    progress = ProgressWatch(settings)
    context = FaultContext(group, stack, frozenset(f.frame_id for f in frames), started + deadline_s, progress)
    notes: list[str] = []
    with progress:
        try:
            group.start()
            trigger = max(1, int(fault.trigger * len(frames)))
            handled_at_fault = context.wait_handled(trigger) if fault.trigger else None
            logger.info("injecting fault", extra={"scenario": scenario, "fault": fault.describe(), "handled": handled_at_fault})
            fault.inject(context)
            finished = context.wait_handled(len(frames)) >= len(frames)
            context.hold(settle_s)
        finally:
            group.stop()
    retries = [(stats.get("replays", 0), stats.get("frame_retries", 0)) for stats in group.reported_stats()]
    if retries:
        notes.append(
            "consumers saw " + ", ".join(f"{replays} batch replays / {frame} frame retries" for replays, frame in retries)
        )
    if isinstance(fault, PoisonFrame):
        notes.append(f"the poison frame was offered {fault.never_answers.attempts} times")
        notes += [f"its batch-mates failed {count} times with {failure}" for failure, count in fault.never_answers.inner_failures.items()]
    tally = count_outcomes(settings, store, frames, expect_dead)
    report = ScenarioReport(
        scenario=scenario, fault=fault.describe(), consumer=group.label, tally=tally,
        handled_at_fault=handled_at_fault, finished=finished, consumer_exits=describe_exits(group.exits),
        seconds=round(time.monotonic() - started, 1), notes=notes,
    )  # fmt: skip
    logger.info("scenario done", extra={"scenario": scenario, "passed": report.passed, "failures": report.failures()})
    return report
