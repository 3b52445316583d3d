"""Plugins declare hooks of their own (``gateway_register_hookspecs``), as the pipelines
and openai_compat plugins do: others implement them, registry hooks fill a registry,
mistakes fail start-up naming the plugin, and a hook of a plugin that is not loaded does
not stop the gateway."""

from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from host.api import PluginError, context, hookimpl, registry_hookspec
from host.app import create_app
from host.plugins import PluginHost
from tests.conftest import ADMIN, READER, running_app
from tests.plugins_for_tests import widget_hookspecs
from tests.plugins_for_tests.kit import Plugin

WIDGETS = (("widgets", "tests.plugins_for_tests.widgets"),)


def _gadget() -> Plugin:
    async def clicked(name: str) -> str:
        return f"gadget saw {name}"

    return Plugin(
        gateway_register_widgets=lambda register: register("dial", "a round widget"),
        gateway_widget_clicked=clicked,
    )


async def test_gateway_register_hookspecs_adds_hooks_other_plugins_implement(make_settings):
    plugins = [
        ("widgets", importlib.import_module("tests.plugins_for_tests.widgets")),
        ("gadget", _gadget()),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (app, client):
        listed = await (await client.get("/widgets", headers=READER)).get_json()
        assert listed == {"widgets": {"dial": "gadget"}}
        clicked = await client.post("/widgets/dial/click", headers=READER)
        assert await clicked.get_json() == {"answers": {"gadget": "gadget saw dial"}}
        body = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        assert body["registrations"]["gadget"]["widgets"] == ["dial"]
        gadget = {p["name"]: p for p in body["plugins"]}["gadget"]
        assert gadget["hooks"] == ["gateway_register_widgets", "gateway_widget_clicked"]
        declared = context(app).plugins.declarations["gateway_register_widgets"]
        assert declared.plugin == "widgets"
        assert declared.registry == ("widgets", "widget")


def test_a_plugin_hook_is_checked_against_its_declaration_naming_the_implementer(make_settings):
    def wrong(register: Any, colour: str) -> None:
        register("dial", colour)

    with pytest.raises(PluginError) as err:
        PluginHost(
            make_settings(),
            builtins=WIDGETS,
            extra_plugins=[("gadget", Plugin(gateway_register_widgets=wrong))],
            load_entrypoints=False,
        )
    assert "plugin 'gadget'" in str(err.value)
    assert "colour" in str(err.value)


def test_a_misspelt_plugin_hook_fails_startup_when_every_plugin_is_loaded(make_settings):
    typo = Plugin(gateway_register_widget=lambda register: None)
    with pytest.raises(PluginError, match="plugin 'gadget' implements unknown hook"):
        PluginHost(
            make_settings(),
            builtins=WIDGETS,
            extra_plugins=[("gadget", typo)],
            load_entrypoints=False,
        )


def test_a_hook_declared_twice_fails_startup_naming_both_declarers(make_settings):
    again = Plugin(gateway_register_hookspecs=lambda register: register(widget_hookspecs))
    with pytest.raises(PluginError) as err:
        PluginHost(
            make_settings(),
            builtins=WIDGETS,
            extra_plugins=[("copycat", again)],
            load_entrypoints=False,
        )
    assert str(err.value) == (
        "hook 'gateway_register_widgets' is declared by both plugin 'widgets' and plugin 'copycat'"
    )

    host_hook = SimpleNamespace(gateway_status=widget_hookspecs.gateway_widget_clicked)
    thief = Plugin(gateway_register_hookspecs=lambda register: register(host_hook))
    with pytest.raises(PluginError) as err:
        PluginHost(make_settings(), extra_plugins=[("thief", thief)], load_entrypoints=False)
    assert "hook 'gateway_status' is declared by both the host and plugin 'thief'" in str(err.value)


def test_hookspecs_without_a_declaration_fail_startup_naming_the_plugin(make_settings):
    empty = Plugin(gateway_register_hookspecs=lambda register: register(SimpleNamespace()))
    with pytest.raises(PluginError, match="plugin 'empty' registered hookspecs from"):
        PluginHost(make_settings(), extra_plugins=[("empty", empty)], load_entrypoints=False)


async def test_a_hook_of_a_disabled_plugin_does_not_stop_startup(make_settings, caplog):
    # The pipelines plugin is off: its step-kind hook is declared by no one, so the
    # implementation is left uncalled, with a warning, and the gateway starts.
    called: list[str] = []

    def kinds(register: Any) -> None:
        called.append("step kinds")

    settings = make_settings(plugins={"pipelines": {"enabled": False}})
    plugins = [("steps", Plugin(gateway_register_step_kinds=kinds))]
    with caplog.at_level(logging.WARNING, logger="gateway.plugins"):
        async with running_app(settings, extra_plugins=plugins) as (app, client):
            status = await client.get("/gateway/status", headers=ADMIN)
            assert status.status_code == 200
            with pytest.raises(PluginError, match="no loaded plugin declares the 'step_kinds'"):
                context(app).registry("step_kinds")
    assert called == []
    warning = [r.getMessage() for r in caplog.records if "gateway_register_step_kinds" in r.message]
    assert warning and "plugin steps implements gateway_register_step_kinds" in warning[0]
    assert "pipelines" in warning[0]


def test_optionalhook_silences_the_warning_for_a_hook_of_a_plugin_not_loaded(make_settings, caplog):
    optional = SimpleNamespace(
        gateway_register_widgets=hookimpl(optionalhook=True)(lambda register: None)
    )
    settings = make_settings(plugins={"widgets": {"enabled": False}})
    with caplog.at_level(logging.WARNING, logger="gateway.plugins"):
        host = PluginHost(
            settings,
            builtins=WIDGETS,
            extra_plugins=[("optional", optional)],
            load_entrypoints=False,
        )
    assert "gateway_register_widgets" not in host.declarations
    assert not [r for r in caplog.records if "gateway_register_widgets" in r.getMessage()]


def test_a_registry_declared_by_two_hooks_fails_startup(make_settings):
    def other(register: Any) -> None:
        """Another hook feeding the widgets registry."""

    other.__name__ = "gateway_register_more_widgets"
    specs = SimpleNamespace(
        gateway_register_more_widgets=registry_hookspec("widgets", "widget")(other)
    )
    rival = Plugin(gateway_register_hookspecs=lambda register: register(specs))
    with pytest.raises(PluginError) as err:
        create_app(
            make_settings(),
            extra_plugins=[
                ("widgets", importlib.import_module("tests.plugins_for_tests.widgets")),
                ("rival", rival),
            ],
            load_entrypoints=False,
        )
    assert "registry 'widgets' is declared by both plugin 'widgets'" in str(err.value)
    assert "plugin 'rival'" in str(err.value)


def test_a_marked_implementation_of_no_hook_fails_startup_naming_the_plugin(make_settings):
    odd = SimpleNamespace(status=hookimpl(lambda: None))  # marked, but no gateway_ hook
    with pytest.raises(PluginError, match=r"^plugin 'odd': unknown hook 'status'$"):
        PluginHost(make_settings(), extra_plugins=[("odd", odd)], load_entrypoints=False)
