"""Keep-alive comments for slow streams.

Once a streamed response has started, each time nothing arrived for ``keepalive_seconds``
(``[plugins.openai_compat]``, default 15) an SSE comment ``: keep-alive`` goes out, so
that proxies with an idle timeout keep a slow stream (a long pipeline step) open; SSE
clients, the openai SDK included, ignore comments.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from host.api import with_ticks
from plugins.openai_compat.plugin_settings import bounded

KEEPALIVE = b": keep-alive\n\n"
SETTING = bounded("keepalive_seconds", 15.0, 0.1, 3600, "a number of seconds", float)

T = TypeVar("T")


def with_keepalive(stream: AsyncIterator[T], every: float) -> AsyncGenerator[T | None, None]:
    """The items of ``stream``, and None each time none came for ``every`` seconds (time
    for a keep-alive): :func:`host.api.with_ticks`."""
    return with_ticks(stream, lambda: every)
