"""Typed services between plugins: one plugin provides an object under a type, another
asks for it by that type; a missing one is a 503 naming the plugin that provides it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart import Blueprint, Quart

from host.api import (
    context,
    has_service,
    provide,
    public,
    service,
    withdraw,
)
from host.app import create_app
from plugins.openai_compat.contract import ModelCatalog
from plugins.pipelines.contract import PipelinesAPI
from tests.conftest import READER, running_app
from tests.plugins_for_tests.kit import Plugin


class Clock:
    """A service type, as a plugin's contract module would hold it."""

    def __init__(self, now: int) -> None:
        self.now = now


def _clock_plugin(now: int = 42) -> Plugin:
    async def startup(app: Quart) -> None:
        provide(Clock, Clock(now), app=app)

    return Plugin(gateway_startup=startup, gateway_shutdown=lambda app: withdraw(Clock, app=app))


def _asking_plugin(kind: type[Any]) -> Plugin:
    bp = Blueprint("asker", __name__)

    @bp.get("/ask")
    @public
    async def ask() -> dict[str, Any]:
        found = service(kind)  # typed: a Clock, a PipelinesAPI
        return {"has": has_service(kind), "type": type(found).__name__}

    @bp.get("/has")
    @public
    async def has() -> dict[str, bool]:
        return {"has": has_service(kind)}

    return Plugin(gateway_register_blueprints=lambda register: register(bp))


async def test_a_service_provided_at_startup_reaches_another_plugin(make_settings):
    plugins = [("clock", _clock_plugin()), ("asker", _asking_plugin(Clock))]
    async with running_app(make_settings(), extra_plugins=plugins) as (app, client):
        response = await client.get("/ask", headers=READER)
        assert await response.get_json() == {"has": True, "type": "Clock"}
        assert context(app).services.providers()[f"{__name__}.Clock"] == "clock"
        assert service(Clock, app=app).now == 42
    # Withdrawn at shutdown.
    assert not context(app).services.has(Clock)


async def test_a_service_of_a_disabled_plugin_is_a_503_naming_that_plugin(make_settings):
    settings = make_settings(plugins={"pipelines": {"enabled": False}})
    plugins = [("asker", _asking_plugin(PipelinesAPI))]
    async with running_app(settings, extra_plugins=plugins) as (_app, client):
        assert await (await client.get("/has")).get_json() == {"has": False}
        response = await client.get("/ask")
        assert response.status_code == 503
        error = (await response.get_json())["error"]
        assert error["code"] == "service_unavailable"
        assert error["message"] == (
            "the plugins.pipelines.api.PipelinesAPI service is provided by plugin "
            "'pipelines', which is not loaded in this gateway ([plugins.pipelines] "
            "enabled = false, or load_plugins)"
        )


async def test_the_built_in_plugins_provide_their_services_while_they_run(make_settings):
    async with running_app(make_settings()) as (app, _client):
        assert context(app).services.providers() == {
            "plugins.pipelines.api.PipelinesAPI": "pipelines",
            "plugins.openai_compat.model_catalog.ModelCatalog": "openai_compat",
            "plugins.sessions.contract.SessionsService": "sessions",
            "plugins.audit.contract.AuditLog": "audit",
            "plugins.ui_telemetry.contract.UiTelemetry": "ui_telemetry",
            "plugins.channels.contract.ChannelsAPI": "channels",
            "plugins.pipelines.approval_queue.ApprovalQueue": "pipelines",
            "plugins.agents.service.AgentSessions": "agents",
            "plugins.deploy.contract.AgentState": "deploy",
            "plugins.tools.approvals.ToolApprovals": "tools",
            "plugins.tools.service.ToolsAPI": "tools",
            "plugins.jobs.contract.JobsAPI": "jobs",
            "plugins.safety.contract.SafetyAPI": "safety",
            "plugins.openai_compat.usage_api.UsageAPI": "openai_compat",
            "plugins.cortex.contract.CortexAPI": "cortex",
            "plugins.training.contract.TrainingAPI": "training",
        }
        models = service(ModelCatalog, app=app)
        answer = await models.chat("echo", {"messages": [{"role": "user", "content": "hi"}]})
        assert answer["choices"][0]["message"]["content"] == "echo: hi"
    # The pipelines plugin withdraws its service when it stops; asking names why.
    services = context(app).services
    assert not services.has(PipelinesAPI)
    assert services.missing(PipelinesAPI) == (
        "the plugins.pipelines.api.PipelinesAPI service of plugin 'pipelines' is not "
        "available: the plugin provides it once started and withdraws it when it stops"
    )


async def test_two_plugins_providing_one_service_fail_startup_naming_both(make_settings):
    plugins = [("clock", _clock_plugin(1)), ("other_clock", _clock_plugin(2))]
    app = create_app(make_settings(), extra_plugins=plugins, load_entrypoints=False)
    # The test app reports a failed lifespan start-up with the plugin error's message.
    message = f"the {__name__}.Clock service is provided by both plugin 'clock' and plugin"
    with pytest.raises(Exception, match=re.escape(message + " 'other_clock'")):
        async with app.test_app():
            pass


async def test_a_service_is_checked_against_its_type(make_settings):
    async def startup(app: Quart) -> None:
        provide(Clock, "not a clock", app=app)

    app = create_app(
        make_settings(),
        extra_plugins=[("liar", Plugin(gateway_startup=startup))],
        load_entrypoints=False,
    )
    with pytest.raises(
        Exception, match=re.escape("'not a clock' is not a tests.test_services.Clock")
    ):
        async with app.test_app():
            pass
