"""The plugin's error answers, one place for their codes and wording."""

from __future__ import annotations

from host.api import GatewayError


def session_not_found(key: str) -> GatewayError:
    return GatewayError(404, "session_not_found", f"no session {key!r}")


def message_not_found(message_id: str) -> GatewayError:
    return GatewayError(404, "message_not_found", f"no message {message_id!r} in this session")


def entry_not_found(entry_id: str) -> GatewayError:
    return GatewayError(404, "memory_entry_not_found", f"no memory entry {entry_id!r}")


def too_large(field: str, size: int, limit: int, setting: str) -> GatewayError:
    return GatewayError(
        413,
        "content_too_large",
        f"{field} holds {size} characters, more than the {limit} allowed "
        f"(plugins.sessions.{setting})",
        param=field,
    )


def invalid_key(value: str, field: str = "session_key") -> GatewayError:
    from plugins.sessions.models import KEY_RULE

    return GatewayError(
        400,
        "invalid_session_key",
        f"{field} {value[:200]!r} is not valid: {KEY_RULE}",
        param=field,
    )
