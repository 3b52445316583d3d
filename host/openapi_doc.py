"""Render the OpenAPI document of an app built from built-in plugins and default settings."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from host.app import create_app
from host.settings import build_settings


async def openapi_dict() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = build_settings({"state_dir": str(Path(tmp))})
        app = create_app(settings, load_entrypoints=False)
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/openapi.json")
            data: dict[str, Any] = await response.get_json()
    return data


def render_openapi(fmt: str = "yaml") -> str:
    data = asyncio.run(openapi_dict())
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
