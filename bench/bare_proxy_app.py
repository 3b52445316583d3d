"""The floor for ``openai_proxy.py``: the least a Quart-on-Hypercorn proxy can do.

One route, ``POST /v1/chat/completions``, that forwards the request body as it came to the
upstream through the gateway's own upstream client (``providers/client.py``) and relays
the answer: non-streamed as one body, streamed as the upstream's bytes as they arrive.
No auth, no validation, no model catalog, no metrics, no safety, no SSE parsing: what
is left is what Quart, Hypercorn and one pooled upstream connection cost. The difference
between this row and the gateway's is what the gateway's own code adds; the difference
between this row and the upstream called directly is the stack's floor.

Run: ``python bench/bare_proxy_app.py --bind 127.0.0.1:8798 --upstream http://127.0.0.1:8001/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from quart import Quart, Response, request

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bare_app import serve_app

from plugins.openai_compat.providers.client import UpstreamPool


def make_app(upstream: str) -> Quart:
    app = Quart("bare_proxy_bench")
    url = upstream.rstrip("/") + "/chat/completions"
    pools: list[UpstreamPool] = []
    headers = {"Content-Type": "application/json"}

    @app.before_serving
    async def _pool() -> None:
        pools.append(UpstreamPool(connect_timeout=5.0, read_timeout=60.0))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat() -> Any:
        body = await request.get_data()
        upstream_response = await pools[0].request("POST", url, headers, body)
        if b'"stream":true' not in body.replace(b" ", b""):
            content = await upstream_response.read()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="the upstream's base URL (…/v1)")
    args = parser.parse_args()
    asyncio.run(serve_app(make_app(args.upstream), args.bind))


if __name__ == "__main__":
    main()
