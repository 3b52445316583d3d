"""The rolling safety scan of one session's agent updates (stage ``agent_update``).

Scanning each update on its own would let a secret split over two message chunks
through, so the text chunks of one kind (``agent_message_chunk``,
``agent_thought_chunk``, ...) are scanned as one growing text, as the OpenAI-compatible
streams are (``plugins/openai_compat/safety_stream.py``): every new piece is scanned
with what is still held back and, as left context, the last ``reach`` characters sent;
of what passed, everything goes out but the tail the scanners ask to hold
(``host.api.stream_holdback``: the safety plugin's rule scanner holds only a tail that
could still grow into a match of a redacting or blocking rule, so plain text goes out
with the update that brought it). What is held goes out with the next piece, or when
the text ends: an update of another kind, or the end of the turn, after one last scan
of what is held with the context before it. A block found on the way raises
:class:`Blocked`, and nothing of the held text is ever sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from host.api import Action, GatewayContext, publish_findings, scan_text, stream_holdback

DEFAULT_REACH = 64


class Blocked(Exception):
    """The scan blocked the text (its findings say why)."""


def active(gateway: GatewayContext) -> bool:
    return bool(len(gateway.registry("safety_scanners")))


def reach(gateway: GatewayContext) -> int:
    scanners = gateway.registry("safety_scanners")
    reaches = [getattr(scanners[name], "reach", 0) for name in scanners]
    return max([DEFAULT_REACH, *(r for r in reaches if isinstance(r, int))])


def _common_suffix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        n += 1
    return n


def _strongest(findings: list[dict[str, Any]]) -> Action:
    actions = {f["action"] for f in findings}
    for action in ("block", "redact"):
        if action in actions:
            return action
    return "warn"


@dataclass
class _Text:
    kind: str
    template: dict[str, Any]  # the last update of this text: what a released tail rides on
    tail: str = ""  # the last ``reach`` characters sent
    pending: str = ""  # scanned (and redacted), not sent yet
    reported: set[tuple[str, str, str]] = field(default_factory=set)


class UpdateScan:
    """The updates of one session, scanned as they arrive."""

    def __init__(self, gateway: GatewayContext, info: dict[str, Any]) -> None:
        self.gateway = gateway
        self.info = info
        self.reach = reach(gateway)
        self.current: _Text | None = None

    async def feed(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        """The updates to relay for ``update`` (none, while all its text is held back)."""
        kind = str(update.get("sessionUpdate", ""))
        content = update.get("content")
        is_text = isinstance(content, dict) and content.get("type") == "text"
        released = []
        if self.current is not None and (not is_text or self.current.kind != kind):
            released = await self.finish()
        if not is_text:
            return [*released, update]
        assert isinstance(content, dict)
        text = self.current
        if text is None:
            text = self.current = _Text(kind, update)
        text.template = update
        text.pending += str(content.get("text", ""))
        info = {**self.info, "partial": True, "before": text.tail}
        hold = await stream_holdback(self.gateway, text.pending, "output", info, self.reach)
        hold_from = len(text.tail) + len(text.pending) - hold
        out = await self._scan(text, {**self.info, "partial": True, "hold_from": hold_from})
        hold = min(hold, _common_suffix(out, text.pending))
        cut = len(out) - hold
        text.pending = out[cut:]
        return [*released, *self._send(text, out[:cut])]

    async def finish(self) -> list[dict[str, Any]]:
        """The end of the current text: its held tail, scanned once more, released."""
        text, self.current = self.current, None
        if text is None or not text.pending:
            return []
        out = await self._scan(text, self.info)
        text.pending = ""
        return self._send(text, out)

    def _send(self, text: _Text, piece: str) -> list[dict[str, Any]]:
        if not piece:
            return []
        text.tail = (text.tail + piece)[-self.reach :]
        return [{**text.template, "content": {**text.template["content"], "text": piece}}]

    async def _scan(self, text: _Text, info: dict[str, Any]) -> str:
        """``text``'s pending part after the scan of it with its left context."""
        result = await scan_text(
            self.gateway, text.tail + text.pending, "output", info, publish=False
        )
        findings = list(result.findings)
        blocked = result.blocked or not result.text.startswith(text.tail)
        if blocked and not result.blocked:
            findings.append(
                {
                    "scanner": "acp_gateway",
                    "action": "block",
                    "reason": "a redaction reaches text already sent to the editor",
                }
            )
        new = [f for f in findings if (f["scanner"], f["action"], f["reason"]) not in text.reported]
        text.reported.update((f["scanner"], f["action"], f["reason"]) for f in new)
        if new:
            await publish_findings(self.gateway, _strongest(new), new, "output", self.info)
        if blocked:
            self.current = None
            raise Blocked(findings)
        return result.text[len(text.tail) :]
