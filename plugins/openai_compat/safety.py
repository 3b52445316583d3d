"""Safety scanning on the OpenAI surfaces: input before the provider is called, output
(text, refusals, reasoning, tool-call names and arguments; streamed too, see
``safety_stream.py``) before it reaches the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from host.api import (
    Action,
    GatewayContext,
    GatewayError,
    ScanResult,
    context,
    current_principal,
    publish_findings,
    scan_text,
    stream_holdback,
)
from plugins.openai_compat import safety_stream
from plugins.openai_compat.providers.base import ProviderError


def _active(ctx: GatewayContext | None = None) -> bool:
    return bool(len((ctx or context()).registry("safety_scanners")))


def _info(surface: str, model: str, stage: str, principal: str | None = None) -> dict[str, Any]:
    name = principal if principal is not None else current_principal().name
    return {"stage": stage, "surface": surface, "model": model, "principal": name}


def reach(ctx: GatewayContext) -> int:
    """The left context of a stream's rescans (the text already sent they see):
    ``stream_safety_holdback``, raised to the largest ``reach`` a scanner declares (the
    longest text it must see whole, host/safety.py)."""
    scanners = ctx.registry("safety_scanners")
    reaches = [getattr(scanners[name], "reach", 0) for name in scanners]
    return max([safety_stream.SETTING.current(), *(r for r in reaches if isinstance(r, int))])


def _blocked_message(findings: list[dict[str, Any]], note: str = "") -> str:
    reasons = "; ".join(f"{f['scanner']}: {f['reason']}" for f in findings if f["reason"])
    return f"blocked by the gateway's safety policy ({reasons or 'no reason given'}){note}"


async def scan_messages(
    messages: list[dict[str, Any]],
    surface: str,
    model: str,
    principal: str | None = None,
    gateway: GatewayContext | None = None,
) -> None:
    """Scan (and redact in place) every text of the messages: content (a string or its
    text parts), a replayed assistant's refusal and tool-call arguments; 400
    ``content_blocked`` on a block. ``principal`` and ``gateway``: outside a request."""
    if not _active(gateway):
        return
    ctx, info = gateway or context(), _info(surface, model, "inbound", principal)

    async def scan(holder: dict[str, Any], key: str) -> None:
        text = holder.get(key)
        if not isinstance(text, str) or not text:
            return
        result = await scan_text(ctx, text, "input", info)
        if result.blocked:
            raise GatewayError(400, "content_blocked", _blocked_message(result.findings))
        holder[key] = result.text

    for message in messages:
        content = message.get("content")
        holders = [message] + (
            [part for part in content if isinstance(part, dict)]
            if isinstance(content, list)
            else []
        )
        for holder in holders:
            await scan(holder, "content" if holder is message else "text")
        await scan(message, "refusal")
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                await scan(function, "arguments")


async def scan_prompt(prompt: str | list[str], surface: str, model: str) -> str | list[str]:
    if not _active():
        return prompt
    ctx, info = context(), _info(surface, model, "inbound")
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    out = []
    for text in texts:
        result = await scan_text(ctx, text, "input", info)
        if result.blocked:
            raise GatewayError(400, "content_blocked", _blocked_message(result.findings))
        out.append(result.text)
    return out[0] if isinstance(prompt, str) else out


class OutputScanner:
    """Scans model output for one request; a block raises ProviderError so every surface
    turns it into its own mid-stream error event (or a 400 when not streaming)."""

    def __init__(
        self,
        surface: str,
        model: str,
        principal: str | None = None,
        gateway: GatewayContext | None = None,
    ) -> None:
        self.ctx = gateway or context()
        self.active = _active(self.ctx)
        self.info = _info(surface, model, "model_output", principal) if self.active else {}
        # What only a stream needs is read by ``stream`` (still in the request: a
        # stream's scans run after its context is gone).
        self.reach = 0
        self.default_holdback = 0

    async def text(self, text: str) -> str:
        if not self.active or not text:
            return text
        result = await scan_text(self.ctx, text, "output", self.info)
        if result.blocked:
            raise self.blocked(result.findings)
        return result.text

    async def scan(
        self, text: str, partial: bool = False, hold_from: int | None = None
    ) -> ScanResult:
        """Scan without publishing: for rescans, whose caller reports each finding once.
        ``partial``: more of the text may follow (``context["partial"]``), so a scanner
        may wait for a match that reaches its end to complete; ``hold_from``: the text
        from there is held back and scanned again (``context["hold_from"]``)."""
        info = {**self.info, "partial": True} if partial else self.info
        if partial and hold_from is not None:
            info["hold_from"] = hold_from
        return await scan_text(self.ctx, text, "output", info, publish=False)

    async def holdback(self, text: str, before: str) -> int:
        """How many trailing characters of ``text`` (a segment's scanned text not sent
        yet; ``before``: what was sent just before it) must stay held back: what the
        scanners need (``host.api.stream_holdback``; ``stream_safety_holdback`` for a
        scanner that declares neither a ``holdback`` nor a ``reach``)."""
        info = {**self.info, "partial": True, "before": before}
        return await stream_holdback(self.ctx, text, "output", info, self.default_holdback)

    async def report(self, action: Action, findings: list[dict[str, Any]]) -> None:
        await publish_findings(self.ctx, action, findings, "output", self.info)

    def blocked(self, findings: list[dict[str, Any]], note: str = "") -> ProviderError:
        return ProviderError(400, "content_blocked", _blocked_message(findings, note))

    def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Chat or completion chunks with their text fields and tool calls scanned as
        they grow (``safety_stream.py``); ``chunks`` unchanged when nothing scans."""
        if not self.active:
            return chunks
        self.reach = reach(self.ctx)
        self.default_holdback = safety_stream.SETTING.current()
        return safety_stream.StreamScan(self, self.reach).run(chunks)

    async def completion(self, result: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion or text completion (its message's text fields,
        refusal included, and its tool calls' names and arguments), scanned in place."""
        if not self.active:
            return result
        for choice in result.get("choices") or []:
            message = choice.get("message")
            if isinstance(message, dict):
                await self._fields(message, safety_stream.TEXT_FIELDS)
                for call in message.get("tool_calls") or []:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        await self._fields(fn, ("name", "arguments"))
            if isinstance(choice.get("text"), str):
                choice["text"] = await self.text(choice["text"])
        return result

    async def _fields(self, obj: dict[str, Any], fields: tuple[str, ...]) -> None:
        for field in fields:
            if isinstance(obj.get(field), str):
                obj[field] = await self.text(obj[field])
