"""Chat-completion chunks -> the typed Responses stream events, in order, each with an
increasing ``sequence_number``."""

from __future__ import annotations

from typing import Any

from plugins.openai_compat.responses_translate import (
    function_call_item,
    message_item,
    new_id,
    output_text_part,
)


class ResponsesStream:
    def __init__(self) -> None:
        self.sequence = 0
        self._done: list[tuple[int, dict[str, Any]]] = []  # (output index, finished item)
        self._text: dict[str, Any] | None = None  # {"id", "index", "text"}
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
            content = delta.get("content")
            if content:
                events += self._text_delta(content)
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, content: str) -> list[dict[str, Any]]:
        events = []
        if self._text is None:
            item_id = new_id("msg")
            self._text = {"id": item_id, "index": self._take_index(), "text": ""}
            events.append(
                self.event(
                    "response.output_item.added",
                    output_index=self._text["index"],
                    item=message_item(item_id, "", status="in_progress"),
                )
            )
            events.append(
                self.event(
                    "response.content_part.added",
                    item_id=item_id,
                    output_index=self._text["index"],
                    content_index=0,
                    part=output_text_part(""),
                )
            )
        self._text["text"] += content
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=self._text["id"],
                output_index=self._text["index"],
                content_index=0,
                delta=content,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = int(call.get("index", 0))
        fn = call.get("function") or {}
        open_call = self._calls.get(index)
        if open_call is None:
            events += self._close_text()
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

    def _close_text(self, status: str = "completed") -> list[dict[str, Any]]:
        if self._text is None:
            return []
        t, self._text = self._text, None
        part = output_text_part(t["text"])
        item = message_item(t["id"], t["text"], status)
        self._done.append((t["index"], item))
        return [
            self.event(
                "response.output_text.done",
                item_id=t["id"],
                output_index=t["index"],
                content_index=0,
                text=t["text"],
                logprobs=[],
            ),
            self.event(
                "response.content_part.done",
                item_id=t["id"],
                output_index=t["index"],
                content_index=0,
                part=part,
            ),
            self.event("response.output_item.done", output_index=t["index"], item=item),
        ]

    def close(self, cut_off: str | None = None) -> list[dict[str, Any]]:
        """Finish every open item; the caller then sends the terminal event. Items end
        ``completed``, except: ``cut_off="last"`` (the token limit was hit) leaves the
        last one ``incomplete``, ``cut_off="open"`` (the stream failed) every open one."""
        open_indexes = [c["index"] for c in self._calls.values()]
        if self._text is not None:
            open_indexes.append(self._text["index"])
        last = max(open_indexes, default=-1)

        def status(index: int) -> str:
            cut = cut_off == "open" or (cut_off == "last" and index == last)
            return "incomplete" if cut else "completed"

        events = self._close_text(status(self._text["index"])) if self._text else []
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
