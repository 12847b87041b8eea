"""Fixtures of the index tests: a real PostgreSQL server per session, fresh databases per test, and the
index on PostgreSQL and SQLite (parametrised), plus the local stack fixtures of tests/integration.

The PostgreSQL server is a throwaway cluster: initdb + pg_ctl from the OS package (/usr/lib/postgresql/N/bin)
in a temp folder, trust auth, on a free loopback port and a private socket folder. initdb refuses to
run as root, so as root both run as the `postgres` user (su postgres -c). Other test folders can load
these fixtures by path, as tests/integration_serve/conftest.py loads the stack fixtures.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.index import InspectionIndex, create_index_engine, upgrade

_spec = importlib.util.spec_from_file_location(
    "integration_stack_fixtures", Path(__file__).parents[1] / "integration" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_stack_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stack_fixtures)
local_stack = _stack_fixtures.local_stack
stack_endpoints = _stack_fixtures.stack_endpoints
kafka_bootstrap = _stack_fixtures.kafka_bootstrap
unique_name = _stack_fixtures.unique_name
service_settings = _stack_fixtures.service_settings
read_topic = _stack_fixtures.read_topic
create_topics = _stack_fixtures.create_topics

PG_START_TIMEOUT_S = 60


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server bin folder (holding initdb and pg_ctl), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway cluster; database_url(name) points at one of its databases."""

    host: str
    port: int
    user: str

    def database_url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    line = shlex.join(command)
    argv = ["su", "postgres", "-s", "/bin/sh", "-c", line] if os.geteuid() == 0 else ["sh", "-c", line]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=PG_START_TIMEOUT_S)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (skipped, with the reason, only when the binaries are absent)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="inctrl-pg-", dir="/tmp"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    initdb = _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], root)
    if initdb.returncode != 0:
        raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stderr or initdb.stdout}")
    server = None
    for _ in range(3):  # a freshly chosen port can be taken before the server binds it: try another
        port = _free_port()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        started = _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"], root)
        if started.returncode == 0:
            server = PostgresServer("127.0.0.1", port, "postgres")
            break
    if server is None:
        text = log.read_text() if log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stderr or started.stdout} {text[-2000:]}")
    try:
        yield server
    finally:
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database(f"index_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL, once per backend."""
    return request.getfixturevalue(f"{request.param}_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def index_engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on the fresh database."""
    engine = create_index_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def index(index_engine: Engine) -> InspectionIndex:
    """The repository on the migrated database (SQLite and PostgreSQL)."""
    return InspectionIndex(index_engine)


@pytest.fixture
def result_factory() -> Callable[..., object]:
    """result_factory(frame_id, score=..., threshold=..., domain=, line=, timestamp=, reference_version=)."""
    from datetime import datetime, timezone

    from services.protocol.messages import InspectionResult, MapStatistics, verdict_for

    base = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

    def make(
        frame_id: str, score: float = 0.3, threshold: float = 0.5, domain: str = "capsule", line: str = "line-1",
        timestamp: datetime = base, reference_version: str = "capsule/v1",
    ) -> InspectionResult:
        return InspectionResult(
            frame_id=frame_id, domain=domain, line=line, timestamp=timestamp, score=score, threshold=threshold,
            verdict=verdict_for(score, threshold), bucket="inctrl-results",
            result_key=f"results/{domain}/{line}/2026-12-01/{frame_id}/result.json",
            map_key=f"results/{domain}/{line}/2026-12-01/{frame_id}/map.png",
            overlay_key=f"results/{domain}/{line}/2026-12-01/{frame_id}/overlay.jpg",
            model_version="ckpt-1", reference_version=reference_version, latency_ms=12.5,
            map_statistics=MapStatistics(max=score, mean=score / 2, threshold=0.5, area_above_threshold=0.01),
        )  # fmt: skip

    return make
