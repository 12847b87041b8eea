"""Bearer-token authentication and scopes for the HTTP ingress and the console.

Tokens come only from the environment (a Kubernetes Secret in the chart): INCTRL_API_TOKENS is a JSON object

    {"<token>": {"subject": "alice", "scopes": ["read", "review"]}, ...}

A request carries its token as `Authorization: Bearer <token>` or, for browsers, as the cookie
`inctrl_token`. Scope implication: ADMIN implies every scope; REVIEW implies READ.

Without any token configured the service refuses to start, unless INCTRL_AUTH_DISABLED=true says so
explicitly (local development); then every request is an anonymous admin and a warning is logged loudly.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "inctrl_token"
MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused at start: a bearer token is a password that is never typed, so it can be long."""


class Scope(StrEnum):
    READ = "read"
    INSPECT = "inspect"
    REVIEW = "review"
    ADMIN = "admin"


_IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.REVIEW: frozenset({Scope.REVIEW, Scope.READ}),
    Scope.INSPECT: frozenset({Scope.INSPECT}),
    Scope.READ: frozenset({Scope.READ}),
}


class Principal(BaseModel):
    """Who made a request and what they may do (scopes as granted; `allows` applies the implications)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(min_length=1)
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return any(scope in _IMPLIED[granted] for granted in self.scopes)


class TokenGrant(BaseModel):
    """What one token stands for: one entry of INCTRL_API_TOKENS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    scopes: frozenset[Scope] = Field(min_length=1)


_GRANTS = TypeAdapter(dict[str, TokenGrant])


class AuthConfigurationError(ValueError):
    """The token configuration is missing, malformed or contradictory: the service must not start."""


class Unauthenticated(Exception):
    """No token, or one that matches no configured token."""


class AuthSettings(BaseSettings):
    """INCTRL_API_TOKENS (secret, JSON) and INCTRL_AUTH_DISABLED (explicit development switch)."""

    model_config = SettingsConfigDict(env_prefix="INCTRL_", extra="ignore", frozen=True)

    api_tokens: SecretStr | None = Field(
        None,
        description='JSON {"<token>": {"subject": "...", "scopes": ["read", "inspect", "review", "admin"]}}; '
        "from a Secret only. Kept secret so the tokens never show in a repr or a log.",
    )
    auth_disabled: bool = Field(
        False, description="Development only: accept every request as an anonymous admin (logged as a warning)."
    )

    @model_validator(mode="after")
    def _check(self) -> AuthSettings:
        if self.auth_disabled and self.api_tokens is not None:
            raise ValueError("INCTRL_AUTH_DISABLED=true contradicts INCTRL_API_TOKENS: set one of them")
        self.grants()  # malformed token JSON fails at load, not at the first request
        return self

    def grants(self) -> dict[str, TokenGrant]:
        """The configured tokens with what each grants (empty when none is configured)."""
        if self.api_tokens is None:
            return {}
        try:
            grants = _GRANTS.validate_json(self.api_tokens.get_secret_value())
        except ValidationError as error:
            # The error text would quote the tokens themselves: report only where it is wrong.
            places = sorted({".".join(str(part) for part in e["loc"][1:]) or "<top level>" for e in error.errors()})
            raise ValueError(f"INCTRL_API_TOKENS is not a JSON object of token grants (wrong at: {places})") from None
        short = [grant.subject for token, grant in grants.items() if len(token) < MIN_TOKEN_LENGTH]
        if short:
            raise ValueError(f"INCTRL_API_TOKENS: the tokens of {short} are shorter than {MIN_TOKEN_LENGTH} characters")
        return grants


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenAuthority:
    """Checks tokens in constant time and hands out FastAPI dependencies requiring a scope.

    Only SHA-256 digests of the tokens are kept; every configured digest is compared (hmac.compare_digest)
    on every request, so the time taken does not tell which token, or how much of one, matched.
    """

    def __init__(self, grants: dict[str, TokenGrant], *, disabled: bool = False) -> None:
        if not grants and not disabled:
            raise AuthConfigurationError(
                "no API token configured: set INCTRL_API_TOKENS (from a Secret), "
                "or INCTRL_AUTH_DISABLED=true for local development only"
            )
        if grants and disabled:
            raise AuthConfigurationError("auth cannot be disabled while tokens are configured")
        self._disabled = disabled
        self._principals = [
            (_digest(token), Principal(subject=grant.subject, scopes=grant.scopes)) for token, grant in grants.items()
        ]
        self._bearer = HTTPBearer(auto_error=False, description="An INCTRL_API_TOKENS token.")
        if disabled:
            logger.warning(
                "AUTHENTICATION IS DISABLED (INCTRL_AUTH_DISABLED=true): every request is treated as an admin. "
                "Never run like this outside a development machine."
            )

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenAuthority:
        try:
            grants = settings.grants()
        except ValueError as error:
            raise AuthConfigurationError(str(error)) from None
        return cls(grants, disabled=settings.auth_disabled)

    @property
    def disabled(self) -> bool:
        return self._disabled

    def authenticate(self, token: str | None) -> Principal:
        """The principal a token stands for; Unauthenticated when it is absent or unknown."""
        if self._disabled:
            return Principal(subject="anonymous (auth disabled)", scopes=frozenset({Scope.ADMIN}))
        if not token:
            raise Unauthenticated("no bearer token")
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._principals:
            if hmac.compare_digest(digest, presented):
                found = principal
        if found is None:
            raise Unauthenticated("unknown token")
        return found

    def require(self, scope: Scope) -> Callable[..., Awaitable[Principal]]:
        """A FastAPI dependency: the request's Principal, 401 without a valid token, 403 without `scope`."""
        bearer = self._bearer

        async def principal_with_scope(
            request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
        ) -> Principal:
            token = credentials.credentials if credentials is not None else request.cookies.get(TOKEN_COOKIE)
            try:
                principal = self.authenticate(token)
            except Unauthenticated as error:
                raise HTTPException(
                    status_code=401, detail=f"authentication required: {error}", headers={"WWW-Authenticate": "Bearer"}
                ) from None
            if not principal.allows(scope):
                raise HTTPException(status_code=403, detail=f"{principal.subject!r} lacks the {scope.value!r} scope")
            return principal

        return principal_with_scope


def token_grants_json(grants: dict[str, TokenGrant]) -> str:
    """INCTRL_API_TOKENS text for these grants (tests, the local stack, a Secret's value)."""
    return json.dumps({token: grant.model_dump(mode="json") for token, grant in grants.items()})
