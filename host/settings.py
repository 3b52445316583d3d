"""Settings: ``gateway.toml`` + the runtime overrides file + ``GATEWAY_*`` environment.

Precedence, lowest first: defaults, the config file, the overrides file written by
``PATCH /gateway/config``, then environment variables (``GATEWAY_AUTH__MODE=token``;
``__`` separates nested keys). Secrets are references (see :mod:`host.secrets`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from host.secrets import Secret

CONFIG_FILENAME = "gateway.toml"
OVERRIDES_FILENAME = "config.overrides.toml"
DEFAULT_BIND = "127.0.0.1:8787"

CURRENT_CONFIG_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "gateway_config_dir", default=None
)
# Command-line flags (``gateway serve --bind``) beat the environment, which beats files.
CURRENT_CLI: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "gateway_cli_overrides", default=None
)


class _CliSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(CURRENT_CLI.get() or {})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Section):
    per_minute: int = Field(600, ge=1, le=1_000_000, description="sustained requests per minute")
    burst: int | None = Field(
        None, ge=1, le=1_000_000, description="bucket size; defaults to per_minute"
    )

    @property
    def capacity(self) -> int:
        return self.burst or self.per_minute


class TokenSettings(_Section):
    token: Secret
    gates: list[str] = Field(default_factory=list, description='granted gates; "*" grants all')
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    # Read by the model plugins (openai_compat): which models it may call, and its
    # spending limits (validated by the plugin, at config check).
    models: list[str] | None = Field(
        None, description="model names or glob patterns it may use; unset = every model"
    )
    budgets: dict[str, Any] = Field(default_factory=dict, description="model spending limits")
    # Read by the MCP plugin: which tools it may list and call on /mcp.
    tools: list[str] | None = Field(
        None, description="tool names or glob patterns it may use on /mcp; unset = every tool"
    )


ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
LEGACY_ACCOUNT = "operator"


class UserSettings(_Section):
    """``[auth.users.<name>]``: a named operator account of password-session mode."""

    password: Secret | None = Field(None, description="the password, a secret reference")
    password_hash: str | None = Field(None, description="made by `gateway auth hash-password`")
    gates: list[str] = Field(default_factory=list, description='granted gates; "*" grants all')
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    # Read by the model plugins (openai_compat): which models it may call, and its
    # spending limits (validated by the plugin, at config check).
    models: list[str] | None = Field(
        None, description="model names or glob patterns it may use; unset = every model"
    )
    budgets: dict[str, Any] = Field(default_factory=dict, description="model spending limits")
    # Read by the MCP plugin: which tools it may list and call on /mcp.
    tools: list[str] | None = Field(
        None, description="tool names or glob patterns it may use on /mcp; unset = every tool"
    )

    @field_validator("password_hash")
    @classmethod
    def _parse_hash(cls, v: str | None) -> str | None:
        from host.auth.passwords import PasswordHash  # host.auth imports this module

        return None if v is None else str(PasswordHash.parse(v.strip()))

    @field_serializer("password_hash")
    def _mask_hash(self, v: str | None) -> str | None:
        from host.auth.passwords import PasswordHash

        return None if v is None else PasswordHash.parse(v).masked()

    @model_validator(mode="after")
    def _one_credential(self) -> UserSettings:
        if self.password is None and self.password_hash is None:
            raise ValueError("an account needs password or password_hash")
        if self.password is not None and self.password_hash is not None:
            raise ValueError("give an account password or password_hash, not both")
        return self


class LoginBackoffSettings(_Section):
    """Failed password logins: exponential back-off per (account, client address) and per
    account, checked before the password is."""

    free_failures: int = Field(5, ge=1, le=1000, description="per (account, address)")
    account_free_failures: int = Field(20, ge=1, le=100_000, description="per account")
    base_seconds: int = Field(1, ge=1, le=3600, description="the first wait")
    max_seconds: int = Field(900, ge=1, le=86_400, description="the longest wait")
    forget_after_seconds: int = Field(3600, ge=1, le=7 * 86_400, description="quiet resets")

    @model_validator(mode="after")
    def _ordered(self) -> LoginBackoffSettings:
        if self.max_seconds < self.base_seconds:
            raise ValueError("login_backoff.max_seconds must be at least base_seconds")
        return self


class AuthSettings(_Section):
    mode: Literal["token", "password-session", "localhost-dev"] = "token"
    tokens: dict[str, TokenSettings] = Field(default_factory=dict)
    # password-session mode
    users: dict[str, UserSettings] = Field(default_factory=dict)
    password: Secret | None = Field(None, description="legacy: the account 'operator'")
    login_backoff: LoginBackoffSettings = Field(default_factory=LoginBackoffSettings)
    session_ttl_seconds: int = Field(12 * 3600, ge=1, le=30 * 86400)
    session_gates: list[str] = Field(default_factory=lambda: ["*"])
    session_rate_limit: RateLimit = Field(default_factory=RateLimit)
    # localhost-dev mode
    localhost_dev_gates: list[str] = Field(default_factory=lambda: ["*"])
    localhost_dev_rate_limit: RateLimit = Field(default_factory=RateLimit)
    # unauthenticated traffic, per client address
    failed_auth_limit: RateLimit = Field(default_factory=lambda: RateLimit(per_minute=30))
    public_rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(per_minute=120))
    rate_limit_state: Literal["auto", "store", "process"] = Field(
        "auto",
        description="where the rate limits' buckets live: auto = in the store when it is "
        "shared (PostgreSQL, or workers > 1), else in the process",
    )
    admin_token_file: str = Field("admin-token", description="generated token, in the state dir")

    @field_validator("users")
    @classmethod
    def _account_names(cls, v: dict[str, UserSettings]) -> dict[str, UserSettings]:
        for name in v:
            if not ACCOUNT_NAME.match(name):
                raise ValueError(
                    f"account name {name!r}: 1 to 64 letters, digits and . _ @ -, "
                    "starting with a letter or digit"
                )
        return v

    @model_validator(mode="after")
    def _legacy_operator(self) -> AuthSettings:
        if self.password is not None and LEGACY_ACCOUNT in self.users:
            raise ValueError(
                f"auth.password is the account {LEGACY_ACCOUNT!r}, and auth.users also has "
                "one: keep one of them"
            )
        return self


class ServerSettings(_Section):
    bind: str = DEFAULT_BIND
    workers: int = Field(1, ge=1, le=64)
    certfile: str | None = None
    keyfile: str | None = None
    max_websockets_per_principal: int = Field(16, ge=1, le=10_000)
    access_log: bool = True
    graceful_timeout_seconds: float = Field(10.0, ge=0.1, le=3600)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024**3)
    body_read_timeout_seconds: float = Field(
        10.0, ge=1, le=300, description="a request body that takes longer gets 408"
    )
    max_connections: int = Field(
        1000, ge=1, le=100_000, description="open connections per worker; more are closed"
    )
    allowed_hosts: list[str] | None = Field(
        None, description='Host names served; "*" any; unset: the bind host and loopback'
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed cross-origin (exact)"
    )

    @field_validator("bind")
    @classmethod
    def _bind_has_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("bind must look like HOST:PORT, e.g. 127.0.0.1:8787")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = []
        for entry in v:
            name = entry.strip().lower()
            bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
            if not bare or bare.count(":") == 1 or any(c in bare for c in "/@ \t"):
                raise ValueError(
                    f"{entry!r} is not a host name: write a name or address without "
                    'scheme or port, e.g. "gateway.example.com", "10.0.0.5", "::1" or "*"'
                )
            out.append(bare.rstrip("."))
        return out

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        from host.origins import normalize_origin

        out = []
        for entry in v:
            origin = normalize_origin(entry)
            if origin is None:
                raise ValueError(
                    f"{entry!r} is not an origin: write scheme://host[:port], e.g. "
                    '"https://app.example.com" (no path, no "*")'
                )
            out.append(origin)
        return out


class StorageSettings(_Section):
    url: str | Secret | None = Field(
        None,
        union_mode="left_to_right",
        description="SQLAlchemy URL, or a secret reference to one; default SQLite in the state dir",
    )
    password: Secret | None = Field(None, description="PostgreSQL: when storage.url has none")
    synchronous: Literal["full", "normal"] = "full"
    busy_timeout_ms: int = Field(10_000, ge=100, le=600_000)
    pool_size: int = Field(
        5, ge=1, le=100, description="PostgreSQL: connections per worker, as many again in bursts"
    )

    @field_validator("url", mode="before")
    @classmethod
    def _url_reference(cls, v: Any) -> Any:
        # A reference ({ env = "DATABASE_URL" }) stays one; a plain string stays text, so
        # that `config show` can print it with only its password masked.
        if isinstance(v, dict):
            from host.secrets import SecretError

            try:
                return Secret.resolve(v, CURRENT_CONFIG_DIR.get())
            except SecretError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _check_url(self) -> StorageSettings:
        self.resolved_url(Path("."))
        return self

    def resolved_url(self, state_dir: Path) -> str:
        """The URL the store connects with (SQLite in ``state_dir`` when none is set)."""
        from host.storage.urls import StoreURLError, sqlite_url, store_url

        raw = self.url.get() if isinstance(self.url, Secret) else self.url
        password = self.password.get() if self.password is not None else None
        if raw is None:
            if password is not None:
                raise ValueError("storage.password is for a PostgreSQL storage.url")
            return sqlite_url(state_dir)
        try:
            return store_url(raw, password)
        except StoreURLError as exc:
            raise ValueError(str(exc)) from None


class EventSettings(_Section):
    heartbeat_seconds: float = Field(15.0, ge=0.1, le=3600)
    poll_seconds: float = Field(
        1.0, ge=0.05, le=60, description="fallback poll for other processes"
    )
    page_limit_max: int = Field(1000, ge=1, le=10_000)
    max_streams_per_principal: int = Field(32, ge=1, le=10_000, description="live HTTP streams")
    subscriber_queue_max: int = Field(1000, ge=100, le=100_000, description="events per reader")


class RetentionSettings(_Section):
    """What old data the gateway removes, and how often. An age of 0 or a count of 0
    keeps that kind forever."""

    enabled: bool = Field(True, description="prune in the background on every worker")
    interval_seconds: float = Field(3600.0, ge=1, le=7 * 86400)
    batch_size: int = Field(500, ge=10, le=10_000, description="rows per write transaction")
    events_max_age_days: float = Field(30.0, ge=0, le=36_500)
    events_max_count: int = Field(100_000, ge=0, le=100_000_000, description="per log stream")
    runs_max_age_days: float = Field(30.0, ge=0, le=36_500, description="finished runs")
    runs_max_count: int = Field(10_000, ge=0, le=100_000_000, description="finished runs")
    responses_max_age_days: float = Field(30.0, ge=0, le=36_500)
    responses_max_count: int = Field(10_000, ge=0, le=100_000_000)

    def cutoff_ms(self, days: float, now_ms: int) -> int | None:
        """The time before which a kind kept ``days`` goes (None: kept forever)."""
        return now_ms - int(days * 86_400_000) if days > 0 else None

    @staticmethod
    def limit(count: int) -> int | None:
        return count if count > 0 else None


class SecretsSettings(_Section):
    """``[secrets]``: the secret references that the overrides file (what a
    ``PATCH /gateway/config`` writes) may name. Read from the config file and the
    environment only, never from the overrides file (see :mod:`host.secret_refs`)."""

    allowed_env: list[str] = Field(
        default_factory=list, description="variable names (or glob patterns) a PATCH may name"
    )
    allowed_files_dir: str | None = Field(
        None, description="a folder whose files a PATCH may name; relative to the config file"
    )


class PluginSection(BaseModel):
    """``[plugins.<name>]``: ``enabled`` plus whatever keys the plugin reads."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="allow",
        validate_default=True,
    )

    state_dir: Path = Path(".gateway")
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    plugins: dict[str, PluginSection] = Field(default_factory=dict)
    load_plugins: Annotated[list[str] | None, NoDecode] = Field(
        None, description="third-party plugins to load (all when unset); GATEWAY_LOAD_PLUGINS"
    )

    # Where this configuration came from; not part of the file format.
    config_file: Path | None = Field(None, exclude=True)
    cli_overrides: dict[str, Any] = Field(default_factory=dict, exclude=True)
    # The layer below the overrides file when there is no config file (embedding, tests).
    base_data: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @field_validator("load_plugins", mode="before")
    @classmethod
    def _split_plugins(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        if self.auth.mode == "password-session" and not (self.auth.users or self.auth.password):
            raise ValueError(
                "auth.mode = 'password-session' needs at least one account: "
                "[auth.users.<name>] with password or password_hash (or the legacy "
                "auth.password, the account 'operator')"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_CliSource(settings_cls), env_settings, init_settings)

    def plugin_enabled(self, name: str) -> bool:
        section = self.plugins.get(name)
        return section.enabled if section else True

    def plugin_section(self, name: str) -> dict[str, Any]:
        section = self.plugins.get(name)
        return section.model_dump(exclude={"enabled"}) if section else {}

    @property
    def overrides_path(self) -> Path:
        return self.state_dir / OVERRIDES_FILENAME

    def extra_section(self, name: str) -> Any:
        return (self.model_extra or {}).get(name)

    @property
    def config_dir(self) -> Path | None:
        """The config file's folder: relative paths in it (secret files) resolve here."""
        return _dir_of(self.config_file)

    @contextlib.contextmanager
    def resolving_paths(self) -> Iterator[None]:
        """While open, secrets validated from a plugin's section (``{ file = "key.txt" }``)
        resolve relative paths against the config file's folder, as the host's own do."""
        token = CURRENT_CONFIG_DIR.set(self.config_dir)
        try:
            yield
        finally:
            CURRENT_CONFIG_DIR.reset(token)


class ConfigError(Exception):
    """A configuration that cannot be loaded; the message is meant for a person."""


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path.resolve()
    env = os.environ.get("GATEWAY_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"GATEWAY_CONFIG names a missing file: {path}")
        return path.resolve()
    local = Path(CONFIG_FILENAME)
    return local.resolve() if local.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: ``null`` removes a key, objects merge, the rest replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = value
    return out


def build_settings(
    data: dict[str, Any],
    config_dir: Path | None = None,
    config_file: Path | None = None,
    cli: dict[str, Any] | None = None,
) -> Settings:
    """Validate a config dict; the environment applies on top, and ``cli`` (command-line
    flags) on top of that. Raises ConfigError."""
    from pydantic import ValidationError

    from host.errors import validation_message

    token = CURRENT_CONFIG_DIR.set(config_dir)
    cli_token = CURRENT_CLI.set(cli)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        message, _ = validation_message(exc)
        raise ConfigError(f"invalid configuration: {message}") from exc
    finally:
        CURRENT_CONFIG_DIR.reset(token)
        CURRENT_CLI.reset(cli_token)
    settings.config_file = config_file
    settings.base_data = data
    if not settings.state_dir.is_absolute() and config_dir is not None and config_file is not None:
        settings.state_dir = (config_dir / settings.state_dir).resolve()
    return settings


def load_file_layers(
    config_file: Path | None, cli_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config file's own dict and the overrides file's dict (either may be empty).
    The overrides file lives in the state directory, which the CLI (``--state-dir``) or
    the environment may move away from the file's."""
    file_data = read_toml(config_file) if config_file else {}
    probe_data = deep_merge(file_data, cli_overrides) if cli_overrides else file_data
    probe = build_settings(probe_data, _dir_of(config_file), config_file, cli_overrides)
    overrides_path = probe.overrides_path
    overrides = read_toml(overrides_path) if overrides_path.is_file() else {}
    check_override_references(overrides, file_data, probe, overrides_path)
    return file_data, overrides


def check_override_references(
    overrides: dict[str, Any], base: dict[str, Any], allowed: Settings, path: Path
) -> None:
    """ConfigError naming each secret reference of the overrides file that the config
    file does not allow (:mod:`host.secret_refs`); checked before any is resolved."""
    from host.secret_refs import ReferenceRefused, refused_references

    refused = refused_references(overrides, base, allowed)
    if refused:
        raise ReferenceRefused(refused, path)


def load_settings(config: str | os.PathLike[str] | None = None, **cli_overrides: Any) -> Settings:
    """Load settings the way ``gateway serve`` does. ``cli_overrides`` (command-line flags,
    ``server={"bind": ...}``) beat the environment, which beats the files."""
    config_file = find_config_file(config)
    file_data, overrides = load_file_layers(config_file, cli_overrides)
    data = deep_merge(deep_merge(file_data, overrides), cli_overrides)
    settings = build_settings(data, _dir_of(config_file), config_file, cli_overrides)
    settings.cli_overrides = cli_overrides
    settings.base_data = file_data
    return settings


def startup_problems(settings: Settings) -> list[str]:
    """Rules that only make sense for a running server (checked at start and on reload)."""
    problems = []
    if settings.auth.mode == "localhost-dev" and not is_loopback_bind(settings.server.bind):
        problems.append(
            f"auth.mode = 'localhost-dev' is refused on {settings.server.bind}: it needs a "
            "loopback bind (127.0.0.1, ::1 or localhost)"
        )
    if bool(settings.server.certfile) != bool(settings.server.keyfile):
        problems.append("server.certfile and server.keyfile must be given together")
    return problems


def literal_secret_warnings(settings: Settings) -> list[str]:
    out = []
    for name, cfg in settings.auth.tokens.items():
        if cfg.token.is_literal:
            out.append(f'auth.tokens.{name}.token is a literal; prefer {{ env = "NAME" }}')
    if settings.auth.password is not None and settings.auth.password.is_literal:
        out.append('auth.password is a literal; prefer { env = "NAME" }')
    for name, user in settings.auth.users.items():
        if user.password is not None and user.password.is_literal:
            out.append(
                f"auth.users.{name}.password is a literal; prefer password_hash "
                '(gateway auth hash-password) or { env = "NAME" }'
            )
    return out


def _dir_of(path: Path | None) -> Path | None:
    return path.resolve().parent if path else None


def is_loopback_bind(bind: str) -> bool:
    import ipaddress

    host = bind.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


DEFAULT_CONFIG_TEXT = """\
# agent-gateway configuration. Every key is optional; these are the defaults.
# Environment variables override this file: GATEWAY_SERVER__BIND=0.0.0.0:8787
# Secrets are references: { env = "NAME" } or { file = "path" }; literals work but warn.

state_dir = ".gateway"          # SQLite store, generated admin token, runtime overrides

[server]
bind = "127.0.0.1:8787"         # HTTP/1.1 and HTTP/2 (h2c) on one port
workers = 1
access_log = true
graceful_timeout_seconds = 10
max_body_bytes = 1048576        # larger bodies get 413
body_read_timeout_seconds = 10  # a body still arriving after this gets 408
max_connections = 1000          # open connections per worker; more are closed at once
# allowed_hosts = ["gateway.example.com"]  # Host names served (default: the bind host and
#                                          # loopback names); "*" serves any
# cors_origins = ["https://app.example.com"]  # browser origins allowed cross-origin
# certfile = "cert.pem"         # with keyfile: TLS, HTTP/2 negotiated by ALPN
# keyfile = "key.pem"

[auth]
mode = "token"                  # token | password-session | localhost-dev
session_ttl_seconds = 43200     # password-session tokens
rate_limit_state = "auto"       # rate limits: in the store when shared (PostgreSQL or
                                # workers > 1; exact across processes), else in the process
# password = { env = "GATEWAY_PASSWORD" }   # legacy: the account "operator"

# password-session mode: named operator accounts; a session's principal is its account.
# [auth.users.alice]
# password_hash = "scrypt$n=32768,r=8,p=1$..."   # from: gateway auth hash-password
# # or: password = { env = "GATEWAY_ALICE_PASSWORD" }
# gates = ["*"]                     # default: none
# rate_limit = { per_minute = 600 }

# Failed password logins back off per (account, client address) and per account:
# after the free failures, waits of base, 2*base, 4*base, ... seconds, up to max.
[auth.login_backoff]
free_failures = 5               # per (account, client address)
account_free_failures = 20      # per account, from any address
base_seconds = 1
max_seconds = 900
forget_after_seconds = 3600     # failures are forgotten after this long without one

# With no tokens configured, a generated admin token (all gates) is kept in
# <state_dir>/admin-token and printed on first start.
# [auth.tokens.ci]
# token = { env = "GATEWAY_CI_TOKEN" }
# gates = ["allow_session_write"]   # "*" grants every gate
# rate_limit = { per_minute = 600 }

# The store: SQLite in state_dir by default. Several replicas share one PostgreSQL:
# [storage]
# url = { env = "GATEWAY_DATABASE_URL" }   # postgresql+asyncpg://user:password@host/db

[events]
heartbeat_seconds = 15

[retention]                     # old data removed hourly; 0 keeps a kind forever
runs_max_age_days = 30          # finished runs; unfinished runs are always kept
events_max_age_days = 30        # the gateway's log events (/gateway/events)
responses_max_age_days = 30     # stored /v1/responses

# Secret references a PATCH /gateway/config may name (none unless listed here):
# [secrets]
# allowed_env = ["OPENAI_API_KEY", "TEAM_*"]
# allowed_files_dir = "secrets"

# Turn a built-in or installed plugin off (it is then never imported):
# [plugins.control]
# enabled = false
"""
