"""The floor for ``openai_proxy.py``: the least a Quart-on-Hypercorn proxy can do.

One route, ``POST /v1/chat/completions``, that forwards the request body as it came to the
upstream through the gateway's own upstream client (``providers/client.py``) and relays
the answer: non-streamed as one body, streamed as the upstream's bytes as they arrive.
No auth, no validation, no model catalog, no metrics, no safety, no SSE parsing: what
is left is what Quart, Hypercorn and one pooled upstream connection cost. The difference
between this row and the gateway's is what the gateway's own code adds; the difference
between this row and the upstream called directly is the stack's floor.

With ``--checks-token-env VAR`` it is the ``floor + checks`` row: the least a proxy that
checks what it forwards can do on this stack. It also looks the bearer token up by its
SHA-256 (401 without it), validates the body with the gateway's own
``ChatCompletionRequest`` (pydantic, from the raw bytes), encodes the validated body
again for the upstream, and parses the non-streamed answer to put the client's model
name in it (a stream is relayed as bytes, as in the floor). No safety scan, access
list, budget, routing, metrics, usage, audit or plugin hooks: what it costs over the
floor is what any checking gateway pays before its own features.

Run: ``python bench/bare_proxy_app.py --bind 127.0.0.1:8798 --upstream http://127.0.0.1:8001/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, request

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bare_app import serve_app

from plugins.openai_compat.chat.bodies import ChatCompletionRequest
from plugins.openai_compat.providers.client import UpstreamPool


def make_app(upstream: str, checks: str | None = None) -> Quart:
    """``checks``: a bearer token; with it the proxy also does the least a gateway that
    checks what it forwards must do (see the module's docstring)."""
    app = Quart("bare_proxy_bench")
    url = upstream.rstrip("/") + "/chat/completions"
    pools: list[UpstreamPool] = []
    headers = {"Content-Type": "application/json"}
    tokens = {hashlib.sha256(checks.encode()).hexdigest(): "bench"} if checks else None

    @app.before_serving
    async def _pool() -> None:
        pools.append(UpstreamPool(connect_timeout=5.0, read_timeout=60.0))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def checked(body: bytes) -> tuple[bytes, bool, str] | Response:
        """The body to forward and whether it streams, or the refusal: the token looked
        up by its hash, the body validated with the gateway's own request model and
        encoded again for the upstream."""
        assert tokens is not None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or hashlib.sha256(token.encode()).hexdigest() not in tokens:
            return _refuse(401, "unauthorized", "missing or invalid bearer token")
        try:
            parsed = ChatCompletionRequest.model_validate_json(body)
        except ValidationError as exc:
            return _refuse(400, "invalid_request_body", str(exc.errors()[0]["msg"]))
        sent = parsed.model_dump(exclude_none=True, by_alias=True, exclude={"n", "metadata"})
        return json.dumps(sent, separators=(",", ":")).encode(), parsed.stream, parsed.model

    @app.post("/v1/chat/completions")
    async def chat() -> Any:
        body = await request.get_data()
        stream = b'"stream":true' in body.replace(b" ", b"")
        model = None
        if tokens is not None:
            found = await checked(body)
            if isinstance(found, Response):
                return found
            body, stream, model = found
        upstream_response = await pools[0].request("POST", url, headers, body)
        if not stream:
            content = await upstream_response.read()
            if model is not None:  # as a gateway names the model it answered for
                answer = json.loads(content)
                answer["model"] = model
                content = json.dumps(answer, separators=(",", ":")).encode()
            return Response(
                content, status=upstream_response.status, content_type="application/json"
            )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for part in upstream_response.aiter_bytes():
                    yield part
            finally:
                await upstream_response.aclose()

        response = Response(relay(), content_type="text/event-stream")
        response.timeout = None
        return response

    return app


def _refuse(status: int, code: str, message: str) -> Response:
    error = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    return Response(json.dumps(error), status=status, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="the upstream's base URL (…/v1)")
    parser.add_argument(
        "--checks-token-env",
        help="the environment variable holding a bearer token: with it, authenticate and "
        "validate (the 'floor + checks' row)",
    )
    args = parser.parse_args()
    token = os.environ[args.checks_token_env] if args.checks_token_env else None
    asyncio.run(serve_app(make_app(args.upstream, token), args.bind))


if __name__ == "__main__":
    main()
