"""Which requests a browser may make: the ``Host`` the gateway serves, the ``Origin`` it
trusts, and the CORS answer for trusted origins.

Why: bearer tokens keep other sites' pages out, except where no token is needed
(``localhost-dev``) or a page's request reaches the gateway under a name the attacker
controls (DNS rebinding: ``evil.example`` re-resolved to ``127.0.0.1``, so the page is
"same-origin" with the gateway as far as the browser knows). A ``Host`` check stops the
second, an ``Origin`` check the first; both run before authentication, on HTTP and on
WebSocket upgrades.

- ``Host``: its name (the port is not compared: proxies and port forwards change it) must
  be a loopback name (``localhost``, ``127.0.0.0/8``, ``::1``) in ``localhost-dev``;
  in the other modes one of ``server.allowed_hosts`` (``"*"``: any), by default the bind
  address's host and the loopback names, and for a wildcard bind (``0.0.0.0``, ``::``)
  also this machine's host name and any IP address literal (a rebinding page's ``Host``
  is always its attacker's DNS name, never an address).
- ``Origin``: absent (not a browser, or a same-origin navigation) passes; equal to the
  request's own ``Host`` (same-origin) passes; one of ``server.cors_origins`` passes and
  gets CORS headers; anything else (``null`` included) is 403 ``origin_not_allowed``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from quart import Response

from host.errors import GatewayError
from host.settings import ServerSettings

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_CACHE_MAX = 1024
PREFLIGHT_MAX_AGE = "600"
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~, ")


def split_host(value: str) -> tuple[str, str | None]:
    """``Host`` header -> (name, port): lowercased, without brackets or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, None  # a name, or an unbracketed IPv6 address
    return name.rstrip("."), port or None


def is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lowercased, without a default port; None if ``origin`` is
    not such an origin (a path, a query, ``null``, an unknown scheme)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and str(port) != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def _same_origin(origin: str, host_header: str) -> bool:
    """Whether ``origin`` names the authority the request was sent to."""
    try:
        parts = urlsplit(origin)
        origin_port = str(parts.port or _DEFAULT_PORTS.get(parts.scheme, ""))
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    name, port = split_host(host_header)
    if parts.hostname.lower().rstrip(".") != name:
        return False
    return (port or _DEFAULT_PORTS[parts.scheme]) == origin_port


class OriginPolicy:
    """The Host and Origin rules of one app, built from ``[server]`` (restart-only keys)."""

    def __init__(self, server: ServerSettings) -> None:
        bind_host, _ = split_host(server.bind.rpartition(":")[0])
        wildcard = bind_host in ("0.0.0.0", "::", "")  # noqa: S104 - describing the bind
        configured = server.allowed_hosts
        self.any_host = configured is not None and "*" in configured
        if configured is None:
            hosts = {"localhost", bind_host}
            if wildcard:
                hosts.add(socket.gethostname().lower())
            self.hosts = frozenset(h for h in hosts if h and h not in ("0.0.0.0", "::"))  # noqa: S104
            self.ip_literals = wildcard
        else:
            self.hosts = frozenset(split_host(h)[0] for h in configured if h != "*")
            self.ip_literals = False
        self.cors_origins = frozenset(server.cors_origins)
        self._host_ok: dict[tuple[bytes, bool], bool] = {}
        self._origin_ok: dict[tuple[str, str], str | None] = {}

    # -- Host -----------------------------------------------------------------------------

    def _host_ok_cached(self, raw: bytes, localhost_dev: bool) -> bool:
        key = (raw, localhost_dev)
        found = self._host_ok.get(key)
        if found is None:
            found = self._decide_host(raw.decode("latin-1"), localhost_dev)
            if len(self._host_ok) >= _CACHE_MAX:
                self._host_ok.clear()
            self._host_ok[key] = found
        return found

    def _decide_host(self, host_header: str, localhost_dev: bool) -> bool:
        name, _port = split_host(host_header)
        if not name:
            return False
        if localhost_dev:
            return is_loopback_name(name)
        if self.any_host or is_loopback_name(name) or name in self.hosts:
            return True
        return self.ip_literals and _is_ip_literal(name)

    # -- Origin ---------------------------------------------------------------------------

    def allowed_origin(self, origin: str, host_header: str) -> str | None:
        """ "same" for a same-origin request, the normalized origin for a configured CORS
        origin, None for a foreign one."""
        key = (origin, host_header)
        if key in self._origin_ok:
            return self._origin_ok[key]
        if _same_origin(origin, host_header):
            found: str | None = "same"
        else:
            normal = normalize_origin(origin)
            found = normal if normal is not None and normal in self.cors_origins else None
        if len(self._origin_ok) >= _CACHE_MAX:
            self._origin_ok.clear()
        self._origin_ok[key] = found
        return found

    def check(self, req: Any, localhost_dev: bool) -> str | None:
        """Refuse a foreign Host or Origin (403); return the CORS origin to answer to
        (the request's ``Origin`` when it is a configured cross-origin one), else None."""
        # The ASGI scope's header list (names lowercased by the server), not
        # ``req.headers``: a missing header costs werkzeug a KeyError, on every request.
        raw_host = b""
        raw_origin: bytes | None = None
        for name, value in req.scope["headers"]:
            if name == b"host":
                raw_host = value
            elif name == b"origin":
                raw_origin = value
        if not self._host_ok_cached(raw_host, localhost_dev):
            name = split_host(raw_host.decode("latin-1"))[0] or "(none)"
            where = (
                "a loopback name (localhost, 127.0.0.1, [::1]) in localhost-dev mode"
                if localhost_dev
                else "one of server.allowed_hosts"
            )
            raise GatewayError(
                403, "host_not_allowed", f"Host {name[:100]!r} is not served here: use {where}"
            )
        if raw_origin is None:
            return None
        origin = raw_origin.decode("latin-1")
        allowed = self.allowed_origin(origin, raw_host.decode("latin-1"))
        if allowed is None:
            raise GatewayError(
                403,
                "origin_not_allowed",
                f"cross-origin requests from {origin[:200]!r} are not allowed "
                "(server.cors_origins lists the origins that are)",
            )
        return None if allowed == "same" else origin

    # -- CORS -----------------------------------------------------------------------------

    def preflight(self, origin: str, req: Any) -> Response:
        """The answer to a CORS preflight from a configured origin (no auth: a preflight
        never carries credentials)."""
        response = Response("", status=204)
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = CORS_METHODS
        requested = req.headers.get("Access-Control-Request-Headers", "")
        if requested and set(requested.lower()) <= _TOKEN_CHARS:
            headers["Access-Control-Allow-Headers"] = requested
        headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        return response

    def decorate(self, response: Response, origin: str | None) -> None:
        """CORS headers on an actual response (errors included, so a page can read them)."""
        if not self.cors_origins:
            return
        response.vary.add("Origin")
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After, WWW-Authenticate"


def is_preflight(req: Any) -> bool:
    return req.method == "OPTIONS" and "Access-Control-Request-Method" in req.headers
