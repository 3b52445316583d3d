"""What a channel plugin implements (``gateway_register_channels``, declared in
``hookspecs.py``) and what other plugins call (the :class:`ChannelsAPI` service).

A channel connects the gateway to the outside: a chat platform, a webhook, the web UI's
chat. Its lifecycle state (running, logged in, last probe) is stored by the channels
plugin; the channel itself says which actions it supports and what each does."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from host.api import GatewayContext

ACTIONS = ("status", "probe", "login", "logout", "start", "stop")


@dataclass(frozen=True)
class ChannelState:
    """A channel's stored lifecycle state."""

    running: bool = True
    logged_in: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    updated_ms: int | None = None
    updated_by: str | None = None

    def but(self, **changes: Any) -> ChannelState:
        return replace(self, **changes)


class Channel(Protocol):
    actions: frozenset[str]
    """The actions of :data:`ACTIONS` it supports (others answer 409)."""

    async def act(
        self, gateway: GatewayContext, action: str, state: ChannelState
    ) -> tuple[ChannelState, dict[str, Any]]:
        """Carry out ``action`` from ``state``: the new state (stored by the caller) and
        what to report (``{"ok": ..., ...}``). Raise ``GatewayError`` (409) to refuse."""
        ...

    async def send(
        self, gateway: GatewayContext, session_key: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        """Deliver a session message to the outside; what happened (``{"delivered": ...}``)."""
        ...


class ChannelsAPI:
    """The channels plugin's service: deliver a session's message through a channel
    (the sessions plugin calls it). 404 ``channel_not_found``, 409 ``channel_stopped``."""

    def __init__(self, deliver: Any) -> None:
        self._deliver = deliver

    async def send(self, channel: str, session_key: str, message: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._deliver(channel, session_key, message)
        return result


__all__ = ["ACTIONS", "Channel", "ChannelState", "ChannelsAPI"]
