"""Signing in to the dashboard's pages with the Quart test client, as a browser does: the
login form's nonce cookie and field, then the session cookie the client keeps."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import ADMIN_TOKEN


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" (?:value|content)="([^"]+)"', html)
    assert found, f"no {name} in the page"
    return found.group(1)


async def login_nonce(client: Any) -> str:
    page = await client.get("/ops/login")
    assert page.status_code == 200
    return field((await page.get_data()).decode(), "csrf_token")


async def sign_in(client: Any, **form: str) -> Any:
    """POST the login form (``token=`` or ``user=`` and ``password=``); the response."""
    nonce = await login_nonce(client)
    form = form or {"token": ADMIN_TOKEN}
    return await client.post("/ops/login", form={"csrf_token": nonce, "next": "/dashboard", **form})


async def page_csrf(client: Any, path: str = "/dashboard") -> str:
    page = await client.get(path)
    assert page.status_code == 200, path
    return field((await page.get_data()).decode(), "csrf-token")
