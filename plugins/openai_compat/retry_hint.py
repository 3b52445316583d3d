"""``x-should-retry`` on the errors of the OpenAI surfaces.

The official openai SDKs retry an answer of 408, 409, 429 or 5xx (twice by default, with
back-off) unless it says ``x-should-retry: false``; ``true`` makes them retry whatever
the status. Without a hint, an upstream that stalls past its read timeout (504) would
cost three upstream calls and three timeouts, and an answer over the size limit would
be fetched three times. So every error says whether a retry can help:

- ``false``: the same request would fail the same way. Bad input and refusals (4xx,
  409 included: the gateway's 409s are a pipeline run's state, and a retry would start
  another run), a stalled upstream, an answer too large or not JSON, a configuration
  problem, a failed pipeline run, a route not served (501).
- ``true``: a rate limit (429, with the upstream's ``Retry-After`` when it gave one), an
  upstream that could not be reached or broke the connection, and an upstream's own
  5xx or 408.
- no hint (the SDK's own rule): anything else, such as a 503 while the gateway drains.
"""

from __future__ import annotations

from typing import Any

from quart import Response

PERMANENT = frozenset(
    {
        "upstream_timeout",
        "upstream_response_too_large",
        "upstream_sse_line_too_long",
        "upstream_invalid_response",
        "model_misconfigured",
        "pipeline_run_failed",
    }
)
TRANSIENT = frozenset(
    {"upstream_unavailable", "upstream_stream_broken", "upstream_stream_incomplete"}
)


def should_retry(status: int, error: dict[str, Any]) -> bool | None:
    """Whether a retry of a request answered with ``status`` and ``error`` (the
    envelope's ``error``) can succeed; None: no opinion."""
    code = error.get("code")
    if code in PERMANENT:
        return False
    if code in TRANSIENT or status == 429:
        return True
    if code == "upstream_error":
        upstream = error.get("upstream_status")
        return isinstance(upstream, int) and (upstream >= 500 or upstream == 408)
    if (400 <= status < 500 and status != 408) or status == 501:
        return False
    return None


async def with_retry_hint(response: Response) -> Response:
    """Runs after every handler of the OpenAI blueprints: an error envelope gets its
    ``x-should-retry``, whoever raised the error (a request's own checks, the auth
    guard, a provider)."""
    if response.status_code < 400 or "x-should-retry" in response.headers:
        return response
    if not response.is_json:
        return response
    body = await response.get_json()
    error = body.get("error") if isinstance(body, dict) else None
    hint = should_retry(response.status_code, error if isinstance(error, dict) else {})
    if hint is not None:
        response.headers["x-should-retry"] = "true" if hint else "false"
    return response
