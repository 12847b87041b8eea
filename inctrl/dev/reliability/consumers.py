"""Consumer group members under a supervisor that restarts any member that exits on its own.

A Kubernetes Deployment restarts a consumer pod that dies; the supervisors here do the same and count
every exit they did not cause themselves. A consumer that no fault can stop has none. Members are real
processes (`inctrl consume`, or any command reading INCTRL_* settings) or, where a test needs to inject
the inspect callable, FrameConsumer threads in this process.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sysconfig
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import InspectFn
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import die_with_parent

logger = logging.getLogger(__name__)

_LOG_TAIL_CHARS = 1500
_STOP_TIMEOUT_S = 60.0
# kafka-python's INFO line when a member gets a non-empty assignment ("... partitions set()" when empty).
_ASSIGNED_MARK = "Setting newly assigned partitions {"


@dataclass(frozen=True)
class ConsumerExit:
    """A member that ended without being asked to (or failed to end cleanly when asked)."""

    member: int
    returncode: int | None
    log_tail: str

    def describe(self) -> str:
        last = self.log_tail.strip().splitlines()[-1:] or ["(no output)"]
        return f"member {self.member} exited with {self.returncode}: {last[0][:300]}"


class ConsumerGroup(Protocol):
    """Members of one consumer group, started, faulted and stopped by a scenario."""

    label: str
    exits: list[ConsumerExit]

    def start(self) -> int: ...
    def reported_stats(self) -> list[dict[str, object]]: ...
    def leave(self, member: int) -> None: ...
    def supervise(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class ConsumerCommand:
    """How to start one consumer process: argv, plus variables on top of the settings' INCTRL_* ones."""

    label: str
    argv: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def inctrl_consume(cls, serve_url: str) -> ConsumerCommand:
        """The product's own consumer, inspecting over HTTP on the Serve app's ingress."""
        executable = Path(sysconfig.get_path("scripts")) / "inctrl"
        return cls("inctrl consume (HTTP to Serve)", (str(executable), "consume", "--serve-url", serve_url))


@dataclass
class _Process:
    process: subprocess.Popen[bytes]
    log: Path
    planned_end: bool = False


class ConsumerProcesses:
    """Members as subprocesses in their own session; each writes its output to log_dir/member-N-R.log."""

    def __init__(self, command: ConsumerCommand, settings: ServiceSettings, log_dir: Path, restart_delay_s: float = 1.0) -> None:
        self.label = command.label
        self.exits: list[ConsumerExit] = []
        self._command = command
        # Port 0: members on one host must not fight over the health/metrics port.
        self._environment = {**os.environ, **settings.to_environment(), "INCTRL_METRICS_PORT": "0", **command.environment}
        self._log_dir = Path(log_dir)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        for old in self._log_dir.glob("member-*.log"):  # a rerun's stats must not include the last run's
            old.unlink()
        self._restart_delay_s = restart_delay_s
        self._members: dict[int, _Process] = {}
        self._spawned = 0

    def start(self) -> int:
        """Start a new member; returns its number."""
        member = len(self._members)
        self._members[member] = self._spawn(member)
        return member

    def _spawn(self, member: int) -> _Process:
        self._spawned += 1
        log = self._log_dir / f"member-{member}-{self._spawned}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                self._command.argv, env=self._environment, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        logger.info("consumer member started", extra={"member": member, "pid": process.pid})
        return _Process(process, log)

    def kill(self, member: int) -> None:
        """SIGKILL: no drain, no commit, no leave-group. The supervisor restarts it (a new pod)."""
        entry = self._members[member]
        entry.planned_end = True
        os.killpg(entry.process.pid, signal.SIGKILL)
        entry.process.wait(timeout=_STOP_TIMEOUT_S)
        time.sleep(self._restart_delay_s)
        self._members[member] = self._spawn(member)

    def leave(self, member: int) -> None:
        """SIGTERM and wait: the member drains, commits and leaves the group; anything but exit 0 is counted."""
        self._end(member)

    def reported_stats(self) -> list[dict[str, object]]:
        """The statistics each process printed as its last line on a clean exit (`inctrl consume` does)."""
        stats = []
        for log in sorted(self._log_dir.glob("member-*.log")):
            last = _tail(log).strip().splitlines()[-1:]
            if last and last[0].startswith("{"):
                try:
                    stats.append(json.loads(last[0]))
                except ValueError:
                    continue
        return stats

    def holds_partitions(self, member: int) -> bool:
        """Whether the member's current process was given partitions (kafka-python logs each assignment)."""
        return _ASSIGNED_MARK in _tail(self._members[member].log, None)

    def supervise(self) -> None:
        """Restart members that ended without being asked to, counting each exit."""
        for member, entry in list(self._members.items()):
            code = entry.process.poll()
            if code is None or entry.planned_end:
                continue
            self.exits.append(ConsumerExit(member, code, _tail(entry.log)))
            logger.warning("consumer member exited on its own; restarting", extra={"member": member, "returncode": code})
            time.sleep(self._restart_delay_s)
            self._members[member] = self._spawn(member)

    def stop(self) -> None:
        """SIGTERM every live member and wait for each."""
        self.supervise()
        for member in list(self._members):
            self._end(member)

    def _end(self, member: int) -> None:
        entry = self._members[member]
        if entry.process.poll() is not None:
            return
        entry.planned_end = True
        entry.process.send_signal(signal.SIGTERM)
        try:
            code = entry.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(entry.process.pid, signal.SIGKILL)
            entry.process.wait()
            code = None
        # -SIGTERM: the signal arrived before the process installed its handler (still importing), so it
        # held nothing; any other code after a planned stop is a consumer that failed to close cleanly.
        if code not in (0, -signal.SIGTERM):
            self.exits.append(ConsumerExit(member, code, _tail(entry.log)))


class ConsumerThreads:
    """Members as FrameConsumer threads in this process, for scenarios that inject the inspect callable."""

    def __init__(self, settings: ServiceSettings, inspect: InspectFn, store: ObjectStore, label: str) -> None:
        self.label = label
        self.exits: list[ConsumerExit] = []
        self._settings = settings
        self._inspect = inspect
        self._store = store
        self._members: dict[int, tuple[FrameConsumer, threading.Thread, list[BaseException]]] = {}

    def start(self) -> int:
        member = len(self._members)
        self._members[member] = self._spawn()
        return member

    def _spawn(self) -> tuple[FrameConsumer, threading.Thread, list[BaseException]]:
        consumer = FrameConsumer.connect(self._settings, self._inspect, self._store)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                consumer.run()
            except BaseException as error:  # noqa: BLE001 - an exit is what the supervisor counts
                logger.exception("consumer thread ended with an error")
                failure.append(error)
            finally:
                consumer.close()

        thread = threading.Thread(target=run, name="reliability-consumer", daemon=True)
        thread.start()
        return consumer, thread, failure

    def leave(self, member: int) -> None:
        consumer, thread, failure = self._members[member]
        consumer.stop()
        thread.join(timeout=_STOP_TIMEOUT_S)
        if failure or thread.is_alive():
            self.exits.append(ConsumerExit(member, None, repr(failure[0]) if failure else "did not stop"))

    def reported_stats(self) -> list[dict[str, object]]:
        return [consumer.stats.log_fields() for consumer, _, _ in self._members.values()]

    def supervise(self) -> None:
        for member, (_, thread, failure) in list(self._members.items()):
            if thread.is_alive() or not failure:
                continue
            self.exits.append(ConsumerExit(member, None, f"{type(failure[0]).__name__}: {failure[0]}"))
            self._members[member] = self._spawn()

    def stop(self) -> None:
        self.supervise()
        for member, (_, thread, _) in list(self._members.items()):
            if thread.is_alive():
                self.leave(member)


def _tail(log: Path, chars: int | None = _LOG_TAIL_CHARS) -> str:
    try:
        text = log.read_text(errors="replace")
        return text if chars is None else text[-chars:]
    except OSError:
        return ""


def describe_exits(exits: Sequence[ConsumerExit]) -> list[str]:
    return [exit_.describe() for exit_ in exits]
