"""Bodies of ACP over streamable HTTP (``/acp``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JsonRpcMessage(BaseModel):
    """One JSON-RPC 2.0 message of ACP (a request, a notification or a response)."""

    model_config = ConfigDict(extra="allow")

    jsonrpc: str = Field("2.0", description='always "2.0"')
    id: int | str | None = Field(None, description="a request's or response's id")
    method: str | None = Field(None, description="a request's or notification's method")
    params: dict[str, Any] | None = None
    result: Any = None
    error: dict[str, Any] | None = None


class AcpAccepted(BaseModel):
    """A message taken: its answer comes on a stream (``GET /acp``)."""

    accepted: bool = True
