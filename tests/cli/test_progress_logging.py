"""Progress lines on stderr for long jobs, and third-party loggers kept at WARNING unless --verbose."""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from inctrl.cli import app
from inctrl.progress import THIRD_PARTY_LOGGERS, ProgressHandler, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, filters = list(root.handlers), {h: list(h.filters) for h in root.handlers}
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler, kept in filters.items():
        handler.filters = kept
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _progress(logger: logging.Logger, task: str, done: int, total: int) -> None:
    logger.info("%s %d/%d", task, done, total, extra={"progress": {"task": task, "done": done, "total": total}})


def test_progress_to_a_file_prints_every_tenth_and_the_end() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.progress.file")
    logger.propagate = False
    logger.addHandler(ProgressHandler(stream))
    logger.setLevel(logging.INFO)
    for done in range(1, 101):
        _progress(logger, "encoding brick", done, 100)
    logger.info("an ordinary record is not drawn")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and all(line.startswith("encoding brick [") for line in lines)  # the start, each tenth
    assert lines[-1].split("]")[1].split()[0] == "100/100" and "#" * 20 in lines[-1]
    assert [line.split("]")[1].split()[0] for line in lines[:3]] == ["1/100", "10/100", "20/100"]


def test_third_party_loggers_are_quiet_unless_verbose(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_LOGGER_LEVEL", raising=False)
    configure_logging(0)
    assert os.environ["RAY_LOGGER_LEVEL"] == "warning"  # ray.init() and Ray's workers read it
    assert logging.getLogger("kafka").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("kafka.conn").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING
    configure_logging(1)
    assert logging.getLogger("kafka").getEffectiveLevel() == logging.INFO
    configure_logging(2)
    assert logging.getLogger("ray").getEffectiveLevel() == logging.DEBUG


def test_cli_root_applies_the_levels(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_LOGGER_LEVEL", raising=False)
    result = CliRunner().invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    result = CliRunner().invoke(app, ["-v", "data", "--help"])
    assert result.exit_code == 0 and logging.getLogger("minio").getEffectiveLevel() == logging.INFO


def test_ordinary_log_output_leaves_progress_records_to_the_progress_line(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_LOGGER_LEVEL", raising=False)
    configure_logging(0)
    plain = [h for h in logging.getLogger().handlers if not isinstance(h, ProgressHandler)]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.progress = {"task": "t", "done": 1, "total": 2}
    assert plain and all(not h.filter(record) for h in plain)
    assert any(isinstance(h, ProgressHandler) for h in logging.getLogger().handlers)


@pytest.mark.parametrize(("root_level", "expected"), [(logging.INFO, logging.WARNING), (logging.DEBUG, logging.NOTSET)])
def test_dev_jobs_keep_the_services_and_serve_driver_logs_out_unless_verbose(root_level: int, expected: int) -> None:
    from inctrl.dev.commands import quiet_service_logs

    import ray.serve  # noqa: F401 - sets the "ray.serve" logger to INFO, as the demo's own import does

    root, services, serve = logging.getLogger(), logging.getLogger("services"), logging.getLogger("ray.serve")
    before = root.level, services.level, serve.level
    try:
        root.setLevel(root_level)  # what configure_logging sets without and with -v
        services.setLevel(logging.NOTSET)
        serve.setLevel(logging.INFO)
        quiet_service_logs()
        assert services.level == expected
        assert serve.level == (logging.WARNING if root_level == logging.INFO else logging.INFO)
    finally:
        root.setLevel(before[0])
        services.setLevel(before[1])
        serve.setLevel(before[2])


def test_library_records_on_the_root_logger_are_quiet_unless_verbose(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip logs with logging.info() on the root logger: the demo printed every model it built."""
    monkeypatch.delenv("RAY_LOGGER_LEVEL", raising=False)

    def shown(verbosity: int, name: str, level: int) -> bool:
        configure_logging(verbosity)
        plain = [h for h in logging.getLogger().handlers if not isinstance(h, ProgressHandler)]
        return all(h.filter(logging.LogRecord(name, level, __file__, 1, "m", None, None)) for h in plain)

    assert not shown(0, "root", logging.INFO)
    assert shown(0, "root", logging.WARNING)
    assert shown(0, "inctrl.cli", logging.INFO)  # ours, on a named logger
    assert shown(1, "root", logging.INFO)
