"""Chat-completion chunks -> the typed Responses stream events, in order, each with an
increasing ``sequence_number``.

An assistant message's content parts follow the deltas: ``delta.content`` is an
``output_text`` part (``response.output_text.delta`` / ``.done``), ``delta.refusal`` a
``refusal`` part (``response.refusal.delta`` / ``.done``); each part between its
``response.content_part.added`` and ``.done``. A message that turns from text to a
refusal (or back) closes the open part and opens the next one, in arrival order: a
delta's fields are read in their order (the safety scan, ``safety_stream.py``, puts the
held-back end of an ended part before the start of the next)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plugins.openai_compat.responses.translate import (
    function_call_item,
    message_item,
    new_id,
    output_text_part,
    refusal_part,
)

# A delta's text fields -> the content part each streams into.
_PART_OF = {"content": "output_text", "refusal": "refusal"}


def _part(kind: str, text: str) -> dict[str, Any]:
    return output_text_part(text) if kind == "output_text" else refusal_part(text)


def _done_fields(kind: str, text: str) -> dict[str, Any]:
    """The fields a part's ``...done`` event carries besides its place."""
    return {"text": text, "logprobs": []} if kind == "output_text" else {"refusal": text}


@dataclass
class _Message:
    """The open message item: its closed parts, and the open one (``kind`` None when
    none is open)."""

    id: str
    index: int
    parts: list[dict[str, Any]] = field(default_factory=list)
    kind: str | None = None
    text: str = ""

    def place(self) -> dict[str, Any]:
        """Where the open part is: its item, output index and content index."""
        return {"item_id": self.id, "output_index": self.index, "content_index": len(self.parts)}


class ResponsesStream:
    def __init__(self) -> None:
        self.sequence = 0
        self._done: list[tuple[int, dict[str, Any]]] = []  # (output index, finished item)
        self._message: _Message | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool index -> open call
        self._next_index = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": type_, "sequence_number": self.sequence, **fields}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            # Field by field in the delta's order, which is arrival order: a delta of the
            # safety scan can carry the held-back end of one part before the next part.
            for name, value in delta.items():
                if name in _PART_OF and isinstance(value, str) and value:
                    events += self._part_delta(_PART_OF[name], value)
                elif name == "tool_calls":
                    for call in value or []:
                        events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _part_delta(self, kind: str, piece: str) -> list[dict[str, Any]]:
        events = []
        if self._message is None:
            self._message = _Message(new_id("msg"), self._take_index())
            events.append(
                self.event(
                    "response.output_item.added",
                    output_index=self._message.index,
                    item=message_item(self._message.id, [], status="in_progress"),
                )
            )
        m = self._message
        if m.kind != kind:
            events += self._close_part()
            m.kind, m.text = kind, ""
            events.append(
                self.event("response.content_part.added", **m.place(), part=_part(kind, ""))
            )
        m.text += piece
        logprobs: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        events.append(self.event(f"response.{kind}.delta", **m.place(), delta=piece, **logprobs))
        return events

    def _close_part(self) -> list[dict[str, Any]]:
        m = self._message
        if m is None or m.kind is None:
            return []
        kind, text, place = m.kind, m.text, m.place()
        part = _part(kind, text)
        m.parts.append(part)
        m.kind, m.text = None, ""
        return [
            self.event(f"response.{kind}.done", **place, **_done_fields(kind, text)),
            self.event("response.content_part.done", **place, part=part),
        ]

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = int(call.get("index", 0))
        fn = call.get("function") or {}
        open_call = self._calls.get(index)
        if open_call is None:
            events += self._close_message()
            open_call = {
                "id": new_id("fc"),
                "index": self._take_index(),
                "call_id": call.get("id") or new_id("call"),
                "name": fn.get("name") or "",
                "arguments": "",
            }
            self._calls[index] = open_call
            events.append(
                self.event(
                    "response.output_item.added",
                    output_index=open_call["index"],
                    item=function_call_item(
                        open_call["id"],
                        open_call["call_id"],
                        open_call["name"],
                        "",
                        status="in_progress",
                    ),
                )
            )
        elif fn.get("name"):
            open_call["name"] += fn["name"]
        piece = fn.get("arguments")
        if piece:
            open_call["arguments"] += piece
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=open_call["id"],
                    output_index=open_call["index"],
                    delta=piece,
                )
            )
        return events

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def _close_message(self, status: str = "completed") -> list[dict[str, Any]]:
        if self._message is None:
            return []
        events = self._close_part()
        m, self._message = self._message, None
        item = message_item(m.id, m.parts, status)
        self._done.append((m.index, item))
        events.append(self.event("response.output_item.done", output_index=m.index, item=item))
        return events

    def close(self, cut_off: str | None = None) -> list[dict[str, Any]]:
        """Finish every open item; the caller then sends the terminal event. Items end
        ``completed``, except: ``cut_off="last"`` (the token limit was hit) leaves the
        last one ``incomplete``, ``cut_off="open"`` (the stream failed) every open one."""
        open_indexes = [c["index"] for c in self._calls.values()]
        if self._message is not None:
            open_indexes.append(self._message.index)
        last = max(open_indexes, default=-1)

        def status(index: int) -> str:
            cut = cut_off == "open" or (cut_off == "last" and index == last)
            return "incomplete" if cut else "completed"

        events = self._close_message(status(self._message.index)) if self._message else []
        for call in sorted(self._calls.values(), key=lambda c: c["index"]):
            item = function_call_item(
                call["id"], call["call_id"], call["name"], call["arguments"], status(call["index"])
            )
            self._done.append((call["index"], item))
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=call["id"],
                    output_index=call["index"],
                    arguments=call["arguments"],
                    name=call["name"],
                )
            )
            events.append(
                self.event("response.output_item.done", output_index=call["index"], item=item)
            )
        self._calls.clear()
        return events

    @property
    def output(self) -> list[dict[str, Any]]:
        return [item for _, item in sorted(self._done, key=lambda pair: pair[0])]
