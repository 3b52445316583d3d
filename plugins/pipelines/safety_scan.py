"""Safety scans of what pipelines carry in: tool results (stage ``tool_output``), webhook
and trigger payloads (``inbound``). Every string of a JSON-like value is scanned (keys
are names, not content) and replaced by what the scanners left of it; a block raises
:class:`ContentBlocked`. ``llm`` steps are scanned by the model catalog, as the chat
route is (``kinds.py``)."""

from __future__ import annotations

from typing import Any

from host.api import GatewayContext, GatewayError, scan_text


class ContentBlocked(Exception):
    """A scanner blocked the value; the message gives the reasons."""

    def __init__(self, findings: list[dict[str, Any]]) -> None:
        reasons = "; ".join(f"{f['scanner']}: {f['reason']}" for f in findings if f["reason"])
        super().__init__(f"was blocked by the gateway's safety policy ({reasons or 'no reason'})")


async def scan_value(
    gateway: GatewayContext, value: Any, direction: str, context: dict[str, Any]
) -> Any:
    """``value`` with every string scanned; cheap when no scanner is registered."""
    if not len(gateway.registry("safety_scanners")):
        return value
    return await _walk(gateway, value, direction, context)


async def _walk(gateway: GatewayContext, value: Any, direction: str, info: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if not value:
            return value
        result = await scan_text(gateway, value, direction, info)
        if result.blocked:
            raise ContentBlocked(result.findings)
        return result.text
    if isinstance(value, dict):
        return {k: await _walk(gateway, v, direction, info) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [await _walk(gateway, v, direction, info) for v in value]
    return value


async def scan_payload(gateway: GatewayContext, value: Any, info: dict[str, Any]) -> Any:
    """A trigger's or webhook's payload (stage ``inbound``); 400 ``content_blocked``."""
    try:
        return await scan_value(gateway, value, "input", {"stage": "inbound", **info})
    except ContentBlocked as exc:
        raise GatewayError(400, "content_blocked", f"the payload {exc}") from None
