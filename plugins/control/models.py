"""Request and response bodies of the control routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator
from pydantic.json_schema import SkipJsonSchema

# The host's error envelope, re-exported next to the control plugin's own bodies.
from host.api import ErrorDetail as ErrorDetail
from host.api import ErrorResponse as ErrorResponse
from host.api import EventPage as EventPage
from host.api import EventRecord as EventRecord


class HealthResponse(BaseModel):
    status: Literal["ok", "draining"]


class PrometheusText(RootModel[str]):
    """Prometheus text exposition format (``text/plain``)."""


class StateResponse(BaseModel):
    state: Literal["running", "paused"]
    paused: bool
    by: str | None = None
    at_ms: int | None = None


class AuthStatus(BaseModel):
    """``mode`` and the caller's own ``principal`` for every caller; the counters only
    for ``allow_gateway_read``."""

    mode: str
    session_ttl_seconds: int | None = None
    active_sessions: int | None = None
    total_sessions_issued: int | None = None
    auth_failures: int | None = None
    rate_limited_requests: int | None = None
    principal: dict[str, Any]


class StatusResponse(BaseModel):
    """Liveness (``service``, ``version``, ``state``) and the caller's own identity
    (``auth.mode``, ``auth.principal``) for every caller; the rest only for
    ``allow_gateway_read``."""

    service: str
    version: str
    state: Literal["running", "paused", "draining"]
    uptime_seconds: float | None = None
    started_unix_ms: int | None = None
    auth: AuthStatus | None = None
    plugins: list[dict[str, Any]] | None = None
    plugin_status: dict[str, Any] | None = None
    store: dict[str, Any] | None = None
    streams: dict[str, Any] | None = None
    gateway: dict[str, Any] | None = None


class ReloadResponse(BaseModel):
    status: str
    applied_live: list[str]
    restart_required: list[str]
    plugins: dict[str, Any]


class ConfigResponse(BaseModel):
    config: dict[str, Any]
    sources: dict[str, Any]


class ConfigPatchRequest(BaseModel):
    """A JSON merge patch (RFC 7386) over the configuration: objects merge, ``null``
    removes a key from the overrides file, other values replace."""

    model_config = ConfigDict(extra="allow")


class ConfigPatchResponse(ReloadResponse):
    overrides_file: str
    env_shadowed: list[str]


class PluginsResponse(BaseModel):
    plugins: list[dict[str, Any]]
    gates: dict[str, dict[str, str]]
    registrations: dict[str, dict[str, list[str]]]
    ws_kinds: list[str]


class BootstrapResponse(BaseModel):
    auth_mode: str
    ui_auth_mode: str
    requires_authentication: bool
    ops_endpoint: str
    ops_login_endpoint: str
    auth_session_endpoint: str


class SessionRequest(BaseModel):
    user: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="the account ([auth.users.<name>]); may be left out only when the "
        "legacy auth.password is set, and then means 'operator'",
    )
    password: str = Field(..., min_length=1, max_length=1024)  # passwords.MAX_PASSWORD_CHARS
    # Refused: a session's principal is its account, never a name the client picks.
    principal: SkipJsonSchema[Any] = Field(None, exclude=True)

    @field_validator("principal")
    @classmethod
    def _no_principal(cls, v: Any) -> None:
        if v is not None:
            raise ValueError('a session\'s principal is its account: send "user" instead')
        return None


class SessionResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in_seconds: int
    expires_unix_ms: int


class RevokeResponse(BaseModel):
    revoked: int
