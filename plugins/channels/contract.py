"""What a channel plugin implements (``gateway_register_channels``, declared in
``hookspecs.py``) and what other plugins call (the :class:`ChannelsAPI` service).

A channel connects the gateway to the outside: a chat platform, a webhook, the web UI's
chat. Its lifecycle state (running, logged in, last probe) is stored by the channels
plugin; the channel itself says which actions it supports and what each does."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from host.api import GatewayContext, Principal

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


@dataclass(frozen=True)
class LifecycleOutcome:
    """What a lifecycle action did: the stored state after it and the channel's report."""

    channel: str
    action: str
    changed: bool
    state: ChannelState
    result: dict[str, Any]


class ChannelsAPI:
    """The channels plugin's service: deliver a session's message through a channel
    (the sessions plugin calls it; 404 ``channel_not_found``, 409 ``channel_stopped``),
    and drive a channel's lifecycle for a principal as
    ``POST /gateway/channels/{channel}/lifecycle`` does (the dashboard's forms)."""

    def __init__(self, deliver: Any, act: Any = None, names: Any = None) -> None:
        self._deliver = deliver
        self._act = act
        self._names = names

    async def send(self, channel: str, session_key: str, message: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._deliver(channel, session_key, message)
        return result

    async def act(self, principal: Principal, channel: str, action: str) -> LifecycleOutcome:
        """403 without ``allow_channels_control``; 404 ``channel_not_found``; 409
        ``action_not_supported`` and the channel's own refusals. Stored and published
        (audited) as the route does."""
        outcome: LifecycleOutcome = await self._act(principal, channel, action)
        return outcome

    def names(self) -> list[str]:
        """The registered channels."""
        return sorted(self._names()) if self._names is not None else []


__all__ = ["ACTIONS", "Channel", "ChannelState", "ChannelsAPI", "LifecycleOutcome"]
