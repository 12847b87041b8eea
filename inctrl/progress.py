"""Progress of long jobs as one compact line on stderr, and the CLI's logging set-up.

Library code reports progress with an ordinary log record that carries `extra={"progress": {"task": str,
"done": int, "total": int}}` (one `logger.info` per step: no dependency on this module, and outside the
CLI it is just a log line). The CLI installs ProgressHandler, which draws those records as

    encoding capsule [########------------]  40/100  12.5/s  eta 5s

redrawn in place on a terminal (at most every 0.2 s), or, when stderr is a file or a pipe, one line per
10% and at the end; and keeps them out of the ordinary log output.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

# Chatty libraries: WARNING unless --verbose (-v: INFO, -vv: DEBUG).
THIRD_PARTY_LOGGERS = (
    "kafka", "ray", "urllib3", "minio", "botocore", "boto3", "s3transfer", "filelock", "fsspec", "matplotlib", "PIL",
    "asyncio", "httpx", "httpcore", "uvicorn", "starlette", "fastapi", "sqlalchemy", "alembic", "open_clip", "timm",
    "pyarrow", "grpc", "aiohttp", "watchfiles", "faiss",
)  # fmt: skip
_BAR = 20


def _is_progress(record: logging.LogRecord) -> bool:
    return isinstance(getattr(record, "progress", None), dict)


class _WithoutProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_progress(record)


class _RootRecordsAtLeast(logging.Filter):
    """Records logged on the root logger itself (``logging.info(...)``) below ``level``: our code logs on named
    loggers only, so these are a library's (open_clip announces every model it builds that way)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= self.level


class ProgressHandler(logging.Handler):
    """Draws progress records (module docstring); ignores every other record."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.2) -> None:
        super().__init__(logging.INFO)
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._tasks: dict[str, tuple[float, float, int]] = {}  # task -> (started, last drawn, last tenth)

    def emit(self, record: logging.LogRecord) -> None:
        if not _is_progress(record):
            return
        try:
            progress = record.progress  # type: ignore[attr-defined]
            task, done, total = str(progress["task"]), int(progress["done"]), max(1, int(progress["total"]))
            now = time.monotonic()
            started, drawn, tenth = self._tasks.get(task, (now, 0.0, -1))
            finished = done >= total
            interactive = self.stream.isatty()
            if interactive and not finished and now - drawn < self.interval_s:
                return
            if not interactive and not finished and 10 * done // total == tenth:
                return
            self._tasks[task] = (started, now, 10 * done // total)
            if finished:
                self._tasks.pop(task, None)
            line = self.render(task, done, total, now - started)
            self.stream.write(("\r" + line + ("\n" if finished else "")) if interactive else line + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a display problem must never stop the job
            self.handleError(record)

    @staticmethod
    def render(task: str, done: int, total: int, elapsed_s: float) -> str:
        filled = min(_BAR, _BAR * done // total)
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        eta = f"eta {(total - done) / rate:.0f}s" if 0 < rate and done < total else f"{elapsed_s:.0f}s"
        width = len(str(total))
        return f"{task} [{'#' * filled}{'-' * (_BAR - filled)}] {done:>{width}}/{total} {rate:6.1f}/s {eta}"


def configure_logging(verbosity: int = 0) -> None:
    """Our loggers at INFO (DEBUG with -v); third-party ones, and records on the root logger itself, at WARNING
    (INFO with -v, DEBUG with -vv); progress records drawn by ProgressHandler instead of the log format."""
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    root = logging.getLogger()
    third_party = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    for handler in root.handlers:
        if not isinstance(handler, ProgressHandler):
            handler.filters = [f for f in handler.filters if not isinstance(f, (_WithoutProgress, _RootRecordsAtLeast))]
            handler.addFilter(_WithoutProgress())
            handler.addFilter(_RootRecordsAtLeast(third_party))
    if not any(isinstance(handler, ProgressHandler) for handler in root.handlers):
        root.addHandler(ProgressHandler())
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(third_party)
    # Ray sets its logger to INFO when imported and again in ray.init(), unless this says otherwise (its
    # worker processes inherit it too); an explicit setting of the user's wins.
    os.environ.setdefault("RAY_LOGGER_LEVEL", logging.getLevelName(third_party).lower())
