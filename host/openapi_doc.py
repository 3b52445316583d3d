"""Render the OpenAPI document of an app built from built-in plugins and default settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from host.app import create_app
from host.settings import Settings, build_settings


@contextlib.contextmanager
def _without_gateway_env() -> Iterator[None]:
    """The committed document describes the defaults, whatever ``GATEWAY_*`` says here."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith("GATEWAY_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def default_settings(state_dir: Path) -> Settings:
    with _without_gateway_env():
        return build_settings({"state_dir": str(state_dir)})


async def openapi_dict() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(default_settings(Path(tmp)), load_entrypoints=False)
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/openapi.json")
            data: dict[str, Any] = await response.get_json()
    return data


def render_openapi(fmt: str = "yaml") -> str:
    data = asyncio.run(openapi_dict())
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=True, allow_unicode=True, width=100))
