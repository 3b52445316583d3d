"""The rolling safety scan of streamed output.

Scanning each delta on its own would let a phrase split over two deltas through, so the
text of each *segment* of a stream (a choice's content or text, a tool call's
arguments) is scanned as it grows: every new piece is scanned together with what is
still held back and, as left context, the last ``stream_safety_holdback`` characters
already sent (``[plugins.openai_compat]``, default 64, raised to the largest ``reach`` a
scanner declares; the scans of text that may still grow say ``partial`` in their
context). Of what passed, all but the last ``holdback`` characters go out; the rest is
held back until more text pushes it out, the segment ends (its choice's
``finish_reason``, or the next segment of the choice starting), or the stream ends,
where one final scan of the segment's whole text runs first. A match up to
``holdback + 1`` characters long is therefore always seen before any of it is sent,
and redactions of such matches apply across deltas.

The text fields of a delta (``content``, ``refusal``, ``reasoning_content`` and
``reasoning``) are each such a segment, and so are a tool call's arguments. A tool
call's *name* is never held back (clients read it from the call's first chunk): each
piece is scanned with the whole name sent before it and goes out at once. A delta that
ends segments carries first what they still held (in the order they were fed), then its
own fields: its keys are in arrival order, which the Responses stream relies on to put
content parts in order.

A block raises ``ProviderError(400, "content_blocked")`` (the surfaces' mid-stream error
event); so does a redaction that would change text already sent (a match longer than
the hold-back). A block found only by a final scan, after part of the segment went out,
says so in its message. Each finding is published once per segment, not once per rescan.

When the upstream fails mid-stream, what is held back still goes out (after the final
scan of its segment: blocked text never does), then the upstream's error; if that final
scan blocks, the block is the error instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from host.api import Action, ScanResult
from plugins.openai_compat.plugin_settings import bounded
from plugins.openai_compat.providers.base import ProviderError
from plugins.openai_compat.streaming import close_stream

if TYPE_CHECKING:
    from plugins.openai_compat.safety import OutputScanner

SETTING = bounded("stream_safety_holdback", 64, 0, 65536, "a whole number of characters", int)
_ENVELOPE = ("id", "object", "created", "model", "system_fingerprint")
TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")  # scanned alike
_FINAL_ONLY = (
    "; found only by the final scan of the streamed text, after part of it was sent "
    f"(a match longer than {SETTING.key} + 1 characters)"
)
_REACHES_SENT = {
    "scanner": SETTING.key,
    "action": "block",
    "reason": "a redaction reaches text already sent to the client",
}


def _strongest(findings: list[dict[str, Any]]) -> Action:
    actions = {f["action"] for f in findings}
    action: Action
    for action in ("block", "redact"):
        if action in actions:
            return action
    return "warn"


class _Segment:
    """One growing text of a stream: what was sent, and what is held back."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.tail = ""  # the last ``holdback`` characters sent: the left context of scans
        self.pending = ""  # scanned (and redacted), not sent yet
        self.dirty = False  # fed since its last final scan
        self.reported: set[tuple[str, str, str]] = set()


class StreamScan:
    """The rolling scan of one streamed answer (chat completion or completion chunks)."""

    def __init__(self, scanner: OutputScanner, holdback: int) -> None:
        self.scanner = scanner
        self.holdback = holdback
        self.segments: dict[tuple[Any, ...], _Segment] = {}
        self.envelope: dict[str, Any] = {}

    async def run(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """``chunks`` scanned; what is still held back at the end comes in a last chunk."""
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except ProviderError:  # the upstream failed: release what is held first
                    last = await self.flush()
                    if last is not None:
                        yield last
                    raise
                yield await self.chunk(chunk)
            last = await self.flush()
            if last is not None:
                yield last
        finally:
            await close_stream(chunks)

    async def chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        self.envelope = {k: chunk[k] for k in _ENVELOPE if k in chunk}
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if isinstance(choice.get("text"), str):  # a completion chunk
                choice["text"] = await self._feed(("text", index), choice["text"])
            if isinstance(choice.get("delta"), dict):
                await self._delta(index, choice["delta"])
            if choice.get("finish_reason"):
                for key in self._open(index):
                    self._place(choice, key, await self._finish(key))
        return chunk

    async def flush(self) -> dict[str, Any] | None:
        """A last chunk with what every unfinished segment still holds (None: nothing)."""
        choices: dict[Any, dict[str, Any]] = {}
        for key in [k for k in self.segments if self.segments[k].dirty]:
            if key[0] == "text":
                choice = {"index": key[1], "text": "", "finish_reason": None, "logprobs": None}
            else:
                choice = {"index": key[1], "delta": {}, "finish_reason": None}
            self._place(choices.setdefault(key[1], choice), key, await self._finish(key))
        return {**self.envelope, "choices": list(choices.values())} if choices else None

    async def _delta(self, index: Any, delta: dict[str, Any]) -> None:
        calls = [c for c in delta.get("tool_calls") or [] if isinstance(c, dict)]
        texts = {f: delta[f] for f in delta if f in TEXT_FIELDS and isinstance(delta[f], str)}
        texts = {f: text for f, text in texts.items() if text}
        touched: set[tuple[Any, ...]] = {("tool", index, c.get("index", 0)) for c in calls}
        # The delta's fields leave in arrival order: what the segments it ends still held
        # first, then its own (a Responses stream turns each field into a part in order).
        for field in texts:
            touched.add((field, index))
            del delta[field]
        own_calls = delta.pop("tool_calls") if calls else None
        # A choice's output is sequential: a new segment ends the one before it.
        for key in [k for k in self._open(index) if touched and k not in touched]:
            self._place({"delta": delta}, key, await self._finish(key))
        for field, text in texts.items():
            delta[field] = ""
            self._place({"delta": delta}, (field, index), await self._feed((field, index), text))
        if own_calls is not None:  # after the ended segments' arguments, if any
            delta["tool_calls"] = [*delta.get("tool_calls", []), *own_calls]
        for call in calls:
            fn = call.get("function")
            if not isinstance(fn, dict):
                continue
            if isinstance(fn.get("name"), str) and fn["name"]:
                fn["name"] = await self._release(("name", index, call.get("index", 0)), fn["name"])
            if isinstance(fn.get("arguments"), str):
                key = ("tool", index, call.get("index", 0))
                fn["arguments"] = await self._feed(key, fn["arguments"])

    def _open(self, index: Any) -> list[tuple[Any, ...]]:
        return [k for k, seg in self.segments.items() if k[1] == index and seg.dirty]

    @staticmethod
    def _place(choice: dict[str, Any], key: tuple[Any, ...], text: str) -> None:
        """Add a segment's released ``text`` to ``choice`` (a choice or ``{"delta": ...}``)."""
        if not text:
            return
        if key[0] == "text":
            choice["text"] = (choice.get("text") or "") + text
            return
        if not isinstance(choice.get("delta"), dict):
            choice["delta"] = {}
        delta = choice["delta"]
        if key[0] in TEXT_FIELDS:
            delta[key[0]] = (delta.get(key[0]) or "") + text
            return
        calls = delta.get("tool_calls") or []
        delta["tool_calls"] = calls
        for call in calls:
            if isinstance(call, dict) and call.get("index", 0) == key[2]:
                fn = call.setdefault("function", {})
                fn["arguments"] = (fn.get("arguments") or "") + text
                return
        calls.insert(0, {"index": key[2], "function": {"arguments": text}})

    async def _feed(self, key: tuple[Any, ...], piece: str) -> str:
        seg = self.segments.setdefault(key, _Segment())
        if not piece:
            return ""
        self.segments[key] = self.segments.pop(key)  # the last fed goes last: arrival order
        seg.dirty = True
        seg.pending += piece
        out = await self._scan(seg, seg.tail)
        cut = max(0, len(out) - self.holdback)
        seg.pending = out[cut:]
        return self._send(seg, out[:cut])

    async def _finish(self, key: tuple[Any, ...]) -> str:
        """The final scan of a segment's whole text; releases all it holds."""
        seg = self.segments[key]
        seg.dirty = False
        out = await self._scan(seg, "".join(seg.sent), final=True)
        seg.pending = ""
        return self._send(seg, out)

    async def _release(self, key: tuple[Any, ...], piece: str) -> str:
        """``piece`` scanned after all of its segment sent so far, and sent whole."""
        seg = self.segments.setdefault(key, _Segment())
        seg.pending = piece
        out = await self._scan(seg, "".join(seg.sent), whole=True)
        seg.pending = ""
        return self._send(seg, out)

    def _send(self, seg: _Segment, text: str) -> str:
        if text:
            seg.sent.append(text)
            seg.tail = (seg.tail + text)[-self.holdback :] if self.holdback else ""
        return text

    async def _scan(
        self, seg: _Segment, sent: str, final: bool = False, whole: bool = False
    ) -> str:
        """Scan ``sent + pending``; what becomes of ``pending``. Raises on a block.
        ``whole``: the text goes out at once (a tool call's name), not partial."""
        text = sent + seg.pending
        result: ScanResult = await self.scanner.scan(text, partial=not (final or whole))
        findings = list(result.findings)
        blocked = result.blocked or not result.text.startswith(sent)
        if blocked and not result.blocked:
            findings.append(dict(_REACHES_SENT))
        new = [f for f in findings if (f["scanner"], f["action"], f["reason"]) not in seg.reported]
        seg.reported.update((f["scanner"], f["action"], f["reason"]) for f in new)
        if new:
            await self.scanner.report(_strongest(new), new)
        if blocked:
            raise self.scanner.blocked(findings, _FINAL_ONLY if final and seg.sent else "")
        return result.text[len(sent) :]
