"""``[mcp.servers.<name>]``: the MCP servers the gateway is a client of. Each is either
``command = [...]`` (stdio, started and supervised by the gateway) or ``url = "..."``
(streamable HTTP, with ``headers`` whose values may be secret references). ``parse``
gives both the values and the problems (each naming its key) for
``gateway_validate_config``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from host.api import GatewayContext, Secret, SecretError, Settings

SECTION = "mcp"
PREFIX = "mcp.servers"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Floor and ceiling of every number (docs/reference/configuration.md).
BOUNDS: dict[str, tuple[float, float]] = {
    "timeout_seconds": (0.1, 600),
    "ping_seconds": (0.5, 3600),
    "max_backoff_seconds": (0.1, 600),
}
DEFAULTS = {"timeout_seconds": 30.0, "ping_seconds": 15.0, "max_backoff_seconds": 30.0}
KEYS = {"enabled", "command", "url", "headers", "env", "cwd", "approval", *BOUNDS}
APPROVALS = ("never", "always")  # "always": every call of its tools waits for approval
# Tool names of the MCP server (/mcp) start with it: no client-side server may use it.
RESERVED = {"pipeline": "the name is reserved (the tools pipeline.<id> of /mcp)"}


@dataclass(frozen=True)
class ServerConfig:
    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    headers: dict[str, Secret] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_seconds: float = DEFAULTS["timeout_seconds"]
    ping_seconds: float = DEFAULTS["ping_seconds"]
    max_backoff_seconds: float = DEFAULTS["max_backoff_seconds"]
    approval: str = "never"

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "streamable_http"


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _server(name: str, table: Any, base_dir: Any, found: list[str]) -> ServerConfig | None:
    at = f"{PREFIX}.{name}"
    if not NAME.match(name):
        found.append(f"{at}: a server name is 1-64 of a-z, 0-9, _ and - (it prefixes its tools)")
        return None
    if not isinstance(table, dict):
        found.append(f"{at}: must be a table")
        return None
    found += [f"{at}.{key}: unknown setting" for key in sorted(set(table) - KEYS)]
    before = len(found)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        found.append(f"{at}.enabled: must be true or false")
    command = table.get("command")
    url = table.get("url")
    if (command is None) == (url is None):
        found.append(f"{at}: set exactly one of command (stdio) and url (streamable HTTP)")
    if command is not None and (
        not isinstance(command, list)
        or not command
        or not all(isinstance(c, str) and c for c in command)
    ):
        found.append(f"{at}.command: must be a non-empty list of non-empty strings")
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(f"{at}.url: must be an http or https URL")
    headers: dict[str, Secret] = {}
    raw_headers = table.get("headers", {})
    if not isinstance(raw_headers, dict):
        found.append(f"{at}.headers: must be a table of header = value or secret reference")
    else:
        for key, raw in raw_headers.items():
            try:
                headers[str(key)] = Secret.resolve(raw, base_dir)
            except SecretError as exc:
                found.append(f"{at}.headers.{key}: {exc}")
    if (command is None and ("env" in table or "cwd" in table)) or (
        url is None and "headers" in table
    ):
        found.append(f"{at}: env and cwd go with command, headers with url")
    env = table.get("env", {})
    if not _strings(env):
        found.append(f"{at}.env: must be a table of strings")
    cwd = table.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        found.append(f"{at}.cwd: must be a string")
    numbers: dict[str, float] = {}
    for key, (low, high) in BOUNDS.items():
        value = table.get(key, DEFAULTS[key])
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            found.append(f"{at}.{key}: must be a number from {low:g} to {high:g}")
            value = DEFAULTS[key]
        numbers[key] = float(value)
    approval = table.get("approval", "never")
    if approval not in APPROVALS:
        found.append(f"{at}.approval: must be one of {', '.join(APPROVALS)}")
    if len(found) > before or enabled is False:
        return None
    return ServerConfig(
        name,
        tuple(command or ()),
        url,
        headers,
        dict(env),
        cwd,
        numbers["timeout_seconds"],
        numbers["ping_seconds"],
        numbers["max_backoff_seconds"],
        approval,
    )


def parse(settings: Settings) -> tuple[dict[str, ServerConfig], list[str]]:
    """The enabled servers by name, and every problem of the section."""
    section = settings.extra_section(SECTION)
    found: list[str] = []
    if section is None:
        return {}, found
    if not isinstance(section, dict):
        return {}, [f"{SECTION}: must be a table"]
    found += [
        f"{SECTION}.{key}: unknown setting" for key in sorted(set(section) - {"servers", "server"})
    ]
    servers = section.get("servers", {})
    if not isinstance(servers, dict):
        return {}, [*found, f"{PREFIX}: must be a table of servers"]
    out: dict[str, ServerConfig] = {}
    for name, table in servers.items():
        if name in RESERVED:
            found.append(f"{PREFIX}.{name}: {RESERVED[name]}")
            continue
        server = _server(str(name), table, settings.config_dir, found)
        if server is not None:
            out[server.name] = server
    return out, found


def problems(settings: Settings) -> list[str]:
    return parse(settings)[1]


def servers_of(gateway: GatewayContext) -> dict[str, ServerConfig]:
    return parse(gateway.settings)[0]
