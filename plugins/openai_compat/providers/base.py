"""The provider interface: OpenAI wire format in and out.

A provider takes an OpenAI-shaped request body (``model`` already set to the upstream
model name) and returns OpenAI-shaped objects: a ``chat.completion`` dict, or an async
iterator of ``chat.completion.chunk`` dicts. The gateway's own surfaces (chat,
completions, Responses, the pipelines ``llm`` step) all sit on these two calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from host.api import Secret

# The longest line of an upstream's event stream relayed, by default: one chunk's JSON,
# which a long tool call or a generated image can make megabytes long.
DEFAULT_MAX_SSE_LINE_BYTES = 8 * 1024 * 1024


class ProviderError(Exception):
    """A provider failure, ready for the error envelope. ``upstream_status`` keeps the
    status the upstream answered with, when there was one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        upstream_status: int | None = None,
        type: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.upstream_status = upstream_status
        self.type = type
        self.retry_after = retry_after


@dataclass(frozen=True)
class ModelRoute:
    """One entry of ``[models.<name>]``: what clients call it and where it goes."""

    name: str
    provider: str
    upstream_model: str
    base_url: str | None = None
    api_key: Secret | None = None
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0
    max_retries: int = 2
    description: str = ""
    stream_usage: bool = True
    max_sse_line_bytes: int = DEFAULT_MAX_SSE_LINE_BYTES  # [plugins.openai_compat]
    extra: dict[str, Any] = field(default_factory=dict)


class Provider:
    """Subclass and register through ``gateway_register_providers``."""

    name: str = "provider"
    description: str = ""
    supports_tools: bool = True
    needs_base_url: bool = False  # a model on it must set base_url (checked with the config)

    async def chat(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def chat_stream(self, route: ModelRoute, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    async def completion(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(
            501, "not_implemented", f"provider {self.name!r} does not serve /v1/completions"
        )

    def completion_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        raise ProviderError(
            501, "not_implemented", f"provider {self.name!r} does not serve /v1/completions"
        )

    async def retain(self, routes: Iterable[ModelRoute]) -> None:
        """After a reload: ``routes`` are the models now configured; let go of what only
        other models used (connection pools to an old base_url, say)."""
        return None

    async def aclose(self) -> None:
        return None
