"""services/auth.py: token grants from the environment, scope implication, and the FastAPI dependency over real HTTP."""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import uvicorn
from fastapi import Depends, FastAPI

from services.auth import (
    TOKEN_COOKIE,
    AuthConfigurationError,
    AuthSettings,
    Principal,
    Scope,
    TokenAuthority,
    TokenGrant,
    Unauthenticated,
    token_grants_json,
)

READER = "reader-token-0123456789"
REVIEWER = "reviewer-token-0123456789"
ADMIN = "admin-token-0123456789ab"
GRANTS = {
    READER: TokenGrant(subject="rita", scopes=frozenset({Scope.READ})),
    REVIEWER: TokenGrant(subject="rob", scopes=frozenset({Scope.REVIEW})),
    ADMIN: TokenGrant(subject="ada", scopes=frozenset({Scope.ADMIN})),
}


def authority(monkeypatch: pytest.MonkeyPatch) -> TokenAuthority:
    monkeypatch.setenv("INCTRL_API_TOKENS", token_grants_json(GRANTS))
    return TokenAuthority.from_settings(AuthSettings())


def test_tokens_from_the_environment_map_to_principals(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = authority(monkeypatch)
    assert auth.authenticate(REVIEWER) == Principal(subject="rob", scopes=frozenset({Scope.REVIEW}))
    for token in (None, "", "x" * 30, READER + "x", READER[:-1]):
        with pytest.raises(Unauthenticated):
            auth.authenticate(token)
    assert READER not in repr(AuthSettings()) and "rita" not in repr(AuthSettings())


def test_admin_implies_every_scope_and_review_implies_read() -> None:
    admin = Principal(subject="a", scopes=frozenset({Scope.ADMIN}))
    reviewer = Principal(subject="r", scopes=frozenset({Scope.REVIEW}))
    inspector = Principal(subject="i", scopes=frozenset({Scope.INSPECT}))
    assert all(admin.allows(scope) for scope in Scope)
    assert [scope for scope in Scope if reviewer.allows(scope)] == [Scope.READ, Scope.REVIEW]
    assert [scope for scope in Scope if inspector.allows(scope)] == [Scope.INSPECT]


def test_no_token_configured_refuses_to_start_unless_explicitly_disabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("INCTRL_API_TOKENS", raising=False)
    with pytest.raises(AuthConfigurationError, match="no API token configured"):
        TokenAuthority.from_settings(AuthSettings())
    monkeypatch.setenv("INCTRL_AUTH_DISABLED", "true")
    with caplog.at_level(logging.WARNING, logger="services.auth"):
        open_door = TokenAuthority.from_settings(AuthSettings())
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    assert open_door.authenticate(None).allows(Scope.ADMIN)
    monkeypatch.setenv("INCTRL_API_TOKENS", token_grants_json(GRANTS))
    with pytest.raises(ValueError, match="contradicts"):
        AuthSettings()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "not a JSON object of token grants"),
        ('{"' + "t" * 20 + '": {"subject": "x", "scopes": ["root"]}}', "wrong at"),
        ('{"' + "t" * 20 + '": {"subject": "x", "scopes": []}}', "wrong at"),
        ('{"short": {"subject": "x", "scopes": ["read"]}}', "shorter than 16"),
    ],
)
def test_malformed_grants_fail_at_load_without_quoting_the_tokens(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("INCTRL_API_TOKENS", value)
    with pytest.raises(ValueError, match=message) as error:
        AuthSettings()
    assert "t" * 20 not in str(error.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    auth = authority(monkeypatch)
    app = FastAPI()

    @app.get("/read")
    async def read(principal: Principal = Depends(auth.require(Scope.READ))) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.post("/admin")
    async def admin(principal: Principal = Depends(auth.require(Scope.ADMIN))) -> dict[str, str]:
        return {"subject": principal.subject}

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def test_dependency_answers_401_403_and_reads_header_or_cookie(server: str) -> None:
    missing = requests.get(f"{server}/read", timeout=5)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = requests.get(f"{server}/read", headers={"Authorization": "Bearer " + "z" * 24}, timeout=5)
    assert wrong.status_code == 401 and "unknown token" in wrong.json()["detail"]
    basic = requests.get(f"{server}/read", headers={"Authorization": f"Basic {READER}"}, timeout=5)
    assert basic.status_code == 401
    ok = requests.get(f"{server}/read", headers={"Authorization": f"Bearer {REVIEWER}"}, timeout=5)
    assert ok.status_code == 200 and ok.json() == {"subject": "rob"}
    cookie = requests.get(f"{server}/read", cookies={TOKEN_COOKIE: READER}, timeout=5)
    assert cookie.status_code == 200 and cookie.json() == {"subject": "rita"}
    forbidden = requests.post(f"{server}/admin", headers={"Authorization": f"Bearer {REVIEWER}"}, timeout=5)
    assert forbidden.status_code == 403 and "'admin' scope" in forbidden.json()["detail"]
    allowed = requests.post(f"{server}/admin", cookies={TOKEN_COOKIE: ADMIN}, timeout=5)
    assert allowed.status_code == 200 and allowed.json() == {"subject": "ada"}
