"""Response shapes, for the OpenAPI document (the bodies are OpenAI's, passed through)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelObject(_Open):
    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelList(_Open):
    object: str = "list"
    data: list[ModelObject]


class _CompletionFields(_Open):
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ChatCompletionResponse(_CompletionFields):
    """A ``chat.completion`` object; with ``stream: true`` the route answers
    ``text/event-stream`` of ``chat.completion.chunk`` objects ending ``data: [DONE]``."""


class CompletionResponse(_CompletionFields):
    """A ``text_completion`` object (or, streaming, a series of them and ``[DONE]``)."""


class ResponseObject(_Open):
    """A ``response`` object (OpenResponses ResponseResource): every field present, null
    where it does not apply."""

    id: str
    object: str
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]


class DeletedResponse(_Open):
    id: str
    object: str
    deleted: bool
