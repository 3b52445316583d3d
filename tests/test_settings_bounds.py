"""Every number in the configuration has a floor and a ceiling, is refused past either
with an error naming the key, and is documented with both in configuration.md as
"(from X to Y)". Finding 3 of issue 9: ``events.poll_seconds = 1e-300``, written by a
token with only ``allow_config_write``, made one event stream burn a core.

The walk covers the host's settings models, the models' ``[models.<name>]`` table and
the built-in plugins' declared numbers, so a number added later without bounds (or
without its documented bounds) fails here."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from host.settings import Settings
from plugins.acp_gateway.config import AcpGatewayConfig
from plugins.agents.config import AgentConfig
from plugins.agents.config import PluginConfig as AgentsPluginConfig
from plugins.coding_agent_bridge.config import BridgeConfig
from plugins.openai_compat import SETTINGS as OPENAI_SETTINGS
from plugins.openai_compat.model_catalog import ModelSettings
from plugins.pipelines.config import BOUNDS as PIPELINES_BOUNDS
from plugins.pipelines.config import PipelinesConfig
from tests.conftest import ADMIN, running_app

CONFIG_DOC = Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md"
CFG_TOKEN = "cfg-only-token-0123456789"


def numeric_fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo]]:
    """``(dotted key, field)`` for every int or float field of ``model`` and the models
    it holds (``dict[str, Model]`` entries are ``<name>``)."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue  # where the settings came from, not part of the file format
        key = f"{prefix}{name}"
        for member in _members(field.annotation):
            if member in (int, float):
                yield key, field
            elif isinstance(member, type) and issubclass(member, BaseModel):
                yield from numeric_fields(member, f"{key}.")
            elif typing.get_origin(member) is dict:
                value = typing.get_args(member)[1]
                if isinstance(value, type) and issubclass(value, BaseModel):
                    yield from numeric_fields(value, f"{key}.<name>.")


def _members(annotation: Any) -> tuple[Any, ...]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        return tuple(a for a in args if a is not type(None))
    return (annotation,)


def bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = item.ge if isinstance(item, annotated_types.Ge) else item.gt
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = item.le if isinstance(item, annotated_types.Le) else item.lt
    return low, high  # type: ignore[return-value]


PYDANTIC_FIELDS = [
    *numeric_fields(Settings, ""),
    *numeric_fields(ModelSettings, "models.<name>."),
    *numeric_fields(AgentConfig, "agents.<id>."),
    *numeric_fields(AgentsPluginConfig, "plugins.agents."),
    *numeric_fields(BridgeConfig, "plugins.coding_agent_bridge."),
    *numeric_fields(AcpGatewayConfig, "plugins.acp_gateway."),
]


def documented_bounds() -> dict[str, tuple[float, float]]:
    """Every numeric key of the configuration with its floor and ceiling."""
    out: dict[str, tuple[float, float]] = {}
    for key, field in PYDANTIC_FIELDS:
        low, high = bounds(field)
        assert low is not None and high is not None, key
        out[key] = (low, high)
    for setting in OPENAI_SETTINGS:
        assert setting.bounds is not None, setting.key
        out[f"plugins.openai_compat.{setting.key}"] = setting.bounds
    for key, pair in PIPELINES_BOUNDS.items():
        out[f"plugins.pipelines.{key.replace('*', '<name>')}"] = pair
    return out


def fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@pytest.mark.parametrize(("key", "field"), PYDANTIC_FIELDS, ids=[k for k, _ in PYDANTIC_FIELDS])
def test_every_number_in_the_settings_models_has_a_floor_and_a_ceiling(key, field):
    low, high = bounds(field)
    assert low is not None, f"{key} has no floor (ge/gt)"
    assert high is not None, f"{key} has no ceiling (le/lt)"
    assert low < high
    constrained: Any = Annotated[field.annotation, *field.metadata]  # built at run time
    adapter: TypeAdapter[Any] = TypeAdapter(constrained)
    whole = int in _members(field.annotation) and float not in _members(field.annotation)
    below = low - 1 if whole else (low / 2 if low > 0 else low - 1)
    for outside in (below, high + 1 if whole else high * 2, float("nan"), float("inf")):
        if whole and not float(outside).is_integer():
            continue
        with pytest.raises(ValidationError):
            adapter.validate_python(int(outside) if whole else outside)
    assert adapter.validate_python(low) == low and adapter.validate_python(high) == high


def test_every_number_of_the_built_in_plugins_has_declared_bounds():
    for setting in OPENAI_SETTINGS:
        assert setting.bounds is not None, setting.key
    numbers = {
        name
        for name, kind in typing.get_type_hints(PipelinesConfig).items()
        if kind in (int, float)
    }
    assert numbers <= set(PIPELINES_BOUNDS)


def test_every_bound_is_documented_with_its_key():
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in CONFIG_DOC.read_text().splitlines()
        if line.startswith("| `")
    }
    for key, (low, high) in documented_bounds().items():
        assert key in rows, f"configuration.md has no row for {key}"
        assert f"from {fmt(low)} to {fmt(high)}" in rows[key], (key, rows[key])


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"events": {"poll_seconds": 1e-300}}, "events.poll_seconds"),
        ({"events": {"poll_seconds": 61}}, "events.poll_seconds"),
        ({"events": {"heartbeat_seconds": 1e-300}}, "events.heartbeat_seconds"),
        ({"events": {"heartbeat_seconds": 1e300}}, "events.heartbeat_seconds"),
        ({"events": {"page_limit_max": 10**12}}, "events.page_limit_max"),
    ],
    ids=["poll-tiny", "poll-huge", "heartbeat-tiny", "heartbeat-huge", "page-huge"],
)
async def test_a_config_writer_cannot_patch_an_event_setting_out_of_bounds(
    make_settings, patch, key
):
    token = {"token": CFG_TOKEN, "gates": ["allow_config_write"]}
    settings = make_settings(auth={"tokens": {"cfg": token}})
    async with running_app(settings) as (_app, client):
        refused = await client.patch(
            "/gateway/config", headers={"Authorization": f"Bearer {CFG_TOKEN}"}, json=patch
        )
        assert refused.status_code == 400, await refused.get_data()
        error = (await refused.get_json())["error"]
        assert error["code"] == "config_invalid"
        assert error["message"].startswith(f"invalid configuration: {key}: ")
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["sources"]["overrides_present"] is False
        assert shown["config"]["events"] == {
            "heartbeat_seconds": 15.0,
            "poll_seconds": 1.0,
            "page_limit_max": 1000,
            "max_streams_per_principal": 32,
            "subscriber_queue_max": 1000,
        }


@pytest.mark.parametrize("setting", OPENAI_SETTINGS, ids=lambda s: s.key)
async def test_an_openai_compat_number_out_of_bounds_is_refused_naming_the_key(
    make_settings, setting
):
    assert setting.bounds is not None
    low, high = setting.bounds
    async with running_app(make_settings()) as (_app, client):
        for value in (low - 1, high + 1):
            patch = {"plugins": {"openai_compat": {setting.key: value}}}
            refused = await client.patch("/gateway/config", headers=ADMIN, json=patch)
            assert refused.status_code == 400, (value, await refused.get_data())
            message = (await refused.get_json())["error"]["message"]
            assert f"plugins.openai_compat.{setting.key}: must be " in message
            assert f"from {fmt(low)} to {fmt(high)}" in message
