"""pluggy calls the hooks: its order (load order, ``tryfirst``, ``trylast``), its wrappers,
one answer for ``gateway_actor_from_request``, and each failure or registration still
attributed to its plugin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from types import SimpleNamespace
from typing import Any

import pytest
from quart import Quart

from host.api import PluginError, Principal, context, hookimpl
from host.app import create_app
from tests.conftest import ADMIN, running_app


def plugin(hook: str, fn: Callable[..., Any], **options: Any) -> SimpleNamespace:
    """A plugin implementing ``hook`` with ``fn``, marked with pluggy ``options`` (the mark
    is set on the function: give each plugin a function of its own)."""
    return SimpleNamespace(**{hook: hookimpl(**options)(fn)})


def recorder(log: list[str], name: str) -> Callable[[Quart], Any]:
    async def startup(app: Quart) -> None:
        await asyncio.sleep(0)
        log.append(name)

    return startup


async def test_gateway_startup_runs_in_load_order_with_tryfirst_first_and_trylast_last(
    make_settings,
):
    log: list[str] = []
    plugins = [
        ("late", plugin("gateway_startup", recorder(log, "late"), trylast=True)),
        ("plain", plugin("gateway_startup", recorder(log, "plain"))),
        ("early", plugin("gateway_startup", recorder(log, "early"), tryfirst=True)),
        ("second", plugin("gateway_startup", recorder(log, "second"))),
    ]
    async with running_app(make_settings(), extra_plugins=plugins):
        pass
    # Without the marks they would run as loaded: late, plain, early, second.
    assert log == ["early", "plain", "second", "late"]


async def test_a_gateway_startup_wrapper_runs_around_the_other_implementations(make_settings):
    log: list[str] = []

    def around(app: Quart) -> Generator[None, list[Any], list[Any]]:
        log.append("before")
        results = yield
        log.append(f"after {[r for r in results if isinstance(r, str)]}")
        return results

    def answer(name: str) -> Callable[[Quart], str]:
        def startup(app: Quart) -> str:
            log.append(name)
            return name

        return startup

    plugins = [
        ("first", plugin("gateway_startup", answer("first"))),
        ("wrapper", plugin("gateway_startup", around, wrapper=True)),
        ("second", plugin("gateway_startup", answer("second"))),
    ]
    app = create_app(make_settings(), extra_plugins=plugins, load_entrypoints=False)
    async with app.test_app():
        pass
    assert log == ["before", "first", "second", "after ['first', 'second']"]


async def test_a_gateway_status_wrapper_sees_every_section_and_cannot_hide_one(make_settings):
    seen: list[int] = []

    def count(app: Quart) -> Generator[None, list[Any], list[Any]]:
        results = yield
        seen.append(len(results))
        return []  # a wrapper observes: each plugin's section is still its own

    plugins = [
        ("counter", plugin("gateway_status", count, wrapper=True)),
        ("queue", plugin("gateway_status", lambda: {"depth": 3})),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (_, client):
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
    assert status["plugin_status"]["queue"] == {"depth": 3}
    assert seen and seen[0] >= 2  # the pipelines plugin's section and ours


async def test_gateway_actor_from_request_takes_the_first_answer_in_pluggy_order(make_settings):
    asked: list[str] = []

    def scheme(name: str) -> Callable[..., Any]:
        async def actor(request: Any) -> Principal | None:
            asked.append(name)
            if request.headers.get("X-Robot") is None:
                return None
            return Principal(name, "robot", frozenset())

        return actor

    plugins = [
        ("plain", plugin("gateway_actor_from_request", scheme("plain"))),
        ("eager", plugin("gateway_actor_from_request", scheme("eager"), tryfirst=True)),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (_, client):
        status = await (await client.get("/gateway/status", headers={"X-Robot": "1"})).get_json()
        assert status["auth"]["principal"]["name"] == "eager"
        assert asked == ["eager"]  # the later coroutine is never awaited
        asked.clear()
        abstained = await client.get("/gateway/status", headers=ADMIN)
        assert (await abstained.get_json())["auth"]["principal"]["name"] == "admin"
        assert asked == ["eager", "plain"]


async def test_a_failing_gateway_startup_is_noted_with_its_plugin(make_settings):
    def broken(app: Quart) -> None:
        raise RuntimeError("cannot reach the licence server")

    plugins = [("licensing", plugin("gateway_startup", broken))]
    app = create_app(make_settings(), extra_plugins=plugins, load_entrypoints=False)
    failure = None
    with pytest.raises(Exception, match="licence server"):
        try:
            async with app.test_app():
                pass
        except Exception as exc:
            failure = exc
            raise
    chain = [failure, failure.__cause__, failure.__context__] if failure else []
    notes = [n for exc in chain if exc is not None for n in getattr(exc, "__notes__", [])]
    assert "raised by plugin 'licensing' in gateway_startup" in notes


async def test_gateway_validate_config_failures_stay_with_their_plugin_in_pluggy_order(
    make_settings,
):
    def broken(settings: Any) -> list[str]:
        raise ValueError("cannot read the weather section")

    plugins = [
        ("weather", plugin("gateway_validate_config", broken)),
        ("tides", plugin("gateway_validate_config", lambda: ["tides.port: unknown"])),
        ("first", plugin("gateway_validate_config", lambda: ["first: wrong"], tryfirst=True)),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (_, client):
        response = await client.post("/gateway/reload", headers=ADMIN)
        assert response.status_code == 400
        message = (await response.get_json())["error"]["message"]
    assert message.index("first: wrong") < message.index("plugin 'weather' failed")
    assert message.index("plugin 'weather' failed") < message.index("tides.port: unknown")
    assert "cannot read the weather section" in message


def test_register_from_a_tryfirst_implementation_is_still_its_plugins(make_settings):
    def gate() -> Callable[[Any], None]:
        return lambda register: register("allow_weather_write", "write the weather")

    plugins = [
        ("weather", plugin("gateway_register_policy_gates", gate())),
        ("weather2", plugin("gateway_register_policy_gates", gate(), tryfirst=True)),
    ]
    with pytest.raises(PluginError) as err:
        create_app(make_settings(), extra_plugins=plugins, load_entrypoints=False)
    # weather2 ran first, so weather is the second to register the gate.
    assert "registered by both plugin 'weather2' and plugin 'weather'" in str(err.value)


async def test_a_hook_called_inside_another_hook_keeps_both_attributions(make_settings):
    async def startup(app: Quart) -> None:
        # A plugin's hook calls a hook in turn: each call reports its own plugins.
        found = await context(app).plugins.call_async("gateway_status", app=app)
        await context(app).store.set_value("nested", ",".join(p for p, _ in found))

    plugins = [
        ("caller", plugin("gateway_startup", startup)),
        ("reporter", plugin("gateway_status", lambda: {"ok": True})),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (app, _client):
        nested = await context(app).store.get_value("nested")
    assert nested is not None
    assert nested.split(",")[-1] == "reporter"
    assert "pipelines" in nested.split(",")
