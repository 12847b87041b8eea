"""LocalStack and deploy/stack.sh: real Tansu and SeaweedFS processes, ports, idempotence, credentials."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from kafka import KafkaProducer

from inctrl.dev.local_stack import LocalStack, pick_port, port_is_free

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_pick_port_falls_back_when_the_preferred_port_is_busy() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not port_is_free(taken)
        chosen = pick_port(taken, set())
        assert chosen != taken and port_is_free(chosen)
        grpc_safe = pick_port(taken, set(), with_grpc=True)
        assert grpc_safe + 10000 < 65536 and port_is_free(grpc_safe + 10000)


def test_stack_starts_on_free_ports_is_idempotent_and_stops(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        stack = LocalStack(tmp_path / "stack", kafka_port=busy_port)
        try:
            endpoints = stack.start()
            assert endpoints.kafka_bootstrap != f"127.0.0.1:{busy_port}"
            pids = {name: (tmp_path / "stack" / f"{name}.pid").read_text() for name in ("tansu", "weed")}
            assert stack.start() == endpoints  # second start reuses the running processes
            assert {name: (tmp_path / "stack" / f"{name}.pid").read_text() for name in pids} == pids
            assert stack.status() == {"kafka": True, "s3": True}

            producer = KafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap)
            assert producer.send("stack-check", b"hello").get(timeout=10).offset == 0
            producer.close()

            credentials = tmp_path / "stack" / "credentials.env"
            assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
            assert endpoints.s3_secret_key.get_secret_value() in credentials.read_text()
            # A second handle on the same root sees the same stack and the same generated keys.
            assert LocalStack(tmp_path / "stack").endpoints == endpoints
        finally:
            stack.stop()
    assert stack.status() == {"kafka": False, "s3": False}
    stack.stop()  # stopping a stopped stack is a no-op


def test_stack_script_up_status_down(tmp_path: Path) -> None:
    environment = {**os.environ, "INCTRL_STACK_ROOT": str(tmp_path / "script-stack")}
    environment.pop("INCTRL_S3_ACCESS_KEY", None)
    environment.pop("INCTRL_S3_SECRET_KEY", None)

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(PROJECT_ROOT / "deploy" / "stack.sh"), *args],
            env=environment, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    try:
        up = script("up")
        assert up.returncode == 0, up.stderr
        assert "kafka 127.0.0.1:" in up.stdout
        assert script("up").returncode == 0  # idempotent
        status = script("status")
        assert status.returncode == 0 and '"kafka": true' in status.stdout and '"s3": true' in status.stdout
        stack_env = (tmp_path / "script-stack" / "stack.env").read_text()
        assert "INCTRL_KAFKA_BOOTSTRAP=127.0.0.1:" in stack_env and "INCTRL_S3_SECRET_KEY=" in stack_env
        # What `source stack.env` gives a shell is the JSON of the tokens, intact.
        sourced = subprocess.run(
            ["bash", "-c", f'source {tmp_path / "script-stack" / "stack.env"} && printf %s "$INCTRL_API_TOKENS"'],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert sourced.returncode == 0, sourced.stderr
        assert all(grant["scopes"] for grant in json.loads(sourced.stdout).values())
    finally:
        assert script("down").returncode == 0
    assert script("status").returncode == 3
    assert script("bogus").returncode == 2


def test_stack_retries_on_new_ports_when_a_chosen_port_is_taken_before_binding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race between choosing a free port and the server binding it: the first choice is stolen."""
    thief = socket.socket()
    thief.bind(("127.0.0.1", 0))
    thief.listen()
    stolen = thief.getsockname()[1]
    stack = LocalStack(tmp_path / "stack")
    choose = stack._choose_ports
    choices = []

    def choose_then_steal():
        state = choose()
        if not choices:
            state = state.model_copy(update={"weed_ports": {**state.weed_ports, "filer": stolen}})
        choices.append(state)
        return state

    monkeypatch.setattr(stack, "_choose_ports", choose_then_steal)
    try:
        endpoints = stack.start()
        assert len(choices) == 2 and choices[1].weed_ports["filer"] != stolen
        assert stack.status() == {"kafka": True, "s3": True}
        assert endpoints.s3_endpoint.endswith(f":{choices[1].weed_ports['s3']}")
    finally:
        stack.stop()
        thief.close()


def test_the_s3_server_takes_many_buckets_whatever_the_free_disk(tmp_path: Path) -> None:
    """Each bucket holds volumes of its own: a session's unique buckets must not run out of volume slots."""
    from services.storage.object_store import ObjectStore

    stack = LocalStack(tmp_path / "stack")
    endpoints = stack.start()
    try:
        store = ObjectStore(endpoints.s3_endpoint, endpoints.s3_access_key.get_secret_value(), endpoints.s3_secret_key.get_secret_value())
        for i in range(40):  # above the 32 slots `weed mini` gave itself on this machine's disk
            store.ensure_bucket(f"many-{i:03d}")
            store.put_bytes(f"many-{i:03d}", "k", b"x")
        assert store.get_bytes("many-039", "k") == b"x"
    finally:
        stack.stop()
