"""What the sessions plugin's tests share: principals with and without the session gates,
and a running app on the test's store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import bearer, running_app

WRITE_GATES = ["allow_session_write", "allow_memory_write"]
TOKENS: dict[str, dict[str, Any]] = {
    "alice": {"token": "test-alice-sessions-0123456789", "gates": WRITE_GATES},
    "bob": {"token": "test-bob-sessions-0123456789", "gates": WRITE_GATES},
    "auditor": {"token": "test-auditor-sessions-0123456789", "gates": ["allow_session_read_all"]},
    "operator": {
        "token": "test-operator-sessions-0123456789",
        "gates": [*WRITE_GATES, "allow_session_read_all", "allow_session_act_all"],
    },
}
ALICE = bearer(str(TOKENS["alice"]["token"]))
BOB = bearer(str(TOKENS["bob"]["token"]))
AUDITOR = bearer(str(TOKENS["auditor"]["token"]))
OPERATOR = bearer(str(TOKENS["operator"]["token"]))


def settings_for(make_settings: Callable[..., Any], **sessions: Any) -> Any:
    plugins: dict[str, Any] = {"sessions": sessions} if sessions else {}
    return make_settings(auth={"tokens": TOKENS}, plugins=plugins)


@pytest.fixture
async def app_client(make_settings: Callable[..., Any]) -> AsyncIterator[tuple[Any, Any]]:
    async with running_app(settings_for(make_settings)) as pair:
        yield pair


async def append(
    client: Any, key: str, content: str, headers: dict[str, str] = ALICE, **extra: Any
) -> Any:
    body = {"role": extra.pop("role", "user"), "content": content, **extra}
    return await client.post(f"/gateway/sessions/{key}/append", json=body, headers=headers)


async def put_entry(
    client: Any, key: str, entry_id: str, headers: dict[str, str] = ALICE, **fields: Any
) -> Any:
    body = {"summary": fields.pop("summary", f"entry {entry_id}"), **fields}
    return await client.put(f"/gateway/memory/{key}/{entry_id}", json=body, headers=headers)
