"""The ``webchat`` channel: the web UI's chat. Messages to it are published on the
``channel:webchat`` event stream, which the web UI follows."""

from __future__ import annotations

from typing import Any

from host.api import GatewayContext
from plugins.channels import store
from plugins.channels.contract import ChannelState

STREAM = "channel:webchat"


class WebchatChannel:
    actions = frozenset({"status", "probe", "start", "stop"})

    async def act(
        self, gateway: GatewayContext, action: str, state: ChannelState
    ) -> tuple[ChannelState, dict[str, Any]]:
        if action == "status":
            return state, {"stream": STREAM}
        if action == "probe":
            last = await gateway.store.last_seq(STREAM)
            result = {"ok": True, "stream": STREAM, "last_seq": last}
            return state.but(detail={**state.detail, "last_probe": result}), result
        return state.but(running=action == "start"), {"ok": True}

    async def send(
        self, gateway: GatewayContext, session_key: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        event = await gateway.hub.publish(
            STREAM, "channel.message", {"session_key": session_key, "message": message}
        )
        await store.record_message(
            gateway.store,
            channel="webchat",
            direction="out",
            session_key=session_key,
            delivery=None,
            status="delivered",
            body=message,
        )
        return {"delivered": True, "seq": event.seq}
